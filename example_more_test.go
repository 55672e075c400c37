package jtiguard_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/jtiguard/jtiguard"
)

// The quick start: one key set and one store shared by an issuer (the token
// server) and a verifier (the API). A verified token is accepted until it
// expires or is revoked; a one-time token is accepted once.
func Example() {
	ctx := context.Background()
	key, err := jtiguard.GenerateKey("2026-11", jtiguard.EdDSA) // load yours from a secret store
	if err != nil {
		log.Fatal(err)
	}
	keys, _ := jtiguard.NewKeySet(key)
	store, _ := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
	issuer, _ := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: "https://auth.example.com"})
	verifier, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
		Issuer:   "https://auth.example.com",
		Audience: "https://api.example.com",
		Store:    store,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer verifier.Close()

	token, claims, err := issuer.Access(jtiguard.Claims{
		Subject: "alice", Audience: []string{"https://api.example.com"}, Scope: "read",
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = claims.ID // log the jti, never the token

	c, err := verifier.Verify(ctx, token)
	fmt.Println("verified:", c.Subject, err)

	// Revoked: refused from now until it expires, by every verifier sharing
	// the store, with an *Error that an HTTP layer answers 401.
	if err := verifier.Revoke(ctx, token); err != nil {
		log.Fatal(err)
	}
	_, err = verifier.Verify(ctx, token)
	var e *jtiguard.Error
	if errors.As(err, &e) {
		fmt.Println("after revoke:", e.Status, e.Code, err)
	}

	link, _, _ := issuer.OneTime(jtiguard.Claims{
		Subject: "alice", Audience: []string{"https://api.example.com"}, Purpose: "confirm-email",
	})
	_, err = verifier.Consume(ctx, link, "confirm-email")
	fmt.Println("first use:", err)
	_, err = verifier.Consume(ctx, link, "confirm-email")
	fmt.Println("second use:", err)
	// Output:
	// verified: alice <nil>
	// after revoke: 401 invalid_token jtiguard: token revoked
	// first use: <nil>
	// second use: jtiguard: token already used
}

// exampleServe serves r with h and prints the status, the challenge, if any,
// and the body.
func exampleServe(h http.Handler, r *http.Request) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	fmt.Println(r.Method, r.URL.Path, rec.Code)
	if ch := rec.Header().Get("WWW-Authenticate"); ch != "" {
		fmt.Println("  WWW-Authenticate:", ch)
	}
	if body := strings.TrimSpace(rec.Body.String()); body != "" {
		fmt.Println(" ", body)
	}
}

// A Guard protects routes: Authenticate wants a valid access token,
// Require more of it (a scope, a stronger authentication). Everything else
// is answered by the Guard itself, with the RFC 6750 or RFC 9470 challenge.
func ExampleGuard() {
	issuer, verifier := exampleSetup()
	defer verifier.Close()

	guard := jtiguard.NewGuard(verifier, jtiguard.GuardConfig{Realm: "api"})
	me := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jtiguard.ClaimsFrom(r.Context())
		fmt.Fprintln(w, "hello", c.Subject)
	})
	mux := http.NewServeMux()
	mux.Handle("GET /me", guard.Authenticate(me))
	mux.Handle("GET /reports", guard.Require(jtiguard.Requirement{Scopes: []string{"reports"}})(me))
	mux.Handle("GET /admin", guard.Require(jtiguard.Requirement{ACR: "mfa"})(me))

	token, _, _ := issuer.Access(jtiguard.Claims{
		Subject: "alice", Audience: []string{"https://api.example.com"}, Scope: "read", ACR: "pwd",
	})
	get := func(path, token string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return r
	}
	exampleServe(mux, get("/me", ""))
	exampleServe(mux, get("/me", token))
	exampleServe(mux, get("/reports", token))
	exampleServe(mux, get("/admin", token))
	exampleServe(mux, get("/me", token+"x")) // a tampered token
	// Output:
	// GET /me 401
	//   WWW-Authenticate: Bearer realm="api"
	// GET /me 200
	//   hello alice
	// GET /reports 403
	//   WWW-Authenticate: Bearer realm="api", error="insufficient_scope", error_description="insufficient scope", scope="reports"
	//   {"error":"insufficient_scope","error_description":"insufficient scope"}
	// GET /admin 401
	//   WWW-Authenticate: Bearer realm="api", error="insufficient_user_authentication", error_description="insufficient user authentication", acr_values="mfa"
	//   {"error":"insufficient_user_authentication","error_description":"insufficient user authentication"}
	// GET /me 401
	//   WWW-Authenticate: Bearer realm="api", error="invalid_token", error_description="malformed token"
	//   {"error":"invalid_token","error_description":"malformed token"}
}

