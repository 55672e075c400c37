package bench

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// redisStore is a store on a loopback redis-server that the benchmark
// starts and stops (skipped, saying so, when redis-server is missing).
func redisStore(b *testing.B) store.Store {
	srv := redistest.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	b.Cleanup(func() { c.Close() })
	s, err := redisstore.New(context.Background(), redisstore.Config{Client: c, MaxClockSkew: 250 * time.Millisecond}) // one machine: a small bound keeps New short
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

// BenchmarkSessions: the session operations, EdDSA, per store. login mints a
// family and two tokens; refresh verifies a refresh token, rotates and mints
// two; consume uses a one-time token; revoke revokes an access token.
func BenchmarkSessions(b *testing.B) {
	ctx := context.Background()
	for _, name := range []string{"memory", "redis"} {
		b.Run(name, func(b *testing.B) {
			s := newSetup(b, jtiguard.EdDSA)
			var store store.Store = s.store
			if name == "redis" {
				store = redisStore(b)
			}
			v := s.verifier(b, store)
			b.Cleanup(v.Close)
			sess, err := jtiguard.NewSessions(s.issuer, v, jtiguard.SessionConfig{})
			if err != nil {
				b.Fatal(err)
			}
			login := jtiguard.Login{Subject: "alice", ClientID: "demo-client", Scope: "read write", ACR: "pwd", AMR: []string{"pwd"}}
			// Each login a user of its own; login-over-cap logs one user in
			// again and again, past the session cap (MaxSessions, 50), so
			// that each login ends the oldest session: on Redis it then
			// waits out the lease, as every operation that kills tokens.
			users := make([]string, 100_000)
			for i := range users {
				users[i] = fmt.Sprintf("user-%d", i)
			}
			b.Run("login", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					l := login
					l.Subject = users[i%len(users)]
					i++
					if _, err := sess.Login(ctx, l); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("login-over-cap", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := sess.Login(ctx, login); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("refresh", func(b *testing.B) {
				p, err := sess.Login(ctx, login)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if p, err = sess.Refresh(ctx, p.RefreshToken); err != nil {
						b.Fatal(err)
					}
				}
			})
			// each runs op on tokens used once each, minting a new batch
			// outside the timer whenever one is used up.
			each := func(b *testing.B, mint func() string, op func(string) error) {
				batch := make([]string, 2048)
				i := len(batch)
				b.ReportAllocs()
				for b.Loop() {
					if i == len(batch) {
						b.StopTimer()
						for j := range batch {
							batch[j] = mint()
						}
						i = 0
						b.StartTimer()
					}
					if err := op(batch[i]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			}
			b.Run("consume", func(b *testing.B) {
				each(b, func() string {
					t, _, err := s.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{audience}, Purpose: "p"})
					if err != nil {
						b.Fatal(err)
					}
					return t
				}, func(t string) error { _, err := v.Consume(ctx, t, "p"); return err })
			})
			b.Run("revoke", func(b *testing.B) {
				each(b, func() string { return s.token(b) }, func(t string) error { return v.Revoke(ctx, t) })
			})
		})
	}
}

func heap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoryPerEntry: the in-memory store's heap per live entry with
// 1e6 of them, for revoked tokens and for session families (B/entry). The
// work is done once; the timed loop is empty.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	for _, kind := range []string{"token", "family"} {
		b.Run(kind, func(b *testing.B) {
			s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 2 * n})
			if err != nil {
				b.Fatal(err)
			}
			before := heap()
			for i := range n {
				id, _ := store.NewJTI(nil)
				if kind == "token" {
					err = s.Revoke(ctx, store.TokenRef{ID: id, ExpiresAt: exp})
				} else {
					rt, _ := store.NewJTI(nil)
					err = s.Begin(ctx, store.Family{ID: id, Subject: subjects[i%len(subjects)], Generation: 1, Refresh: rt, ExpiresAt: exp, IdleTimeout: time.Hour})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			perEntry := float64(heap()-before) / n
			runtime.KeepAlive(s)
			for b.Loop() {
			}
			b.ReportMetric(perEntry, "B/entry")
		})
	}
}

// subjects: a thousand users holding the families.
var subjects = func() []string {
	s := make([]string, 1000)
	for i := range s {
		s[i] = "user-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
	}
	return s
}()
