package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is redis-server nodes joined into a cluster: three primaries, and
// for StartClusterWithReplicas one replica of each.
type Cluster struct {
	t         testing.TB
	nodes     []*Server // as started: the initial primaries first, then the replicas
	primaries int

	spare    *Server // started for AddPrimary, in no cluster yet
	spareBus int     // its cluster bus port
	mu       sync.Mutex
	clients  map[string]*redis.Client // the migrations' connections, by address
}

// Addrs are the addresses of the nodes started as primaries (seeds for a
// cluster client). After a failover one of them may be dead or a replica:
// see Topology.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.nodes[:c.primaries] {
		a = append(a, n.Addr())
	}
	return a
}

// AllAddrs are the addresses of every node, replicas included.
func (c *Cluster) AllAddrs() []string {
	var a []string
	for _, n := range c.nodes {
		a = append(a, n.Addr())
	}
	return a
}

// Nodes are every node's Server, the initial primaries first.
func (c *Cluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// Node is the node at addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// StartClusterWithReplicas starts six nodes and joins them into a cluster of
// three primaries with one replica each (redis-cli --cluster create
// --cluster-replicas 1). It returns once every node reports cluster_state:ok
// and knows the whole topology, and every replica is in sync with its
// primary.
func StartClusterWithReplicas(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, 1)
}

// StartClusterWithSpare is StartCluster with one more node started beside
// the cluster, outside it, for AddPrimary: a node serves only two seconds
// after it starts (Redis's writable delay), which then pass while the
// cluster forms.
func StartClusterWithSpare(t testing.TB) *Cluster {
	t.Helper()
	return startClusterWith(t, 0, true)
}

func startCluster(t testing.TB, replicasPerPrimary int) *Cluster {
	t.Helper()
	return startClusterWith(t, replicasPerPrimary, false)
}

func startClusterWith(t testing.TB, replicasPerPrimary int, spare bool) *Cluster {
	t.Helper()
	_, cli := binaries(t)
	c := &Cluster{t: t, primaries: 3}
	if spare {
		c.spare, c.spareBus = startClusterNode(t)
	}
	for range 3 * (1 + replicasPerPrimary) {
		n, _ := startClusterNode(t)
		c.nodes = append(c.nodes, n)
	}
	args := append([]string{"--cluster", "create"}, c.AllAddrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerPrimary), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.waitSettled(ctx, len(c.nodes), 3*replicasPerPrimary); err != nil {
		t.Fatalf("cluster not ready: %v", err)
	}
	if replicasPerPrimary > 0 {
		if err := c.WaitReplicasSynced(ctx); err != nil {
			t.Fatalf("cluster replicas not in sync: %v", err)
		}
	}
	return c
}

// waitSettled waits until every node reports cluster_state:ok and sees
// nodes nodes of which replicas are replicas, none in handshake.
func (c *Cluster) waitSettled(ctx context.Context, nodes, replicas int) error {
	return poll(ctx, func() error {
		for _, n := range c.nodes {
			if err := clusterOK(ctx, n.Addr()); err != nil {
				return err
			}
			top, err := ClusterNodes(ctx, n.Addr())
			if err != nil {
				return err
			}
			reps := 0
			for _, cn := range top {
				if cn.Has("handshake") || cn.Has("noaddr") {
					return fmt.Errorf("%s sees %s in handshake", n.Addr(), cn.Addr)
				}
				if !cn.Primary() {
					reps++
				}
			}
			if len(top) != nodes || reps != replicas {
				return fmt.Errorf("%s sees %d nodes, %d replicas; want %d, %d", n.Addr(), len(top), reps, nodes, replicas)
			}
		}
		return nil
	})
}

func clusterOK(ctx context.Context, addr string) error {
	return withClient(addr, func(rc *redis.Client) error {
		info, err := rc.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", addr)
		}
		return nil
	})
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID        string
	Addr      string   // host:port (without the bus port)
	Flags     []string // myself, master, slave, fail?, fail, handshake, noaddr, ...
	PrimaryID string   // for a replica, its primary's ID; "" for a primary
	Slots     [][2]int // slot ranges served, inclusive (primaries only)
}

