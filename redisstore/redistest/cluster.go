package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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

func startCluster(t testing.TB, replicasPerPrimary int) *Cluster {
	t.Helper()
	_, cli := binaries(t)
	c := &Cluster{t: t, primaries: 3}
	for range 3 * (1 + replicasPerPrimary) {
		// An explicit bus port: the default (port+10000) is not checked free
		// and does not exist above port 55535.
		ports := freePorts(t, 2)
		c.nodes = append(c.nodes, startOn(t, ports[0],
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(ports[1]), "--repl-diskless-sync-delay", "0"))
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
