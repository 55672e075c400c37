package jtiguard_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/jtiguard/jtiguard"
)

// BenchmarkMemoryStoreCheck measures Check of a live token, the store's
// part of every warm verification, in a store holding 1e6 entries (990,000
// revoked tokens and 10,000 families): a token of no session (one lookup
// that misses) and a token of a session (that miss and its family's
// lookup). The sequential runs present one token again and again, as a
// client does; the parallel runs give each goroutine its own token, so
// with -cpu 2 they show whether readers slow each other down (they must
// not: a Check writes no shared memory). The clock is lock-free, as
// time.Now is.
func BenchmarkMemoryStoreCheck(b *testing.B) {
	const revoked, families = 990_000, 10_000
	ctx := context.Background()
	now := func() time.Time { return t0 }
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 2 * (revoked + families), Now: now})
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	newID := func() jtiguard.JTI {
		var id jtiguard.JTI
		for j := range id {
			id[j] = byte(r.Uint32())
		}
		return id
	}
	for range revoked {
		if err := s.Revoke(ctx, store.TokenRef{ID: newID(), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	sids := make([]jtiguard.JTI, families)
	for i := range sids {
		sids[i] = newID()
		f := store.Family{ID: sids[i], Subject: "user", Generation: 1, Refresh: newID(), ExpiresAt: t0.Add(time.Hour), IdleTimeout: time.Hour}
		if err := s.Begin(ctx, f); err != nil {
			b.Fatal(err)
		}
	}
	if n := s.Len(); n != revoked+families {
		b.Fatalf("%d entries, want %d", n, revoked+families)
	}
	var next atomic.Uint64
	// token returns a ref to a live token not yet presented, of a family
	// if session.
	token := func(session bool) store.TokenRef {
		i := next.Add(1)
		var id jtiguard.JTI
		for j := range 8 {
			id[j] = byte(i >> (8 * j))
			id[8+j] = byte((i * 0x9E3779B97F4A7C15) >> (8 * j))
		}
		t := store.TokenRef{ID: id, Subject: "user", IssuedAt: t0, ExpiresAt: t0.Add(5 * time.Minute)}
		if session {
			t.Session, t.Generation = sids[i%families], 1
		}
		return t
	}
	for _, session := range []bool{false, true} {
		name := "no-session"
		if session {
			name = "session"
		}
		b.Run(name, func(b *testing.B) {
			t := token(session)
			b.ReportAllocs()
			for b.Loop() {
				if st, err := s.Check(ctx, t); st != store.Live || err != nil {
					b.Fatal(st, err)
				}
			}
		})
		b.Run(name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				t := token(session)
				for pb.Next() {
					if st, err := s.Check(ctx, t); st != store.Live || err != nil {
						b.Fatal(st, err)
					}
				}
			})
		})
	}
}
