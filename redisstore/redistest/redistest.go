// Package redistest starts real redis-server processes for tests: on free
// loopback ports, standalone or as a three-primary cluster, stopped when the
// test ends. Without redis-server and redis-cli (Debian package
// redis-server) it skips the test, unless the environment says Redis is
// required (CI or JTIGUARD_REQUIRE_REDIS set): then it fails it.
package redistest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func binaries(t testing.TB) (server, cli string) {
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
	return freePorts(t, 1)[0]
}

// freePorts returns n distinct free loopback ports (all held open at once
// while they are chosen, so that none is returned twice).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	bin  string
	port int
	dir  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// Addr is the server's host:port.
func (r *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Port is the server's port.
func (r *Server) Port() int { return r.port }

// Start starts a redis-server with no persistence unless extra (more
// redis-server arguments) asks for it.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	return startOn(t, 0, extra...)
}

// startOn is Start on the given port (0: a free one).
func startOn(t testing.TB, port int, extra ...string) *Server {
	t.Helper()
	bin, _ := binaries(t)
	if port == 0 {
		port = freePort(t)
	}
	r := &Server{t: t, bin: bin, port: port, dir: t.TempDir()}
	r.args = append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning",
	}, extra...)
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func (r *Server) start() {
	r.t.Helper()
	r.mu.Lock()
	r.log = &bytes.Buffer{}
	r.cmd = exec.Command(r.bin, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.mu.Unlock()
	waitReady(r.t, r.Addr())
}

// Stop kills the server (as a crash would) and waits for it.
func (r *Server) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Restart stops the server and starts it again on the same port and
// directory: empty unless it persisted its data.
func (r *Server) Restart() {
	r.t.Helper()
	r.Stop()
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

// StartCluster starts three primaries and joins them into a cluster.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	return startCluster(t, 0)
}

// RemoveData deletes the server's saved data, so that a restart is empty.
func (r *Server) RemoveData() error {
	err := os.Remove(r.dir + "/dump.rdb")
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
