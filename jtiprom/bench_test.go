package jtiprom_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/jtiprom"
)

// warmVerifier returns a Verifier on a memory store and an access token it
// has verified once, so that every later Verify is a cache hit and one
// store read: the warm path.
func warmVerifier(b *testing.B, obs *jtiguard.Observer) (*jtiguard.Verifier, string) {
	b.Helper()
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	key, err := jtiguard.GenerateKey("bench", jtiguard.EdDSA)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := jtiguard.NewKeySet(key)
	if err != nil {
		b.Fatal(err)
	}
	mem, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: now})
	if err != nil {
		b.Fatal(err)
	}
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: "https://auth.example.com", Now: now})
	if err != nil {
		b.Fatal(err)
	}
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: "https://auth.example.com", Audience: "https://api.example.com", Store: mem, Now: now, Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ver.Close)
	tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}, ClientID: "demo-client", Scope: "read write", ACR: "pwd", AMR: []string{"pwd"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := ver.Verify(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	return ver, tok
}

// BenchmarkWarmVerify measures a warm Verify (the same token again and
// again: a cache hit and one memory store read) without an Observer and
// with this package's, on one goroutine and on all. The difference of the
// two ns/op is what the Prometheus adapter adds per verification
// (docs/observability.md has the figures).
func BenchmarkWarmVerify(b *testing.B) {
	for _, tc := range []struct {
		name string
		obs  func(b *testing.B) *jtiguard.Observer
	}{
		{"observer=none", func(*testing.B) *jtiguard.Observer { return nil }},
		{"observer=prometheus", func(b *testing.B) *jtiguard.Observer {
			obs, err := jtiprom.New(prometheus.NewRegistry(), jtiprom.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return obs
		}},
	} {
		b.Run(tc.name+"/serial", func(b *testing.B) {
			ver, tok := warmVerifier(b, tc.obs(b))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ver.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			ver, tok := warmVerifier(b, tc.obs(b))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := ver.Verify(ctx, tok); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