// A token endpoint for the password grant: the client authenticates with
// HTTP Basic, Password checks the user, and every success starts a new
// session family. Responses are never cached.
func ExampleTokenEndpoint() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()

	endpoint := &jtiguard.TokenEndpoint{
		Sessions: sessions,
		Clients: func(_ context.Context, id, secret string) bool {
			return id == "demo-client" && jtiguard.SecretsEqual(secret, "demo-secret")
		},
		Password: func(_ context.Context, clientID, username, password, scope string) (jtiguard.Login, error) {
			if username != "alice" || !jtiguard.SecretsEqual(password, "secret") {
				return jtiguard.Login{}, errors.New("wrong password")
			}
			return jtiguard.Login{Subject: username, Scope: scope, ACR: "pwd", AMR: []string{"pwd"}}, nil
		},
	}
	post := func(form url.Values) {
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth("demo-client", "demo-secret")
		rec := httptest.NewRecorder()
		endpoint.ServeHTTP(rec, r)

		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			log.Fatal(err)
		}
		fmt.Println(rec.Code, "Cache-Control:", rec.Header().Get("Cache-Control"))
		for _, field := range []string{"access_token", "token_type", "expires_in", "refresh_token", "scope", "error"} {
			switch v := body[field].(type) {
			case nil:
			case string:
				if strings.HasSuffix(field, "_token") && v != "" {
					v = "<present>" // never print or log a token
				}
				fmt.Printf("  %s: %s\n", field, v)
			default:
				fmt.Printf("  %s: %v\n", field, v)
			}
		}
	}
	post(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"secret"}, "scope": {"read"}})
	post(url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"guess"}})
	// Output:
	// 200 Cache-Control: no-store
	//   access_token: <present>
	//   token_type: Bearer
	//   expires_in: 300
	//   refresh_token: <present>
	//   scope: read
	// 400 Cache-Control: no-store
	//   error: invalid_grant
}

// Rotating the signing key without logging anyone out: publish the next key
// (Add), sign with it once verifiers have fetched the JWKS (Rotate), and
// drop the old one once every token it signed has expired (Retire).
func ExampleKeySet_Rotate() {
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	oldKey, _ := jtiguard.NewKey("2026-10", jtiguard.EdDSA, ed25519.NewKeyFromSeed(make([]byte, 32)))
	keys, _ := jtiguard.NewKeySet(oldKey)
	store, _ := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: now})
	issuer, _ := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{
		Issuer: "https://auth.example.com", Now: now, Rand: rand.NewChaCha8([32]byte{}),
	})
	verifier, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
		Issuer: "https://auth.example.com", Audience: "https://api.example.com", Store: store, Now: now,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer verifier.Close()
	ctx := context.Background()
	alice := jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}}
	kids := func() []string {
		doc, _ := keys.JWKS()
		var set struct{ Keys []struct{ Kid string } }
		_ = json.Unmarshal(doc, &set)
		var out []string
		for _, k := range set.Keys {
			out = append(out, k.Kid)
		}
		return out
	}

	before, _, _ := issuer.Access(alice)

	seed := make([]byte, 32)
	seed[0] = 1
	newKey, _ := jtiguard.NewKey("2026-11", jtiguard.EdDSA, ed25519.NewKeyFromSeed(seed))
	if err := keys.Add(newKey); err != nil {
		log.Fatal(err)
	}
	fmt.Println("JWKS:", kids(), "signer:", keys.Signer().KID())

	if err := keys.Rotate("2026-11"); err != nil {
		log.Fatal(err)
	}
	after, claims, _ := issuer.Access(alice)
	fmt.Println("new tokens signed by:", claims.KeyID)
	_, err = verifier.Verify(ctx, before)
	fmt.Println("old token:", err)
	_, err = verifier.Verify(ctx, after)
	fmt.Println("new token:", err)

	if err := keys.Retire("2026-10"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("JWKS:", kids())
	_, err = verifier.Verify(ctx, before)
	fmt.Println("old token:", errors.Is(err, jtiguard.ErrUnknownKey), err)
	// Output:
	// JWKS: [2026-10 2026-11] signer: 2026-10
	// new tokens signed by: 2026-11
	// old token: <nil>
	// new token: <nil>
	// JWKS: [2026-11]
	// old token: true jtiguard: unknown signing key
}

