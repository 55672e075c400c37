package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// go-redis logs some closes of pooled connections (a store's tracking
// connection, closed as a run ends) to the test output, in the middle of
// the benchmark lines that benchstat and benchreport parse.
func init() { redis.SetLogger(quiet{}) }

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// commands counts the commands a client sends (a pipeline counts each).
type commands struct{ n atomic.Int64 }

func (c *commands) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// leased is a Redis store with the given lease (negative: off) on a
// loopback server of its own, and the counter of the commands it sends.
func leased(b *testing.B, lease time.Duration) (*redisstore.Store, *commands) {
	return storeOn(b, redistest.Start(b).Addr(), lease)
}

// storeOn is leased on the server at addr.
func storeOn(b *testing.B, addr string, lease time.Duration) (*redisstore.Store, *commands) {
	cmds := &commands{}
	c := redis.NewClient(&redis.Options{Addr: addr})
	c.AddHook(cmds)
	b.Cleanup(func() { c.Close() })
	s, err := redisstore.New(context.Background(), redisstore.Config{Client: c, MaxClockSkew: 250 * time.Millisecond, Lease: lease})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s, cmds
}

// warmUp verifies tok until a verification sends no command (the store
// answers it locally), for at most 10 s; with the lease off, three times.
func warmUp(b *testing.B, v *jtiguard.Verifier, cmds *commands, tok string, local bool) {
	for start := time.Now(); time.Since(start) < 10*time.Second; {
		before := cmds.n.Load()
		if _, err := v.Verify(context.Background(), tok); err != nil {
			b.Fatal(err)
		}
		if !local || cmds.n.Load() == before {
			return
		}
	}
	b.Fatal("the store never answered locally")
}

// BenchmarkWarm: a token verified again (cache hit), EdDSA, per store:
// memory, Redis with local answers (the default lease) and Redis with the
// lease off (a round trip each). rt/op counts the commands sent to Redis
// per verification.
func BenchmarkWarm(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"memory", "redis-local", "redis-roundtrip"} {
		b.Run(name, func(b *testing.B) {
			s := newSetup(b, jtiguard.EdDSA)
			v := s.verifier(b, nil)
			cmds := &commands{}
			if name != "memory" {
				lease := redisstore.DefaultLease
				if name == "redis-roundtrip" {
					lease = -1
				}
				var st *redisstore.Store
				st, cmds = leased(b, lease)
				v = s.verifier(b, st)
			}
			b.Cleanup(v.Close)
			tok := s.token(b)
			warmUp(b, v, cmds, tok, name == "redis-local")
			settle()
			b.ReportAllocs()
			before := cmds.n.Load()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cmds.n.Load()-before)/float64(b.N), "rt/op")
		})
	}
}

// BenchmarkWarmParallel: BenchmarkWarm from every core at once (run with
// -cpu 1,2), 1,024 users' tokens presented round-robin.
func BenchmarkWarmParallel(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"memory", "redis-local"} {
		b.Run(name, func(b *testing.B) {
			s := newSetup(b, jtiguard.EdDSA)
			v := s.verifier(b, nil)
			cmds := &commands{}
			if name != "memory" {
				var st *redisstore.Store
				st, cmds = leased(b, redisstore.DefaultLease)
				v = s.verifier(b, st)
			}
			b.Cleanup(v.Close)
			toks := make([]string, 1024)
			for i := range toks {
				toks[i] = s.token(b)
				warmUp(b, v, cmds, toks[i], name != "memory")
			}
			settle()
			b.ReportAllocs()
			b.ResetTimer()
			before := cmds.n.Load()
			var next atomic.Uint32
			b.RunParallel(func(pb *testing.PB) {
				i := next.Add(97)
				for pb.Next() {
					i++
					if _, err := v.Verify(ctx, toks[i%uint32(len(toks))]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(cmds.n.Load()-before)/float64(b.N), "rt/op")
		})
	}
}

// onRedis is an EdDSA setup whose verifier uses a Redis store with the
// default lease, or with the lease off.
func onRedis(b *testing.B, lease bool) (*setup, *jtiguard.Verifier, *commands) {
	l := redisstore.DefaultLease
	if !lease {
		l = -1
	}
	s := newSetup(b, jtiguard.EdDSA)
	st, cmds := leased(b, l)
	v := s.verifier(b, st)
	b.Cleanup(v.Close)
	return s, v, cmds
}

// BenchmarkRepeated64: 64 callers, each presenting its own token again and
// again, on Redis with the lease on and off: cmds/op is the commands sent
// to Redis per verification (batched checks count one each).
func BenchmarkRepeated64(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"lease", "no-lease"} {
		b.Run(name, func(b *testing.B) {
			s, v, cmds := onRedis(b, name == "lease")
			toks := make([]string, 64)
			for i := range toks {
				toks[i] = s.token(b)
				warmUp(b, v, cmds, toks[i], name == "lease")
			}
			settle()
			b.ReportAllocs()
			before := cmds.n.Load()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			for _, tok := range toks {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						if _, err := v.Verify(ctx, tok); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(cmds.n.Load()-before)/float64(b.N), "cmds/op")
		})
	}
}

// BenchmarkChurn: 4,096 users' tokens verified in turn while another
// process logs a new user in after every 64 verifications, on Redis with
// the lease on and off. Each login writes its bucket (one of 256) and the
// users' tokens are spread over all of them: cmds/op is the commands the
// verifier sends per verification (the other process's are not counted).
func BenchmarkChurn(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"lease", "no-lease"} {
		b.Run(name, func(b *testing.B) {
			lease := redisstore.DefaultLease
			if name == "no-lease" {
				lease = -1
			}
			addr := redistest.Start(b).Addr()
			st, cmds := storeOn(b, addr, lease)
			other, _ := storeOn(b, addr, lease)
			s := newSetup(b, jtiguard.EdDSA)
			v, ov := s.verifier(b, st), s.verifier(b, other)
			b.Cleanup(v.Close)
			b.Cleanup(ov.Close)
			sess, err := jtiguard.NewSessions(s.issuer, ov, jtiguard.SessionConfig{})
			if err != nil {
				b.Fatal(err)
			}
			toks := make([]string, 4096)
			for i := range toks {
				toks[i], _, err = s.issuer.Access(jtiguard.Claims{Subject: fmt.Sprintf("user-%d", i), Audience: []string{audience}})
				if err != nil {
					b.Fatal(err)
				}
				warmUp(b, v, cmds, toks[i], lease > 0)
			}
			settle()
			before := cmds.n.Load()
			i := 0
			for b.Loop() {
				if i%64 == 63 {
					if _, err := sess.Login(ctx, jtiguard.Login{Subject: fmt.Sprintf("newcomer-%d", i)}); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := v.Verify(ctx, toks[i%len(toks)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(cmds.n.Load()-before)/float64(b.N), "cmds/op")
		})
	}
}

// BenchmarkRevoke: what a revocation costs on Redis with the lease on (it
// returns once the lease has passed) and off; p50 and p99 in
// milliseconds.
func BenchmarkRevoke(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"lease", "no-lease"} {
		b.Run(name, func(b *testing.B) {
			s, v, _ := onRedis(b, name == "lease")
			var took []time.Duration
			for b.Loop() {
				b.StopTimer()
				tok := s.token(b)
				b.StartTimer()
				start := time.Now()
				if err := v.Revoke(ctx, tok); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			ms := func(q float64) float64 {
				return float64(took[min(len(took)-1, int(q*float64(len(took))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
		})
	}
}
