package redistest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// setAndWait writes key on conn and returns WAIT 1's answer on the same
// connection (WAIT counts the replicas that acknowledged this connection's
// writes).
func setAndWait(t *testing.T, ctx context.Context, conn *redis.Conn, key string, timeout time.Duration) int64 {
	t.Helper()
	if err := conn.Set(ctx, key, "1", 0).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	n, err := conn.Wait(ctx, 1, timeout).Result()
	if err != nil {
		t.Fatalf("WAIT after SET %s: %v", key, err)
	}
	return n
}

func mustOffsets(t *testing.T, ctx context.Context, addr string) (applied, read int64) {
	t.Helper()
	applied, read, err := redistest.ReplOffsets(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	return applied, read
}

func exists(t *testing.T, ctx context.Context, addr, key string) bool {
	t.Helper()
	var n int64
	err := withDirect(addr, func(c *redis.Client) (err error) {
		conn := c.Conn()
		defer conn.Close()
		_ = conn.ReadOnly(ctx).Err() // lets a cluster replica answer; an error elsewhere
		n, err = conn.Exists(ctx, key).Result()
		return err
	})
	if err != nil {
		t.Fatalf("EXISTS %s on %s: %v", key, addr, err)
	}
	return n == 1
}

func withDirect(addr string, f func(*redis.Client) error) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	return f(c)
}

// A replica whose link is cut misses writes the primary acknowledges (WAIT
// says so); restored, it catches up; cut again, its primary killed and it
// promoted, it lacks the writes acknowledged during the cut.
func TestReplicatedCutLinkLosesAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	rs := redistest.StartReplicated(t, 1)
	primary, replica := rs.Primary.Addr(), rs.Replicas[0].Addr()
	pc := newClient(t, &redis.Options{Addr: primary})
	conn := pc.Conn()
	defer conn.Close()

	if n := setAndWait(t, ctx, conn, "before", 5*time.Second); n != 1 {
		t.Fatalf("WAIT 1 with the link up = %d, want 1", n)
	}

	rs.CutLink(0)
	if n := setAndWait(t, ctx, conn, "during-first-cut", 100*time.Millisecond); n != 0 {
		t.Fatalf("WAIT 1 with the link cut = %d, want 0", n)
	}
	if exists(t, ctx, replica, "during-first-cut") {
		t.Fatal("the replica got a write made while its link was cut")
	}
	rs.RestoreLink(0)
	if err := rs.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(t, ctx, replica, "during-first-cut") {
		t.Fatal("the replica did not catch up after RestoreLink")
	}
	if n := setAndWait(t, ctx, conn, "after-restore", 5*time.Second); n != 1 {
		t.Fatalf("WAIT 1 after RestoreLink = %d, want 1", n)
	}

	rs.CutLink(0)
	if n := setAndWait(t, ctx, conn, "lost", 100*time.Millisecond); n != 0 {
		t.Fatalf("WAIT 1 with the link cut = %d, want 0", n)
	}
	pOff, _ := mustOffsets(t, ctx, primary)
	rOff, _ := mustOffsets(t, ctx, replica)
	if rOff >= pOff {
		t.Fatalf("replica offset %d, primary %d: the replica should lag", rOff, pOff)
	}
	rs.KillPrimary()
	promoted := rs.Promote(0)
	if !exists(t, ctx, promoted.Addr(), "before") || !exists(t, ctx, promoted.Addr(), "after-restore") {
		t.Fatal("the promoted replica lacks writes it had replicated")
	}
	if exists(t, ctx, promoted.Addr(), "lost") {
		t.Fatal("the promoted replica has a write made while its link was cut")
	}
	if err := newClient(t, &redis.Options{Addr: promoted.Addr()}).Set(ctx, "writable", 1, 0).Err(); err != nil {
		t.Fatalf("SET on the promoted replica: %v", err)
	}
	redistest.FlushNode(t, promoted.Addr())
	if exists(t, ctx, promoted.Addr(), "before") {
		t.Fatal("FlushNode left data")
	}
}

// A stalled replica keeps its link (its primary lists it online) and reads
// the stream but applies nothing; when its primary dies, what it read and
// did not apply is discarded, so once promoted it lacks those writes.
func TestReplicatedStalledReplicaLosesAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	rs := redistest.StartReplicated(t, 1)
	primary, replica := rs.Primary.Addr(), rs.Replicas[0].Addr()
	pc := newClient(t, &redis.Options{Addr: primary})
	conn := pc.Conn()
	defer conn.Close()

	if n := setAndWait(t, ctx, conn, "before", 5*time.Second); n != 1 {
		t.Fatalf("WAIT 1 = %d, want 1", n)
	}
	// Stalled then resumed, the replica catches up.
	rs.Replicas[0].StallReplication()
	if n := setAndWait(t, ctx, conn, "delayed", 100*time.Millisecond); n != 0 {
		t.Fatalf("WAIT 1 with the replica stalled = %d, want 0", n)
	}
	rs.Replicas[0].ResumeReplication()
	if err := rs.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if !exists(t, ctx, replica, "delayed") {
		t.Fatal("resumed replica did not apply what it had read")
	}

	rs.Replicas[0].StallReplication()
	if n := setAndWait(t, ctx, conn, "lost", 100*time.Millisecond); n != 0 {
		t.Fatalf("WAIT 1 with the replica stalled = %d, want 0", n)
	}
	pOff, _ := mustOffsets(t, ctx, primary)
	// The replica reads everything the primary sent...
	err := waitFor(ctx, func() bool { _, read := mustOffsets(t, ctx, replica); return read == pOff })
	if err != nil {
		t.Fatalf("stalled replica did not read up to %d: %v", pOff, err)
	}
	// ...applies none of it, and stays connected.
	if applied, _ := mustOffsets(t, ctx, replica); applied >= pOff {
		t.Fatalf("stalled replica applied up to %d, primary at %d", applied, pOff)
	}
	info, err := redistest.Info(ctx, primary, "replication")
	if err != nil || info["connected_slaves"] != "1" {
		t.Fatalf("primary connected_slaves = %q (%v), want 1", info["connected_slaves"], err)
	}
	if exists(t, ctx, replica, "lost") {
		t.Fatal("stalled replica applied a write")
	}

	rs.KillPrimary()
	promoted := rs.Promote(0)
	if !exists(t, ctx, promoted.Addr(), "before") {
		t.Fatal("the promoted replica lacks a write it had applied")
	}
	if exists(t, ctx, promoted.Addr(), "lost") {
		t.Fatal("the promoted replica has a write it had only read")
	}
	// Promote resumed it: writes are not paused.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := newClient(t, &redis.Options{Addr: promoted.Addr(), ContextTimeoutEnabled: true})
	if err := c.Set(short, "writable", 1, 0).Err(); err != nil {
		t.Fatalf("SET on the promoted replica: %v", err)
	}
	if err := c.Get(ctx, "lost").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET lost: %v", err)
	}
}
