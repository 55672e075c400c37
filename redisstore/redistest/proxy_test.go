package redistest_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

func newClient(t testing.TB, opt *redis.Options) *redis.Client {
	t.Helper()
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A lost reply makes go-redis retry the command on a new connection: the
// command runs twice.
func TestProxyLostReplyIsRetried(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	direct := newClient(t, &redis.Options{Addr: srv.Addr()})
	c := newClient(t, &redis.Options{Addr: p.Addr()}) // default: 3 retries

	p.DropNextReplies(1, "incr")
	if n, err := c.Incr(ctx, "ctr").Result(); err != nil || n != 2 {
		t.Fatalf("INCR through a lost reply = %d, %v; want 2 (executed, reply lost, retried)", n, err)
	}
	if got := direct.Get(ctx, "ctr").Val(); got != "2" {
		t.Fatalf("counter = %q, want 2", got)
	}
	if p.Dropped() != 1 {
		t.Fatalf("Dropped = %d, want 1", p.Dropped())
	}
	if n, err := c.Incr(ctx, "ctr").Result(); err != nil || n != 3 {
		t.Fatalf("next INCR = %d, %v; want 3, nothing dropped", n, err)
	}

	// Only matching commands lose their reply: a script (EVALSHA), not INCR.
	script := redis.NewScript(`return redis.call('INCR', KEYS[1])`)
	if err := script.Load(ctx, direct).Err(); err != nil {
		t.Fatal(err)
	}
	p.DropNextReplies(1, "EVALSHA", "EVAL", "FCALL")
	if n, err := c.Incr(ctx, "other").Result(); err != nil || n != 1 {
		t.Fatalf("INCR while scripts drop = %d, %v", n, err)
	}
	if n, err := script.Run(ctx, c, []string{"scripted"}).Int64(); err != nil || n != 2 {
		t.Fatalf("script through a lost reply = %d, %v; want 2", n, err)
	}
	if p.Dropped() != 2 {
		t.Fatalf("Dropped = %d, want 2", p.Dropped())
	}
	if p.Forwarded() == 0 {
		t.Fatal("Forwarded = 0")
	}
}

// Replies are matched to pipelined commands: the chosen one and everything
// after it on the connection are lost, everything before it arrives, and
// the chosen command did execute.
func TestProxyDropsPipelinedRepliesFromTheChosenOne(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	direct := newClient(t, &redis.Options{Addr: srv.Addr()})

	for _, c := range []struct {
		drop string // the command whose reply is lost
		want string // what the client reads before the connection closes
		ctr  string // the counter after the pipeline
	}{
		{"INCR", "+PONG\r\n", "1"},
		{"GET", "+PONG\r\n:2\r\n", "2"},
		{"nosuch", "+PONG\r\n:3\r\n$1\r\n3\r\n:4\r\n+PONG\r\n", "4"},
	} {
		p.DropNextReplies(1, c.drop)
		conn, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		// PING, INCR ctr, GET ctr, INCR ctr, PING (inline), in one write.
		req := "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n*2\r\n$3\r\nGET\r\n$3\r\nctr\r\n*2\r\n$4\r\nincr\r\n$3\r\nctr\r\nPING\r\n"
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		var got []byte
		if c.drop == "nosuch" { // nothing dropped: read the five replies, then close
			got = make([]byte, len(c.want))
			_, err = io.ReadFull(conn, got)
		} else {
			got, err = io.ReadAll(conn) // until the proxy closes the connection
		}
		conn.Close()
		if err != nil || string(got) != c.want {
			t.Fatalf("dropping %s: read %q, %v; want %q", c.drop, got, err, c.want)
		}
		// The proxy closed the connection only once the dropped reply came
		// back, so the dropped command has run; the commands after it on
		// the connection may or may not have: settle on the count.
		ctr, _ := strconv.Atoi(direct.Get(ctx, "ctr").Val())
		want, _ := strconv.Atoi(c.ctr)
		if ctr < want {
			t.Fatalf("dropping %s: counter %d, want at least %d", c.drop, ctr, want)
		}
		if err := direct.Set(ctx, "ctr", c.ctr, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if p.Dropped() != 2 {
		t.Fatalf("Dropped = %d, want 2", p.Dropped())
	}
}

// With a fraction, exactly the matching replies are lost (GETs never are),
// and every lost INCR was executed and retried: the counter is the number
// of INCRs plus the number of lost replies.
func TestProxyDropsAFractionOfMatchingReplies(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	direct := newClient(t, &redis.Options{Addr: srv.Addr()})
	c := newClient(t, &redis.Options{Addr: p.Addr(), MaxRetries: 30, MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond})

	p.DropRepliesMatching(0.3, 7, "INCR")
	const n = 60
	for i := range n {
		if _, err := c.Incr(ctx, "ctr").Result(); err != nil {
			t.Fatalf("INCR %d: %v", i, err)
		}
		if err := c.Set(ctx, "k", i, 0).Err(); err != nil {
			t.Fatalf("SET %d: %v", i, err)
		}
		if got, err := c.Get(ctx, "k").Int(); err != nil || got != i {
			t.Fatalf("GET %d = %d, %v", i, got, err)
		}
	}
	p.DropReplies(0, 0)
	ctr, err := direct.Get(ctx, "ctr").Int64()
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Dropped(); d == 0 || d > n || ctr != n+d {
		t.Fatalf("counter %d after %d INCRs with %d lost replies; want %d", ctr, n, d, n+d)
	}
	t.Logf("%d of %d INCR replies lost (fraction 0.3)", p.Dropped(), ctr)
}

// Pause holds commands (in both directions) until Resume: a command with a
// deadline times out; the held bytes are delivered after Resume.
func TestProxyPauseHoldsCommandsUntilResume(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	direct := newClient(t, &redis.Options{Addr: srv.Addr()})
	c := newClient(t, &redis.Options{Addr: p.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	if err := c.Ping(ctx).Err(); err != nil { // a pooled connection, before the pause
		t.Fatal(err)
	}

	p.Pause()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := c.Incr(short, "held").Err()
	cancel()
	if err == nil || short.Err() == nil {
		t.Fatalf("INCR through a paused proxy: %v (context %v); want a timeout", err, short.Err())
	}
	if err := direct.Get(ctx, "held").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("held INCR reached Redis during the pause: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- c.Incr(ctx, "waiting").Err() }()
	select {
	case err := <-done:
		t.Fatalf("INCR completed through a paused proxy: %v", err)
	case <-time.After(100 * time.Millisecond): // an observation window, not synchronisation
	}
	p.Resume()
	if err := <-done; err != nil { // bounded by ctx
		t.Fatalf("INCR after Resume: %v", err)
	}
	// The INCR whose client gave up was held, not lost: it arrives now.
	if err := waitFor(ctx, func() bool { return direct.Get(ctx, "held").Val() == "1" }); err != nil {
		t.Fatalf("held INCR not delivered after Resume: %v", err)
	}
}

// Cut closes current connections (clients reconnect); Refuse(true) closes
// new ones until Refuse(false).
func TestProxyCutAndRefuse(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	c := newClient(t, &redis.Options{Addr: p.Addr(), MaxRetries: -1})

	raw, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, func() bool { return p.Conns() == 2 }); err != nil {
		t.Fatalf("Conns = %d, want 2", p.Conns())
	}
	p.Cut()
	if p.Conns() != 0 {
		t.Fatalf("Conns after Cut = %d", p.Conns())
	}
	_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read on a cut connection: %v, want EOF", err)
	}
	if err := c.Ping(ctx).Err(); err != nil { // a new connection (a dead pooled one is discarded or fails)
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING after Cut: %v", err)
		}
	}

	p.Refuse(true)
	p.Cut()
	if err := c.Ping(ctx).Err(); err == nil {
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("PING through a refusing proxy succeeded")
		}
	}
	p.Refuse(false)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Refuse(false): %v", err)
	}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
