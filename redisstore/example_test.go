package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
)

// Two replicas of an API share one Redis: a token revoked through one is
// refused by the other at once, and a one-time token works once across
// both. Each replica has its own client and Store; they agree on the key
// set (load the same keys from a secret store), the Prefix, the issuer and
// the audience.
//
// go test compiles this example but does not run it: it needs a Redis at
// 127.0.0.1:6379, and an Example cannot start one (redistest.Start needs a
// testing.TB). The tests run the same flows on real redis-server processes.
func Example() {
	ctx := context.Background()
	key, err := jtiguard.GenerateKey("2026-11", jtiguard.EdDSA)
	if err != nil {
		log.Fatal(err)
	}
	keys, _ := jtiguard.NewKeySet(key)
	issuer, _ := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: "https://auth.example.com"})

	replica := func() *jtiguard.Verifier {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true}) // or NewFailoverClient, NewClusterClient
		store, err := redisstore.New(ctx, redisstore.Config{Client: rdb, Prefix: "myapi:"})
		if err != nil {
			log.Fatal(err) // Redis unreachable, too old, or its clock too far off
		}
		v, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
			Issuer: "https://auth.example.com", Audience: "https://api.example.com", Store: store,
		})
		if err != nil {
			log.Fatal(err)
		}
		return v // on shutdown: v.Close(), store.Close(), rdb.Close()
	}
	a, b := replica(), replica()

	token, _, _ := issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}})
	_, err = b.Verify(ctx, token)
	fmt.Println("replica b:", err)
	if err := a.Revoke(ctx, token); err != nil {
		log.Fatal(err) // ErrStoreUnavailable: the revocation is not recorded; retry
	}
	_, err = b.Verify(ctx, token)
	fmt.Println("replica b after a revoked it:", errors.Is(err, jtiguard.ErrRevoked))

	link, _, _ := issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}, Purpose: "confirm-email"})
	_, errA := a.Consume(ctx, link, "confirm-email")
	_, errB := b.Consume(ctx, link, "confirm-email")
	fmt.Println("one-time token:", errA, errors.Is(errB, jtiguard.ErrReplayed))
	// With a Redis at 127.0.0.1:6379 this prints:
	//
	//	replica b: <nil>
	//	replica b after a revoked it: true
	//	one-time token: <nil> true
}
