package jtiguard_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jtiguard/jtiguard"
)

// exampleSetup builds what a token server and an API server share: one key
// set, one store, an issuer and a verifier. The fixed clock, key seed and
// jti source only make the printed output stable; real code leaves Now and
// Rand unset and loads its key from a secret store.
func exampleSetup() (*jtiguard.Issuer, *jtiguard.Verifier) {
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	key, err := jtiguard.NewKey("2026-11", jtiguard.EdDSA, ed25519.NewKeyFromSeed(make([]byte, 32)))
	if err != nil {
		panic(err)
	}
	keys, err := jtiguard.NewKeySet(key)
	if err != nil {
		panic(err)
	}
	store, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: now})
	if err != nil {
		panic(err)
	}
	issuer, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{
		Issuer: "https://auth.example.com",
		Now:    now,
		Rand:   rand.NewChaCha8([32]byte{}),
	})
	if err != nil {
		panic(err)
	}
	verifier, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
		Issuer:    "https://auth.example.com",
		Audience:  "https://api.example.com",
		Store:     store,
		Now:       now,
		ACRLevels: []string{"pwd", "mfa"},
	})
	if err != nil {
		panic(err)
	}
	return issuer, verifier
}

func ExampleIssuer_Access() {
	issuer, verifier := exampleSetup()
	defer verifier.Close()

	token, claims, err := issuer.Access(jtiguard.Claims{
		Subject:  "alice",
		Audience: []string{"https://api.example.com"},
		ClientID: "demo-client",
		Scope:    "read write",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(len(token) > 0, claims.Type, claims.KeyID)
	fmt.Println("jti:", claims.ID)
	fmt.Println("expires:", claims.ExpiresAt.UTC().Format(time.TimeOnly))
	// Output:
	// true at+jwt 2026-11
	// jti: 2Yd-zm02iqwab0GexifHaw
	// expires: 12:05:00
}

func ExampleVerifier_Verify() {
	issuer, verifier := exampleSetup()
	defer verifier.Close()
	token, _, _ := issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}, Scope: "read"})

	claims, err := verifier.Verify(context.Background(), token)
	if err != nil {
		panic(err)
	}
	fmt.Println(claims.Subject, claims.HasScope("read"), claims.HasScope("write"))

	// Any change to the token is refused, with a reason an HTTP layer maps
	// to 401 invalid_token.
	_, err = verifier.Verify(context.Background(), token+"x")
	var e *jtiguard.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, errors.Is(err, jtiguard.ErrInvalidToken))
	}
	// Output:
	// alice true false
	// 401 invalid_token true
}

func ExampleVerifier_Revoke() {
	issuer, verifier := exampleSetup()
	defer verifier.Close()
	ctx := context.Background()
	token, _, _ := issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}})

	if err := verifier.Revoke(ctx, token); err != nil {
		panic(err)
	}
	_, err := verifier.Verify(ctx, token)
	fmt.Println(errors.Is(err, jtiguard.ErrRevoked), err)
	// Output:
	// true jtiguard: token revoked
}

func ExampleVerifier_Consume() {
	issuer, verifier := exampleSetup()
	defer verifier.Close()
	ctx := context.Background()
	link, _, _ := issuer.OneTime(jtiguard.Claims{
		Subject:  "alice",
		Audience: []string{"https://api.example.com"},
		Purpose:  "confirm-email",
	})

	_, err := verifier.Consume(ctx, link, "delete-account")
	fmt.Println("other purpose:", err)
	claims, err := verifier.Consume(ctx, link, "confirm-email")
	fmt.Println("first use:", claims.Subject, err)
	_, err = verifier.Consume(ctx, link, "confirm-email")
	fmt.Println("second use:", err)
	_, err = verifier.Verify(ctx, link)
	fmt.Println("as access token:", err)
	// Output:
	// other purpose: jtiguard: token issued for another purpose
	// first use: alice <nil>
	// second use: jtiguard: token already used
	// as access token: jtiguard: wrong token type
}

func exampleSessions() (*jtiguard.Sessions, *jtiguard.Verifier) {
	issuer, verifier := exampleSetup()
	sessions, err := jtiguard.NewSessions(issuer, verifier, jtiguard.SessionConfig{})
	if err != nil {
		panic(err)
	}
	return sessions, verifier
}

