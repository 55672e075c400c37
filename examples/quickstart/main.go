// Command quickstart walks through jtiguard's core: it issues an access
// token, verifies it, revokes it, and uses a one-time token twice.
// `make run-quickstart` runs it; `make run` runs the token server,
// examples/passwordflow.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/jtiguard/jtiguard"
)

const (
	issuerURL = "https://auth.example.com"
	apiURL    = "https://api.example.com"
)

func main() {
	if err := run(context.Background()); err != nil {
		slog.Error("quickstart failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	key, err := jtiguard.GenerateKey("quickstart-1", jtiguard.EdDSA)
	if err != nil {
		return err
	}
	keys, err := jtiguard.NewKeySet(key)
	if err != nil {
		return err
	}
	store, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
	if err != nil {
		return err
	}
	issuer, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: issuerURL})
	if err != nil {
		return err
	}
	verifier, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: issuerURL, Audience: apiURL, Store: store})
	if err != nil {
		return err
	}
	defer verifier.Close()

	jwks, err := keys.JWKS()
	if err != nil {
		return err
	}
	fmt.Printf("JWKS:            %s\n", jwks)

	token, claims, err := issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{apiURL}, Scope: "read"})
	if err != nil {
		return err
	}
	// Log the jti, never the token.
	fmt.Printf("issued:          access token jti=%s (%d bytes), expires %s\n", claims.ID, len(token), claims.ExpiresAt.Format("15:04:05"))

	got, err := verifier.Verify(ctx, token)
	if err != nil {
		return err
	}
	fmt.Printf("verified:        sub=%s scope=%q\n", got.Subject, got.Scope)

	tampered := token[:len(token)-1] + "A"
	if token[len(token)-1] == 'A' {
		tampered = token[:len(token)-1] + "B"
	}
	_, err = verifier.Verify(ctx, tampered)
	fmt.Printf("tampered:        %v\n", err)

	if err := verifier.Revoke(ctx, token); err != nil {
		return err
	}
	_, err = verifier.Verify(ctx, token)
	fmt.Printf("after revoke:    %v\n", err)
	if !errors.Is(err, jtiguard.ErrRevoked) {
		return errors.New("revoked token was accepted")
	}

	link, _, err := issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{apiURL}, Purpose: "confirm-email"})
	if err != nil {
		return err
	}
	_, err = verifier.Consume(ctx, link, "confirm-email")
	fmt.Printf("one-time, 1st:   err=%v\n", err)
	if err != nil {
		return err
	}
	_, err = verifier.Consume(ctx, link, "confirm-email")
	fmt.Printf("one-time, 2nd:   %v\n", err)
	if !errors.Is(err, jtiguard.ErrReplayed) {
		return errors.New("one-time token was accepted twice")
	}
	return nil
}
