package redisstore_test

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

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

// roundTrips counts the round trips of the store's operations: each
// script sent, a pipeline counting as one round trip per node it reaches.
// What the store does in the background (its health checks every second,
// reading the deployment's lease) is not counted: it runs beside an
// operation, not in it.
type roundTrips struct{ n atomic.Int64 }

func isScript(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "script":
		return true
	}
	return false
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isScript(cmd) {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if isScript(c) {
				r.n.Add(1)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// count returns the round trips fn makes.
func (r *roundTrips) count(fn func()) int64 {
	before := r.n.Load()
	fn()
	return r.n.Load() - before
}
