package redisstore_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Real redis-server processes on free loopback ports, started by the tests
// and stopped when they end. Without redis-server the tests skip, unless CI
// (or JTIGUARD_REQUIRE_REDIS) says Redis is required: then they fail.

func redisBinaries(t testing.TB) (server, cli string) {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		msg := "redis-server and redis-cli not found: install the Debian package redis-server to run the Redis tests"
		if os.Getenv("CI") != "" || os.Getenv("JTIGUARD_REQUIRE_REDIS") != "" {
			t.Fatal(msg + " (required here)")
		}
		t.Skip(msg)
	}
	return server, cli
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type redisServer struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

func (r *redisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// startRedis starts a redis-server with no persistence unless extra asks.
func startRedis(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	bin, _ := redisBinaries(t)
	r := &redisServer{t: t, bin: bin, port: freePort(t), dir: t.TempDir()}
	r.args = append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning",
	}, extra...)
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) start() {
	r.t.Helper()
	r.mu.Lock()
	r.log = &bytes.Buffer{}
	r.cmd = exec.Command(r.bin, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	require.NoError(r.t, r.cmd.Start())
	r.mu.Unlock()
	waitReady(r.t, r.Addr())
}

// stop kills the server (as a crash would) and waits for it.
func (r *redisServer) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// restart stops the server and starts it again on the same port and
// directory: empty unless it persisted its data.
func (r *redisServer) restart() {
	r.t.Helper()
	r.stop()
	r.start()
}

// waitReady polls until the server answers PING, for at most 10 seconds.
func waitReady(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis at %s not ready: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type redisCluster struct {
	nodes []*redisServer
}

func (c *redisCluster) Addrs() []string {
	var a []string
	for _, n := range c.nodes {
		a = append(a, n.Addr())
	}
	return a
}

// startCluster starts three primaries and joins them into a cluster.
func startCluster(t testing.TB) *redisCluster {
	t.Helper()
	_, cli := redisBinaries(t)
	c := &redisCluster{}
	for range 3 {
		c.nodes = append(c.nodes, startRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	require.NoError(t, err, "redis-cli --cluster create: %s", out)
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.nodes {
		rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		for {
			info, err := rc.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ready on %s: %v %s", n.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		rc.Close()
	}
	return c
}

// dropFirstReply is a TCP proxy on loopback that forwards everything, except
// that it swallows the server's reply to the first command containing
// match and then closes that connection: the command ran, but the client
// never learns it and retries it. It is how a reply gets lost on a real
// network, not a fake of Redis.
type dropFirstReply struct {
	l       net.Listener
	target  string
	match   []byte
	armed   atomic.Bool
	dropped atomic.Int32
	wg      sync.WaitGroup
}

func newDropFirstReply(t testing.TB, target, match string) *dropFirstReply {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &dropFirstReply{l: l, target: target, match: []byte(strings.ToLower(match))}
	p.armed.Store(true)
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		l.Close()
		p.wg.Wait()
	})
	return p
}

func (p *dropFirstReply) Addr() string { return p.l.Addr().String() }

func (p *dropFirstReply) serve() {
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		var pending atomic.Bool // this connection sent the command to drop
		p.wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := client.Read(buf)
				if n > 0 {
					if p.armed.Load() && bytes.Contains(bytes.ToLower(buf[:n]), p.match) && p.armed.CompareAndSwap(true, false) {
						pending.Store(true)
					}
					if _, werr := server.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			server.Close()
		})
		p.wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					if pending.Load() {
						// The command ran on the server; its reply is lost.
						p.dropped.Add(1)
						break
					}
					if _, werr := client.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			client.Close()
			server.Close()
		})
	}
}

// roundTrips counts the commands sent to Redis, a pipeline counting as one
// round trip per node it reaches.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// count returns the round trips fn makes.
func (r *roundTrips) count(fn func()) int64 {
	before := r.n.Load()
	fn()
	return r.n.Load() - before
}

// removeDump deletes the server's saved data, so that a restart is empty.
func removeDump(r *redisServer) error {
	err := os.Remove(r.dir + "/dump.rdb")
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
