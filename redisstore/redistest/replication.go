package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replicated is a standalone primary with replicas, each replicating
// through its own Proxy (its link), so that a test can cut or pause one
// replica's link while the primary keeps acknowledging writes.
type Replicated struct {
	t        testing.TB
	Primary  *Server
	Replicas []*Server
	links    []*Proxy
}

// StartReplicated starts a primary and n replicas of it, each replicating
// through its own Proxy, and waits until every replica is in sync. extra
// are more redis-server arguments for every server (full syncs are
// diskless with no delay unless extra says otherwise).
func StartReplicated(t testing.TB, n int, extra ...string) *Replicated {
	t.Helper()
	args := append([]string{"--repl-diskless-sync-delay", "0"}, extra...)
	r := &Replicated{t: t, Primary: Start(t, args...)}
	for range n {
		link := NewProxy(t, r.Primary.Addr())
		host, port, _ := net.SplitHostPort(link.Addr())
		r.links = append(r.links, link)
		r.Replicas = append(r.Replicas, Start(t, append(args[:len(args):len(args)], "--replicaof", host, port)...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitSynced(ctx); err != nil {
		t.Fatalf("replicas not in sync: %v", err)
	}
	return r
}

// Link is the proxy replica i replicates through.
func (r *Replicated) Link(i int) *Proxy { return r.links[i] }

// CutLink cuts replica i's link to the primary and keeps it cut (the
// proxy refuses reconnections), then waits until the replica reports its
// link down and the primary no longer lists it: the primary goes on
// acknowledging writes, which the replica misses, and WAIT no longer
// counts it.
func (r *Replicated) CutLink(i int) {
	r.t.Helper()
	r.links[i].Refuse(true)
	r.links[i].Cut()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := poll(ctx, func() error {
		ri, err := Info(ctx, r.Replicas[i].Addr(), "replication")
		if err != nil {
			return err
		}
		if ri["master_link_status"] != "down" {
			return fmt.Errorf("replica %d: link still up", i)
		}
		pi, err := Info(ctx, r.Primary.Addr(), "replication")
		if err != nil {
			return err
		}
		if _, listed := replicaState(pi, r.Replicas[i].Port()); listed {
			return fmt.Errorf("primary still lists replica %d", i)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("cut link %d: %v", i, err)
	}
}

// RestoreLink lets replica i reconnect (within a second: its replication
// cron) and waits until its link is up; WaitSynced then waits for it to
// catch up.
func (r *Replicated) RestoreLink(i int) {
	r.t.Helper()
	r.links[i].Refuse(false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := poll(ctx, func() error {
		ri, err := Info(ctx, r.Replicas[i].Addr(), "replication")
		if err != nil {
			return err
		}
		if ri["master_link_status"] != "up" {
			return fmt.Errorf("replica %d: link down", i)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("restore link %d: %v", i, err)
	}
}

// WaitSynced waits until every replica's link is up, the primary lists it
// online, and its replication offset equals the primary's.
func (r *Replicated) WaitSynced(ctx context.Context) error {
	return poll(ctx, func() error {
		for _, rep := range r.Replicas {
			if err := replicaSynced(ctx, r.Primary.Addr(), rep.Addr()); err != nil {
				return err
			}
		}
		return nil
	})
}

// KillPrimary kills the primary with SIGKILL (Stop): whatever it
// acknowledged and did not send to a replica is lost with it.
func (r *Replicated) KillPrimary() { r.Primary.Stop() }

// Promote makes replica i a primary (REPLICAOF NO ONE), waits until it
// reports role:master, resumes it if StallReplication held it, and returns
// it. Primary and Replicas are unchanged; the other replicas still follow
// the old primary.
func (r *Replicated) Promote(i int) *Server {
	r.t.Helper()
	s := r.Replicas[i]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := withClient(s.Addr(), func(rc *redis.Client) error { return rc.ReplicaOf(ctx, "NO", "ONE").Err() })
	if err != nil {
		r.t.Fatalf("REPLICAOF NO ONE on replica %d: %v", i, err)
	}
	err = poll(ctx, func() error {
		ri, err := Info(ctx, s.Addr(), "replication")
		if err != nil {
			return err
		}
		if ri["role"] != "master" {
			return fmt.Errorf("replica %d: role %s", i, ri["role"])
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("promote %d: %v", i, err)
	}
	s.ResumeReplication()
	return s
}

// CutReplication makes this replica lose its link to its primary and stay
// disconnected: it sets masteruser/masterauth to credentials the primary
// rejects (its reconnection attempts fail at AUTH) and kills the link
// (CLIENT KILL TYPE master), then waits until it reports the link down. It
// works for any replica, standalone or cluster, without a proxy. The
// primary stops listing it, so WAIT no longer counts it.
func (r *Server) CutReplication() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := withClient(r.Addr(), func(rc *redis.Client) error {
		if err := rc.ConfigSet(ctx, "masteruser", "redistest-cut-link").Err(); err != nil {
			return err
		}
		if err := rc.ConfigSet(ctx, "masterauth", "redistest-cut-link").Err(); err != nil {
			return err
		}
		return rc.Do(ctx, "CLIENT", "KILL", "TYPE", "master").Err()
	})
	if err != nil {
		r.t.Fatalf("cut replication of %s: %v", r.Addr(), err)
	}
	if err := r.waitLink(ctx, "down"); err != nil {
		r.t.Fatalf("cut replication of %s: %v", r.Addr(), err)
	}
}

// RestoreReplication undoes CutReplication and waits until the replica's
// link is up again (it reconnects within a second, with a partial resync
// when the primary's backlog still holds what it missed).
func (r *Server) RestoreReplication() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := withClient(r.Addr(), func(rc *redis.Client) error {
		if err := rc.ConfigSet(ctx, "masterauth", "").Err(); err != nil {
			return err
		}
		return rc.ConfigSet(ctx, "masteruser", "").Err()
	})
	if err != nil {
		r.t.Fatalf("restore replication of %s: %v", r.Addr(), err)
	}
	if err := r.waitLink(ctx, "up"); err != nil {
		r.t.Fatalf("restore replication of %s: %v", r.Addr(), err)
	}
}

// StallReplication makes this replica stop applying its replication
// stream while its link stays up (CLIENT PAUSE <1h> WRITE: in Redis 7.0 a
// write pause also holds the primary's stream): it still reads the stream
// (slave_read_repl_offset grows, slave_repl_offset does not), its primary
// still lists it online and acknowledges writes, and WAIT no longer counts
// it. If the link then breaks (the primary is killed), what it read and did
// not apply is discarded. ResumeReplication, Promote and Takeover resume it.
func (r *Server) StallReplication() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := withClient(r.Addr(), func(rc *redis.Client) error {
		return rc.Do(ctx, "CLIENT", "PAUSE", strconv.Itoa(3600*1000), "WRITE").Err()
	})
	if err != nil {
		r.t.Fatalf("stall replication of %s: %v", r.Addr(), err)
	}
}

// ResumeReplication undoes StallReplication (CLIENT UNPAUSE).
func (r *Server) ResumeReplication() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := withClient(r.Addr(), func(rc *redis.Client) error { return rc.ClientUnpause(ctx).Err() }); err != nil {
		r.t.Fatalf("resume replication of %s: %v", r.Addr(), err)
	}
}

func (r *Server) waitLink(ctx context.Context, status string) error {
	return poll(ctx, func() error {
		ri, err := Info(ctx, r.Addr(), "replication")
		if err != nil {
			return err
		}
		if ri["master_link_status"] != status {
			return fmt.Errorf("master_link_status:%s, want %s", ri["master_link_status"], status)
		}
		return nil
	})
}

// running reports whether the server process is running (not Stopped).
func (r *Server) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// Info returns the fields of INFO section on the server at addr.
func Info(ctx context.Context, addr, section string) (map[string]string, error) {
	var out string
	err := withClient(addr, func(rc *redis.Client) (err error) {
		out, err = rc.Info(ctx, section).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m, nil
}

// ReplOffsets returns, from the server at addr, master_repl_offset (for a
// replica: what it has applied) and, for a replica, slave_read_repl_offset
// (what it has read from its primary; -1 for a primary).
func ReplOffsets(ctx context.Context, addr string) (applied, read int64, err error) {
	ri, err := Info(ctx, addr, "replication")
	if err != nil {
		return 0, 0, err
	}
	applied, err = strconv.ParseInt(ri["master_repl_offset"], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: master_repl_offset: %v", addr, err)
	}
	read = -1
	if v, ok := ri["slave_read_repl_offset"]; ok {
		read, _ = strconv.ParseInt(v, 10, 64)
	}
	return applied, read, nil
}

// replicaState returns the state (online, wait_bgsave, ...) in which a
// primary's INFO replication lists the replica listening on port.
func replicaState(primaryInfo map[string]string, port int) (string, bool) {
	for k, v := range primaryInfo {
		if !strings.HasPrefix(k, "slave") || k == "slave_expires_tracked_keys" {
			continue
		}
		fields := map[string]string{}
		for f := range strings.SplitSeq(v, ",") {
			if a, b, ok := strings.Cut(f, "="); ok {
				fields[a] = b
			}
		}
		if fields["port"] == strconv.Itoa(port) {
			return fields["state"], true
		}
	}
	return "", false
}

// replicaSynced reports (as nil) whether the replica at replicaAddr has its
// link up, is listed online by its primary at primaryAddr, and has applied
// the primary's whole stream.
func replicaSynced(ctx context.Context, primaryAddr, replicaAddr string) error {
	pi, err := Info(ctx, primaryAddr, "replication")
	if err != nil {
		return err
	}
	ri, err := Info(ctx, replicaAddr, "replication")
	if err != nil {
		return err
	}
	_, p, _ := net.SplitHostPort(replicaAddr)
	port, _ := strconv.Atoi(p)
	if st, _ := replicaState(pi, port); st != "online" {
		return fmt.Errorf("primary %s lists replica %s as %q", primaryAddr, replicaAddr, st)
	}
	if ri["master_link_status"] != "up" {
		return fmt.Errorf("replica %s: link down", replicaAddr)
	}
	if ri["slave_repl_offset"] != pi["master_repl_offset"] {
		return fmt.Errorf("replica %s at offset %s, primary %s at %s", replicaAddr, ri["slave_repl_offset"], primaryAddr, pi["master_repl_offset"])
	}
	return nil
}

// withClient runs f with a client of the server at addr that does not
// retry, then closes it.
func withClient(addr string, f func(*redis.Client) error) error {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 5 * time.Second})
	defer rc.Close()
	return f(rc)
}

// poll calls f until it returns nil or ctx ends (then it returns ctx's
// error with f's last one).
func poll(ctx context.Context, f func() error) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
