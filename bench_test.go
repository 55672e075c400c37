package jtiguard_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/jtiguard/jtiguard"
)

// benchSetup returns keys for alg, an issuer and a factory of verifiers,
// all on a fixed clock.
func benchSetup(b *testing.B, alg string) (*jtiguard.KeySet, *jtiguard.Issuer, func() *jtiguard.Verifier, func() time.Time) {
	b.Helper()
	now := func() time.Time { return t0 }
	k, err := jtiguard.GenerateKey("bench", alg)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := jtiguard.NewKeySet(k)
	if err != nil {
		b.Fatal(err)
	}
	store, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: now})
	if err != nil {
		b.Fatal(err)
	}
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer, Now: now})
	if err != nil {
		b.Fatal(err)
	}
	newVerifier := func() *jtiguard.Verifier {
		v, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: store, Now: now})
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	return keys, iss, newVerifier, now
}

func benchToken(b *testing.B, iss *jtiguard.Issuer) string {
	tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, ClientID: "demo-client", Scope: "read write", ACR: "pwd", AMR: []string{"pwd"}})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

func nsPerOp(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }

// BenchmarkMemoryStore measures the store's two hot operations with 1e6
// live entries: a revocation check (hit and miss) and a consume (a new jti
// inserted if absent). The store is in steady state: it held 3e6 more
// entries that have expired and been swept, as on a server where tokens
// expire as fast as new ones arrive, so inserts do not measure map growth.
func BenchmarkMemoryStore(b *testing.B) {
	const live, spare = 1_000_000, 3_000_000
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 2 * (live + spare), Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	newRef := func(ttl time.Duration) store.TokenRef {
		var id jtiguard.JTI
		for j := range id {
			id[j] = byte(r.Uint32())
		}
		return store.TokenRef{ID: id, IssuedAt: t0, ExpiresAt: t0.Add(ttl)}
	}
	refs := make([]store.TokenRef, live)
	for i := range refs {
		refs[i] = newRef(time.Hour)
		if err := s.Revoke(ctx, refs[i]); err != nil {
			b.Fatal(err)
		}
	}
	for range spare {
		if err := s.Revoke(ctx, newRef(time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	clk.Advance(2 * time.Second)
	if n := s.Sweep(); n != live {
		b.Fatalf("%d entries after sweep, want %d", n, live)
	}
	b.Run("check-revoked", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if st, _ := s.Check(ctx, refs[i%live]); st != store.Revoked {
				b.Fatal("not revoked")
			}
			i += 7919
		}
	})
	b.Run("check-live", func(b *testing.B) {
		ref := store.TokenRef{IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		for b.Loop() {
			ref.ID[1]++
			ref.ID[0]++
			ref.ID[5]++
			if st, _ := s.Check(ctx, ref); st != store.Live {
				b.Fatal("not live")
			}
		}
	})
	b.Run("consume", func(b *testing.B) {
		ref := store.TokenRef{IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		var n uint64
		b.ReportAllocs()
		for b.Loop() {
			n++
			for j := range 8 {
				ref.ID[8+j] = byte(n >> (8 * j))
			}
			ref.ID[0] = byte(n)
			if st, _ := s.Consume(ctx, ref, 1); st != store.Live {
				b.Fatal("not consumed")
			}
		}
	})
}

// BenchmarkSessions measures a refresh (verify the refresh token, one
// compare-and-set on the family, sign two tokens) and what the family check
// adds to a warm verification, on the in-memory store with EdDSA.
func BenchmarkSessions(b *testing.B) {
	_, iss, newVerifier, _ := benchSetup(b, jtiguard.EdDSA)
	v := newVerifier()
	defer v.Close()
	sess, err := jtiguard.NewSessions(iss, v, jtiguard.SessionConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	login := func() *jtiguard.TokenPair {
		p, err := sess.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "demo-client", Scope: "read write", ACR: "pwd", AMR: []string{"pwd"}})
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	b.Run("refresh", func(b *testing.B) {
		p := login()
		b.ReportAllocs()
		for b.Loop() {
			if p, err = sess.Refresh(ctx, p.RefreshToken); err != nil {
				b.Fatal(err)
			}
		}
	})
	ns := map[string]float64{}
	warm := func(name, tok string) {
		b.Run(name, func(b *testing.B) { ns[name] = benchWarm(b, v, tok) })
	}
	warm("verify-warm-no-session", benchToken(b, iss))
	warm("verify-warm-session", login().AccessToken)
	if ns["verify-warm-no-session"] > 0 && ns["verify-warm-session"] > 0 {
		b.Logf("the session check adds %.0f ns to a warm verify", ns["verify-warm-session"]-ns["verify-warm-no-session"])
	}
}

// benchWarm measures verifications of a token the cache holds, and returns
// ns per verification.
func benchWarm(b *testing.B, v *jtiguard.Verifier, tok string) float64 {
	ctx := context.Background()
	for range 1000 { // let the cache admit the token
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
	return nsPerOp(b)
}
