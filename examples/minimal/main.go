// Command minimal is the smallest complete API server on jtiguard: login and
// refresh (the OAuth token endpoint), a protected route, MFA step-up and
// logout. README.md shows this file verbatim; a test runs it.
package main

import (
	"context"
	"errors"
	"net/http"

	"github.com/jtiguard/jtiguard"
)

func newServer(users map[string]string) http.Handler {
	const iss, aud = "https://auth.example.com", "https://api.example.com"
	keys := must(jtiguard.NewKeySet(must(jtiguard.GenerateKey("", jtiguard.EdDSA)))) // kid: RFC 7638 thumbprint
	verifier := must(jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: iss, Audience: aud}))
	issuer := must(jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: iss}))
	sessions := must(jtiguard.NewSessions(issuer, verifier, jtiguard.SessionConfig{}))
	guard := jtiguard.NewGuard(verifier, jtiguard.GuardConfig{})
	mux := http.NewServeMux()
	mux.Handle("POST /token", &jtiguard.TokenEndpoint{ // password and refresh_token grants
		Sessions: sessions,
		Clients:  func(_ context.Context, id, secret string) bool { return id == "app" && secret == "" },
		Password: func(_ context.Context, _, user, pass, scope string) (jtiguard.Login, error) {
			if want, ok := users[user]; !ok || !jtiguard.SecretsEqual(pass, want) {
				return jtiguard.Login{}, errors.New("bad credentials")
			}
			return jtiguard.Login{Subject: user, Scope: scope, ACR: "pwd"}, nil
		},
	})
	mux.Handle("GET /me", guard.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jtiguard.ClaimsFrom(r.Context())
		_, _ = w.Write([]byte("hello " + c.Subject + " (" + c.ACR + ")"))
	})))
	mux.Handle("POST /mfa", guard.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := guard.Token(r) // check the second factor here, then step the session up:
		pair, err := sessions.Renew(r.Context(), tok, jtiguard.Change{ACR: "mfa"})
		if err != nil {
			guard.WriteError(w, err)
			return
		}
		jtiguard.WriteTokenPair(w, pair) // every token from before is dead now
	})))
	mux.Handle("POST /logout", guard.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := guard.Token(r)
		if err := sessions.Logout(r.Context(), tok); err != nil {
			guard.WriteError(w, err)
		}
	})))
	return mux
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err) // a configuration error, at startup
	}
	return v
}

func main() {
	panic(http.ListenAndServe("127.0.0.1:8081", newServer(map[string]string{"alice": "secret"})))
}