// Browser clients keep their tokens in cookies that script cannot read. The
// login handler sets them; a Guard with the same CookieConfig reads the
// access token from its cookie, and on unsafe methods also wants the CSRF
// cookie's value echoed in a header (another site can send the cookies, but
// can neither read nor set that value).
func ExampleCookieConfig() {
	sessions, verifier := exampleSessions()
	defer verifier.Close()
	cookies := jtiguard.CookieConfig{} // the zero value: __Host- cookies, Secure, HttpOnly, SameSite=Strict

	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ... after checking the user's credentials:
		pair, err := sessions.Login(r.Context(), jtiguard.Login{Subject: "alice", ACR: "pwd"})
		if err == nil {
			err = cookies.Set(w, pair)
		}
		if err != nil {
			http.Error(w, "login failed", http.StatusServiceUnavailable)
		}
	})
	guard := jtiguard.NewGuard(verifier, jtiguard.GuardConfig{Cookies: &cookies})
	api := guard.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jtiguard.ClaimsFrom(r.Context())
		fmt.Fprintln(w, "hello", c.Subject)
	}))

	rec := httptest.NewRecorder()
	login.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/login", nil))
	set := rec.Result().Cookies()
	var csrf string
	sameSite := map[http.SameSite]string{http.SameSiteStrictMode: "Strict", http.SameSiteLaxMode: "Lax"}
	for _, c := range set {
		fmt.Printf("%s: Path=%s HttpOnly=%t Secure=%t SameSite=%s\n",
			c.Name, c.Path, c.HttpOnly, c.Secure, sameSite[c.SameSite])
		if c.Name == "__Host-csrf" {
			csrf = c.Value // the page's script reads this cookie
		}
	}

	send := func(method, csrfHeader string) {
		r := httptest.NewRequest(method, "/me", nil)
		for _, c := range set {
			if c.Name != "__Secure-refresh" { // sent to /token only
				r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
			}
		}
		if csrfHeader != "" {
			r.Header.Set("X-CSRF-Token", csrfHeader)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, r)
		fmt.Println(method, "/me", "CSRF header:", csrfHeader != "", "->", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	send(http.MethodGet, "")
	send(http.MethodPost, "")
	send(http.MethodPost, csrf)
	// Output:
	// __Host-access: Path=/ HttpOnly=true Secure=true SameSite=Strict
	// __Secure-refresh: Path=/token HttpOnly=true Secure=true SameSite=Strict
	// __Host-csrf: Path=/ HttpOnly=false Secure=true SameSite=Strict
	// GET /me CSRF header: false -> 200 hello alice
	// POST /me CSRF header: false -> 403 {"error":"invalid_request","error_description":"CSRF check failed"}
	// POST /me CSRF header: true -> 200 hello alice
}