// A refresh token works once. Presenting it again is reuse: the whole
// session family is revoked, and its access tokens with it.
func ExampleSessions_Refresh() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	ctx := context.Background()

	first, err := sessions.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "demo-client", ACR: "pwd"})
	if err != nil {
		panic(err)
	}
	second, err := sessions.Refresh(ctx, first.RefreshToken)
	fmt.Println("refresh:", err, second.Access.Session == first.Access.Session)

	// A client that lost the response retries within the grace window (10 s
	// by default) and gets the same successor, not a new one.
	retry, err := sessions.Refresh(ctx, first.RefreshToken)
	fmt.Println("retry:", err, retry.RefreshToken == second.RefreshToken)

	third, _ := sessions.Refresh(ctx, second.RefreshToken)
	// An attacker (or a confused client) presents an older token: reuse.
	_, err = sessions.Refresh(ctx, first.RefreshToken)
	fmt.Println("replay:", err)
	_, err = verifier.Verify(ctx, third.AccessToken)
	fmt.Println("the newest access token:", errors.Is(err, jtiguard.ErrRefreshReused))
	// Output:
	// refresh: <nil> true
	// retry: <nil> true
	// replay: jtiguard: refresh token reused: session revoked
	// the newest access token: true
}

// After a second factor, Renew moves the session to a new generation: tokens
// minted before it stop working, and routes that need "mfa" accept the new
// ones.
func ExampleSessions_Renew() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	ctx := context.Background()
	admin := jtiguard.Requirement{ACR: "mfa"}

	pwd, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice", ACR: "pwd"})
	claims, _ := verifier.Verify(ctx, pwd.AccessToken)
	fmt.Println("before MFA:", verifier.Require(&claims, admin))

	mfa, err := sessions.Renew(ctx, pwd.AccessToken, jtiguard.Change{ACR: "mfa", AMR: []string{"pwd", "otp"}})
	if err != nil {
		panic(err)
	}
	claims, _ = verifier.Verify(ctx, mfa.AccessToken)
	fmt.Println("after MFA:", verifier.Require(&claims, admin))
	_, err = verifier.Verify(ctx, pwd.AccessToken)
	fmt.Println("the pre-MFA token:", err)
	// Output:
	// before MFA: jtiguard: insufficient user authentication
	// after MFA: <nil>
	// the pre-MFA token: jtiguard: token superseded by a change to its session
}

func ExampleSessions_LogoutAll() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	ctx := context.Background()

	laptop, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice"})
	phone, _ := sessions.Login(ctx, jtiguard.Login{Subject: "alice"})
	bob, _ := sessions.Login(ctx, jtiguard.Login{Subject: "bob"})

	n, err := sessions.LogoutAll(ctx, "alice")
	fmt.Println("ended:", n, err)
	for name, p := range map[string]*jtiguard.TokenPair{"laptop": laptop, "phone": phone} {
		_, err := verifier.Verify(ctx, p.AccessToken)
		fmt.Println(name, errors.Is(err, jtiguard.ErrSessionEnded))
	}
	_, err = verifier.Verify(ctx, bob.AccessToken)
	fmt.Println("bob:", err)
	// Unordered output:
	// ended: 2 <nil>
	// laptop true
	// phone true
	// bob: <nil>
}

// Custom claims, such as roles and a tenant, ride in every token of a
// session: refreshes carry them, Renew changes them, and DecodeExtra reads
// them into the application's own struct. They never stand in for a
// registered claim.
func ExampleLogin_custom() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	ctx := context.Background()
	type appClaims struct {
		Roles  []string `json:"roles"`
		Tenant string   `json:"tenant"`
	}

	pair, err := sessions.Login(ctx, jtiguard.Login{
		Subject: "alice",
		Extra: map[string]json.RawMessage{
			"roles":  json.RawMessage(`["viewer"]`),
			"tenant": json.RawMessage(`"acme"`),
		},
	})
	if err != nil {
		panic(err)
	}
	pair, _ = sessions.Refresh(ctx, pair.RefreshToken)
	claims, _ := verifier.Verify(ctx, pair.AccessToken)
	var app appClaims
	if err := claims.DecodeExtra(&app); err != nil {
		panic(err)
	}
	fmt.Println("after refresh:", claims.Subject, app.Tenant, app.Roles)

	// A role change: the new custom claims replace the old ones, and tokens
	// minted before it are superseded.
	pair, err = sessions.Renew(ctx, pair.AccessToken, jtiguard.Change{Extra: map[string]json.RawMessage{
		"roles":  json.RawMessage(`["viewer","admin"]`),
		"tenant": json.RawMessage(`"acme"`),
	}})
	if err != nil {
		panic(err)
	}
	claims, _ = verifier.Verify(ctx, pair.AccessToken)
	app = appClaims{}
	_ = claims.DecodeExtra(&app)
	fmt.Println("after renew:", app.Tenant, app.Roles)

	_, err = sessions.Login(ctx, jtiguard.Login{Subject: "mallory", Extra: map[string]json.RawMessage{"Sub": json.RawMessage(`"alice"`)}})
	fmt.Println(err)
	// Output:
	// after refresh: alice acme [viewer]
	// after renew: acme [viewer admin]
	// jtiguard: invalid configuration: custom claim "Sub" has the name of a registered claim
}