// Has reports whether the node has the flag.
func (n ClusterNode) Has(flag string) bool { return slices.Contains(n.Flags, flag) }

// Primary reports whether the node is a primary.
func (n ClusterNode) Primary() bool { return n.Has("master") }

// Failed reports whether the node is flagged as failing (fail or fail?).
func (n ClusterNode) Failed() bool { return n.Has("fail") || n.Has("fail?") }

// Serves reports whether the node serves slot.
func (n ClusterNode) Serves(slot int) bool {
	for _, r := range n.Slots {
		if r[0] <= slot && slot <= r[1] {
			return true
		}
	}
	return false
}

// ClusterNodes returns the cluster topology as the node at addr sees it.
func ClusterNodes(ctx context.Context, addr string) ([]ClusterNode, error) {
	var out string
	err := withClient(addr, func(rc *redis.Client) (err error) {
		out, err = rc.ClusterNodes(ctx).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseClusterNodes(out)
}

func parseClusterNodes(out string) ([]ClusterNode, error) {
	var nodes []ClusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("bad CLUSTER NODES line %q", line)
		}
		n := ClusterNode{ID: f[0], Addr: f[1], Flags: strings.Split(f[2], ",")}
		if i := strings.IndexAny(n.Addr, "@,"); i >= 0 {
			n.Addr = n.Addr[:i]
		}
		if f[3] != "-" {
			n.PrimaryID = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") { // a slot being migrated or imported
				continue
			}
			lo, hi, ok := strings.Cut(s, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad slot range %q in %q", s, line)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Topology returns the cluster topology as the first node that answers sees
// it (the nodes started as primaries are asked first).
func (c *Cluster) Topology(ctx context.Context) ([]ClusterNode, error) {
	var errs []error
	for _, n := range c.nodes {
		top, err := ClusterNodes(ctx, n.Addr())
		if err == nil {
			return top, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// PrimaryOf is the node serving key's slot (per Topology; not necessarily
// alive).
func (c *Cluster) PrimaryOf(key string) *Server {
	c.t.Helper()
	p, _ := c.shardOf(key)
	return p
}

// ReplicaOf is a replica of the primary serving key's slot.
func (c *Cluster) ReplicaOf(key string) *Server {
	c.t.Helper()
	_, r := c.shardOf(key)
	if r == nil {
		c.t.Fatalf("no replica serves the slot of %q", key)
	}
	return r
}

func (c *Cluster) shardOf(key string) (primary, replica *Server) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	top, err := c.Topology(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	slot := Slot(key)
	var pid string
	for _, n := range top {
		if n.Primary() && n.Serves(slot) {
			pid, primary = n.ID, c.Node(n.Addr)
		}
	}
	if primary == nil {
		c.t.Fatalf("no node serves slot %d of %q", slot, key)
	}
	for _, n := range top {
		if n.PrimaryID == pid && !n.Failed() {
			replica = c.Node(n.Addr)
			break
		}
	}
	return primary, replica
}

// WaitReplicasSynced waits until every live replica's link to its primary
// is up and it has applied everything its primary has sent (equal
// replication offsets).
func (c *Cluster) WaitReplicasSynced(ctx context.Context) error {
	return poll(ctx, func() error {
		top, err := c.Topology(ctx)
		if err != nil {
			return err
		}
		byID := map[string]ClusterNode{}
		for _, n := range top {
			byID[n.ID] = n
		}
		for _, n := range top {
			if n.Primary() || n.Failed() {
				continue
			}
			p, ok := byID[n.PrimaryID]
			if !ok {
				return fmt.Errorf("replica %s: unknown primary %s", n.Addr, n.PrimaryID)
			}
			if err := replicaSynced(ctx, p.Addr, n.Addr); err != nil {
				return err
			}
		}
		return nil
	})
}

// Takeover makes replica the primary of its primary's slots with CLUSTER
// FAILOVER TAKEOVER (no agreement needed: the primary may be dead, e.g.
// after Stop, which kills it with SIGKILL), then waits until every live node
// reports it as the primary of those slots and cluster_state:ok. It resumes
// a replica held by StallReplication once it is a primary, so writes to it
// are not paused.
func (c *Cluster) Takeover(replica *Server) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	top, err := ClusterNodes(ctx, replica.Addr())
	if err != nil {
		c.t.Fatal(err)
	}
	var me, primary ClusterNode
	for _, n := range top {
		if n.Has("myself") {
			me = n
		}
	}
	for _, n := range top {
		if n.ID == me.PrimaryID && me.PrimaryID != "" {
			primary = n
		}
	}
	if primary.ID == "" {
		c.t.Fatalf("takeover: %s is not a replica", replica.Addr())
	}
	err = withClient(replica.Addr(), func(rc *redis.Client) error {
		return rc.Do(ctx, "CLUSTER", "FAILOVER", "TAKEOVER").Err()
	})
	if err != nil {
		c.t.Fatalf("CLUSTER FAILOVER TAKEOVER on %s: %v", replica.Addr(), err)
	}
	err = poll(ctx, func() error {
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			view, err := ClusterNodes(ctx, n.Addr())
			if err != nil {
				return err
			}
			for _, v := range view {
				if v.ID == me.ID && (!v.Primary() || !slices.Equal(v.Slots, primary.Slots)) {
					return fmt.Errorf("%s does not yet see %s as primary of %v", n.Addr(), replica.Addr(), primary.Slots)
				}
			}
			if err := clusterOK(ctx, n.Addr()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("takeover by %s: %v", replica.Addr(), err)
	}
	err = withClient(replica.Addr(), func(rc *redis.Client) error { return rc.ClientUnpause(ctx).Err() })
	if err != nil {
		c.t.Fatal(err)
	}
}

// FlushNode runs FLUSHALL on the one node at addr (on a replica it fails:
// flush its primary).
func FlushNode(t testing.TB, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := withClient(addr, func(rc *redis.Client) error { return rc.FlushAll(ctx).Err() }); err != nil {
		t.Fatalf("FLUSHALL on %s: %v", addr, err)
	}
}

// Slot is the cluster hash slot of key (CRC16 of its hash tag, mod 16384).
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// startClusterNode starts a redis-server in cluster mode, in no cluster
// yet. An explicit bus port: the default (port+10000) is not checked free
// and does not exist above port 55535.
func startClusterNode(t testing.TB) (n *Server, busPort int) {
	t.Helper()
	ports := freePorts(t, 2)
	return startOn(t, ports[0], "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
		"--cluster-port", strconv.Itoa(ports[1]), "--repl-diskless-sync-delay", "0"), ports[1]
}

// AddPrimary starts one more node (or takes the spare of
// StartClusterWithSpare) and joins it to the cluster (CLUSTER MEET on
// every node) as a primary serving no slot, as a scale-out begins;
// MigrateSlot then gives it slots. It returns once every node knows it
// (no handshake left) and reports cluster_state:ok. Addrs is unchanged
// (the seeds); AllAddrs and Nodes include it. A cluster client learns of
// it only once it serves a slot (CLUSTER SLOTS lists no other).
func (c *Cluster) AddPrimary() *Server {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	top, err := ClusterNodes(ctx, c.nodes[0].Addr())
	if err != nil {
		c.t.Fatal(err)
	}
	replicas := 0
	for _, n := range top {
		if !n.Primary() {
			replicas++
		}
	}
	n, bus := c.spare, c.spareBus
	if n == nil {
		n, bus = startClusterNode(c.t)
	}
	c.spare = nil
	// Every node meets it, rather than learning of it by gossip (a second
	// or more).
	for _, o := range c.nodes {
		if !o.running() {
			continue
		}
		err = withClient(o.Addr(), func(rc *redis.Client) error {
			return rc.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.Port(), bus).Err()
		})
		if err != nil {
			c.t.Fatalf("CLUSTER MEET %s on %s: %v", n.Addr(), o.Addr(), err)
		}
	}
	c.nodes = append(c.nodes, n)
	if err := c.waitSettled(ctx, len(top)+1, replicas); err != nil {
		c.t.Fatalf("%s never joined: %v", n.Addr(), err)
	}
	return n
}

// client is a connection to the node at addr kept for the cluster's life:
// a migration sends many commands, and a client dialed for each costs
// milliseconds under the race detector.
func (c *Cluster) client(addr string) *redis.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		c.clients = map[string]*redis.Client{}
		c.t.Cleanup(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, rc := range c.clients {
				_ = rc.Close()
			}
		})
	}
	rc, ok := c.clients[addr]
	if !ok {
		rc = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
		c.clients[addr] = rc
	}
	return rc
}

// view is the topology as the node at addr sees it, through client.
func (c *Cluster) view(ctx context.Context, addr string) ([]ClusterNode, error) {
	out, err := c.client(addr).ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	return parseClusterNodes(out)
}

// topology is Topology through client.
func (c *Cluster) topology(ctx context.Context) ([]ClusterNode, error) {
	var errs []error
	for _, n := range c.nodes {
		top, err := c.view(ctx, n.Addr())
		if err == nil {
			return top, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// Migration is one hash slot on its way from the primary serving it (the
// source) to another primary (the target), moved step by step as redis-cli
// --cluster reshard moves it: Importing (CLUSTER SETSLOT IMPORTING on the
// target), Migrating (SETSLOT MIGRATING on the source), Move or MoveAll
// (MIGRATE of the slot's keys from the source to the target) and Assign
// (SETSLOT NODE on every primary, the target first). A test may act
// between any two steps: while the slot is open the source serves the keys
// it still has, answers ASK for the others, and either node answers
// TRYAGAIN to a command over several keys of which it has only some.
// MigrateSlot runs every step at once.
type Migration struct {
	c              *Cluster
	slot           int
	source, target ClusterNode
}

// NewMigration prepares the move of slot to the primary to; nothing
// changes before Importing. It fails if to is not a primary or already
// serves slot.
func (c *Cluster) NewMigration(ctx context.Context, slot int, to *Server) (*Migration, error) {
	top, err := c.topology(ctx)
	if err != nil {
		return nil, err
	}
	m := &Migration{c: c, slot: slot}
	for _, n := range top {
		if n.Primary() && n.Serves(slot) {
			m.source = n
		}
		if n.Addr == to.Addr() {
			m.target = n
		}
	}
	switch {
	case m.source.ID == "":
		return nil, fmt.Errorf("no primary serves slot %d", slot)
	case m.target.ID == "" || !m.target.Primary():
		return nil, fmt.Errorf("%s is not a primary of the cluster", to.Addr())
	case m.target.ID == m.source.ID:
		return nil, fmt.Errorf("%s already serves slot %d", to.Addr(), slot)
	}
	return m, nil
}

// Source is the node that served the slot when the migration was
// prepared.
func (m *Migration) Source() *Server { return m.c.Node(m.source.Addr) }

// Target is the node the slot moves to.
func (m *Migration) Target() *Server { return m.c.Node(m.target.Addr) }

// Importing opens the slot on the target: CLUSTER SETSLOT <slot>
// IMPORTING <source-id>. It then serves the slot's keys to clients that
// send ASKING first.
func (m *Migration) Importing(ctx context.Context) error {
	return m.c.client(m.target.Addr).Do(ctx, "CLUSTER", "SETSLOT", m.slot, "IMPORTING", m.source.ID).Err()
}

// Migrating opens the slot on the source: CLUSTER SETSLOT <slot>
// MIGRATING <target-id>. From then on it answers ASK for a key it no
// longer has, and creates none.
func (m *Migration) Migrating(ctx context.Context) error {
	return m.c.client(m.source.Addr).Do(ctx, "CLUSTER", "SETSLOT", m.slot, "MIGRATING", m.target.ID).Err()
}

// Keys are the slot's keys still on the source (CLUSTER GETKEYSINSLOT),
// at most count of them.
func (m *Migration) Keys(ctx context.Context, count int) ([]string, error) {
	return m.c.client(m.source.Addr).ClusterGetKeysInSlot(ctx, m.slot, count).Result()
}

// Move moves keys from the source to the target with one MIGRATE host port
// "" 0 timeout KEYS ..., as redis-cli does: each is deleted from the
// source (the deletion is a write, seen by client tracking) and restored
// on the target, at once. A key the source does not have is skipped
// (Redis replies NOKEY, not an error, when it has none of them).
func (m *Migration) Move(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	host, port, err := net.SplitHostPort(m.target.Addr)
	if err != nil {
		return err
	}
	args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
	for _, k := range keys {
		args = append(args, k)
	}
	if err := m.c.client(m.source.Addr).Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("MIGRATE of %d keys of slot %d to %s: %w", len(keys), m.slot, m.target.Addr, err)
	}
	return nil
}

// MoveAll moves every key of the slot still on the source, a batch at a
// time (CLUSTER GETKEYSINSLOT, then MIGRATE), until it has none, and
// reports how many it moved. Once the slot is Migrating the source creates
// no key in it, so this ends.
func (m *Migration) MoveAll(ctx context.Context) (int, error) {
	moved := 0
	for {
		keys, err := m.Keys(ctx, 100)
		if err != nil || len(keys) == 0 {
			return moved, err
		}
		if err := m.Move(ctx, keys...); err != nil {
			return moved, err
		}
		moved += len(keys)
	}
}

// Assign closes the migration: CLUSTER SETSLOT <slot> NODE <target-id> on
// the target first, then on the source, then on every other primary, as
// redis-cli does. It returns once each of them reports the target serving
// the slot (replicas learn it by gossip, later). Keys left on the source
// are stranded there: MoveAll first. A source left with no slot becomes a
// replica of the target unless cluster-allow-replica-migration is off.
func (m *Migration) Assign(ctx context.Context) error {
	top, err := m.c.topology(ctx)
	if err != nil {
		return err
	}
	order := []string{m.target.Addr, m.source.Addr}
	for _, n := range top {
		if n.Primary() && !n.Failed() && n.Addr != m.target.Addr && n.Addr != m.source.Addr {
			order = append(order, n.Addr)
		}
	}
	for _, addr := range order {
		err := m.c.client(addr).Do(ctx, "CLUSTER", "SETSLOT", m.slot, "NODE", m.target.ID).Err()
		// A primary left with no slot becomes a replica of the node that
		// took its last one (cluster-allow-replica-migration, on by
		// default), perhaps before it is told: it has learnt the owner.
		if err != nil && (addr == m.target.Addr || !strings.Contains(err.Error(), "only with masters")) {
			return fmt.Errorf("CLUSTER SETSLOT %d NODE on %s: %w", m.slot, addr, err)
		}
	}
	return poll(ctx, func() error {
		for _, addr := range order {
			view, err := m.c.view(ctx, addr)
			if err != nil {
				return err
			}
			for _, v := range view {
				if v.Serves(m.slot) != (v.ID == m.target.ID) {
					return fmt.Errorf("%s sees %s serving slot %d: %v", addr, v.Addr, m.slot, v.Slots)
				}
			}
		}
		return nil
	})
}

// MigrateSlot moves slot, and every key in it, from the primary serving it
// to the primary to, as a resharding does: Importing, Migrating, MoveAll,
// Assign. No key is lost; while the slot moves, a command over one key is
// served (by an ASK redirection once the key has moved), one over several
// may be refused with TRYAGAIN. It returns once every primary reports to
// serving slot.
func (c *Cluster) MigrateSlot(ctx context.Context, slot int, to *Server) error {
	m, err := c.NewMigration(ctx, slot, to)
	if err != nil {
		return err
	}
	if err := m.Importing(ctx); err != nil {
		return err
	}
	if err := m.Migrating(ctx); err != nil {
		return err
	}
	if _, err := m.MoveAll(ctx); err != nil {
		return err
	}
	return m.Assign(ctx)
}

// ConfigSet runs CONFIG SET name value on every running node (not on
// nodes added after).
func (c *Cluster) ConfigSet(ctx context.Context, name, value string) error {
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		err := withClient(n.Addr(), func(rc *redis.Client) error { return rc.ConfigSet(ctx, name, value).Err() })
		if err != nil {
			return fmt.Errorf("CONFIG SET %s on %s: %w", name, n.Addr(), err)
		}
	}
	return nil
}
