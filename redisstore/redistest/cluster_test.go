package redistest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// On a cluster with replicas, a replica that lags (its link cut, or its
// replication stalled) misses writes its primary acknowledges; after the
// primary is killed and the replica takes over, the cluster serves the
// slot without them. Both ways are exercised, on two different shards of
// one cluster.
func TestClusterReplicaTakeoverLosesAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cl := redistest.StartClusterWithReplicas(t)
	if len(cl.AllAddrs()) != 6 || len(cl.Addrs()) != 3 {
		t.Fatalf("%d nodes, %d seeds", len(cl.AllAddrs()), len(cl.Addrs()))
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })

	// Slot agrees with the server.
	for _, k := range []string{"a", "{user1000}.following", "foo{}{bar}", "{}x", "jti:0123"} {
		want, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil || int64(redistest.Slot(k)) != want {
			t.Fatalf("Slot(%q) = %d, server %d (%v)", k, redistest.Slot(k), want, err)
		}
	}

	// Two hash tags on different shards.
	tags := []string{}
	seen := map[*redistest.Server]bool{}
	for i := 0; len(tags) < 2; i++ {
		tag := fmt.Sprintf("{s%d}", i)
		if p := cl.PrimaryOf(tag); !seen[p] {
			seen[p] = true
			tags = append(tags, tag)
		}
	}

	for _, mode := range []string{"cut", "stall"} {
		tag := tags[0]
		if mode == "stall" {
			tag = tags[1]
		}
		primary, replica := cl.PrimaryOf(tag), cl.ReplicaOf(tag)
		if primary == replica {
			t.Fatal("PrimaryOf == ReplicaOf")
		}
		if err := cc.Set(ctx, tag+"before", 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := cl.WaitReplicasSynced(ctx); err != nil {
			t.Fatal(err)
		}
		if !exists(t, ctx, replica.Addr(), tag+"before") {
			t.Fatalf("%s: replica lacks a synced write", mode)
		}

		if mode == "cut" {
			replica.CutReplication()
		} else {
			replica.StallReplication()
		}
		pc := redis.NewClient(&redis.Options{Addr: primary.Addr()})
		conn := pc.Conn()
		if n := setAndWait(t, ctx, conn, tag+"lost", 100*time.Millisecond); n != 0 {
			t.Fatalf("%s: WAIT 1 = %d, want 0", mode, n)
		}
		conn.Close()
		pc.Close()
		if err := cc.Set(ctx, tag+"lost2", 1, 0).Err(); err != nil { // acknowledged through the cluster client too
			t.Fatal(err)
		}
		pOff, _ := mustOffsets(t, ctx, primary.Addr())
		rOff, rRead := mustOffsets(t, ctx, replica.Addr())
		t.Logf("%s: primary offset %d, replica applied %d, read %d", mode, pOff, rOff, rRead)
		if rOff >= pOff {
			t.Fatalf("%s: replica applied %d, primary %d: the replica should lag", mode, rOff, pOff)
		}
		info, err := redistest.Info(ctx, primary.Addr(), "replication")
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{"cut": "0", "stall": "1"}[mode]; info["connected_slaves"] != want {
			t.Fatalf("%s: primary connected_slaves = %s, want %s", mode, info["connected_slaves"], want)
		}

		primary.Stop() // kill -9
		cl.Takeover(replica)
		top, err := cl.Topology(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range top {
			if n.Addr == replica.Addr() && (!n.Primary() || !n.Serves(redistest.Slot(tag))) {
				t.Fatalf("%s: after Takeover %s is %v serving %v", mode, n.Addr, n.Flags, n.Slots)
			}
		}
		if cl.PrimaryOf(tag) != replica {
			t.Fatalf("%s: PrimaryOf after Takeover is not the replica", mode)
		}
		if !exists(t, ctx, replica.Addr(), tag+"before") {
			t.Fatalf("%s: the new primary lacks a replicated write", mode)
		}
		if exists(t, ctx, replica.Addr(), tag+"lost") || exists(t, ctx, replica.Addr(), tag+"lost2") {
			t.Fatalf("%s: the new primary has a write made while it lagged", mode)
		}
		// The cluster client finds the new primary once it refreshes its
		// slot map (go-redis does not on "connection refused": only on
		// MOVED, READONLY or every ClusterStateReloadInterval, 60 s by
		// default), and the writes are gone; the new primary takes writes.
		cc.ReloadState(ctx)
		err = waitFor(ctx, func() bool {
			return errors.Is(cc.Get(ctx, tag+"lost").Err(), redis.Nil) && cc.Get(ctx, tag+"before").Val() == "1"
		})
		if err != nil {
			t.Fatalf("%s: cluster client after Takeover: %v", mode, err)
		}
		if err := cc.Set(ctx, tag+"after", 1, 0).Err(); err != nil {
			t.Fatalf("%s: SET after Takeover: %v", mode, err)
		}
		redistest.FlushNode(t, replica.Addr())
		if exists(t, ctx, replica.Addr(), tag+"after") {
			t.Fatalf("%s: FlushNode left data", mode)
		}
	}
}

// StartCluster (no replicas) still gives a working three-primary cluster.
func TestStartCluster(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cl := redistest.StartCluster(t)
	if len(cl.Addrs()) != 3 || len(cl.AllAddrs()) != 3 {
		t.Fatalf("Addrs %v, AllAddrs %v", cl.Addrs(), cl.AllAddrs())
	}
	top, err := cl.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slots := 0
	for _, n := range top {
		if !n.Primary() {
			t.Fatalf("%s is not a primary: %v", n.Addr, n.Flags)
		}
		for _, r := range n.Slots {
			slots += r[1] - r[0] + 1
		}
	}
	if len(top) != 3 || slots != 16384 {
		t.Fatalf("%d nodes serving %d slots", len(top), slots)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer cc.Close()
	for i := range 10 {
		if err := cc.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// MigrateSlot moves a slot and its keys to another primary, and to a
// primary just added (serving nothing before); a cluster client reads
// every key throughout. A Migration stopped midway shows what Redis does
// while a slot moves: a key still on the source is served there, one
// already moved is redirected (ASK), and a command over several keys of
// which the node has only some is refused with TRYAGAIN.
func TestMigrateSlot(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cl := redistest.StartCluster(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer cc.Close()
	const tag = "{mig}"
	slot := redistest.Slot(tag)
	keys := []string{tag + "a", tag + "b", tag + "c"}
	for _, k := range keys {
		if err := cc.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func(when string) {
		t.Helper()
		for _, k := range keys {
			if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
				t.Fatalf("%s: GET %s = %q, %v", when, k, v, err)
			}
		}
	}
	other := func() *redistest.Server {
		for _, n := range cl.Nodes() {
			if n != cl.PrimaryOf(tag) {
				return n
			}
		}
		t.Fatal("no other primary")
		return nil
	}

	to := other()
	if err := cl.MigrateSlot(ctx, slot, to); err != nil {
		t.Fatal(err)
	}
	if cl.PrimaryOf(tag) != to {
		t.Fatalf("slot %d not on %s after MigrateSlot", slot, to.Addr())
	}
	if !exists(t, ctx, to.Addr(), keys[0]) {
		t.Fatal("the keys did not move")
	}
	readAll("after MigrateSlot")
	if _, err := cl.NewMigration(ctx, slot, to); err == nil {
		t.Fatal("NewMigration to the node serving the slot")
	}

	added := cl.AddPrimary()
	if len(cl.Addrs()) != 3 || len(cl.AllAddrs()) != 4 {
		t.Fatalf("Addrs %v, AllAddrs %v", cl.Addrs(), cl.AllAddrs())
	}
	m, err := cl.NewMigration(ctx, slot, added)
	if err != nil {
		t.Fatal(err)
	}
	if m.Source() != to || m.Target() != added {
		t.Fatal("Source, Target")
	}
	if err := m.Importing(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Migrating(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Move(ctx, keys[0], tag+"absent"); err != nil {
		t.Fatal(err)
	}
	left, err := m.Keys(ctx, 10)
	if err != nil || len(left) != 2 {
		t.Fatalf("keys left on the source: %v, %v", left, err)
	}
	readAll("midway") // keys[0] by ASK, the others from the source
	err = cc.MGet(ctx, keys...).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("MGET over moved and unmoved keys: %v, want TRYAGAIN", err)
	}
	if n, err := m.MoveAll(ctx); err != nil || n != 2 {
		t.Fatalf("MoveAll: %d, %v", n, err)
	}
	if err := m.Assign(ctx); err != nil {
		t.Fatal(err)
	}
	if cl.PrimaryOf(tag) != added {
		t.Fatalf("slot %d not on the added primary", slot)
	}
	readAll("after the migration to the added primary")
	if err := cc.MGet(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
}
