package jtiguard_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
		query   string
		want    string
		bad     bool
	}{
		{name: "none"},
		{name: "bearer", headers: []string{"Bearer abc.def.ghi"}, want: "abc.def.ghi"},
		{name: "scheme in any case", headers: []string{"bEaReR abc.def.ghi"}, want: "abc.def.ghi"},
		{name: "b64token padding", headers: []string{"Bearer abc+/=="}, want: "abc+/=="},
		{name: "two headers", headers: []string{"Bearer a", "Bearer b"}, bad: true},
		{name: "basic: no bearer credentials", headers: []string{"Basic dXNlcjpwYXNz"}},
		{name: "no token", headers: []string{"Bearer "}, bad: true},
		{name: "bearer alone", headers: []string{"Bearer"}, bad: true},
		{name: "space inside", headers: []string{"Bearer abc def"}, bad: true},
		{name: "quote", headers: []string{`Bearer abc"def`}, bad: true},
		{name: "padding inside", headers: []string{"Bearer ab=c"}, bad: true},
		{name: "query string", query: "access_token=abc", bad: true},
		{name: "query beside header", headers: []string{"Bearer abc"}, query: "access_token=abc", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/?"+tc.query, nil)
			for _, h := range tc.headers {
				r.Header.Add("Authorization", h)
			}
			got, err := jtiguard.BearerToken(r)
			if tc.bad {
				require.ErrorIs(t, err, jtiguard.ErrInvalidRequest)
				var e *jtiguard.Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, http.StatusBadRequest, e.Status)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

type response struct {
	status    int
	challenge string
	body      map[string]string
}

func serve(t *testing.T, h http.Handler, r *http.Request) response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	var body map[string]string
	if rec.Body.Len() > 0 && strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	}
	return response{rec.Code, rec.Header().Get("WWW-Authenticate"), body}
}

func TestGuard(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{}, func(c *jtiguard.VerifierConfig) { c.ACRLevels = []string{"pwd", "mfa"} })
	g := jtiguard.NewGuard(sf.ver, jtiguard.GuardConfig{Realm: "api"})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, found := jtiguard.ClaimsFrom(r.Context())
		require.True(t, found)
		_, _ = w.Write([]byte(c.Subject))
	})
	pair := sf.login(t, "alice") // acr pwd, scope read
	get := func(tok string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		return r
	}

	res := serve(t, g.Authenticate(ok), get(""))
	assert.Equal(t, http.StatusUnauthorized, res.status)
	assert.Equal(t, `Bearer realm="api"`, res.challenge, "no token: a bare challenge")

	res = serve(t, g.Authenticate(ok), get(pair.AccessToken))
	assert.Equal(t, http.StatusOK, res.status)

	res = serve(t, g.Authenticate(ok), get(pair.AccessToken+"x"))
	assert.Equal(t, http.StatusUnauthorized, res.status)
	assert.Contains(t, res.challenge, `error="invalid_token"`)
	assert.Equal(t, "invalid_token", res.body["error"])
	assert.NotContains(t, res.body["error_description"], pair.AccessToken[:20])

	res = serve(t, g.Require(jtiguard.Requirement{Scopes: []string{"write"}})(ok), get(pair.AccessToken))
	assert.Equal(t, http.StatusForbidden, res.status)
	assert.Contains(t, res.challenge, `error="insufficient_scope"`)
	assert.Contains(t, res.challenge, `scope="write"`)

	res = serve(t, g.Require(jtiguard.Requirement{ACR: "mfa", MaxAge: 5 * time.Minute})(ok), get(pair.AccessToken))
	assert.Equal(t, http.StatusUnauthorized, res.status)
	assert.Contains(t, res.challenge, `error="insufficient_user_authentication"`)
	assert.Contains(t, res.challenge, `acr_values="mfa"`)
	assert.Contains(t, res.challenge, `max_age=300`)

	r := get(pair.AccessToken)
	r.Header.Add("Authorization", "Bearer "+pair.AccessToken)
	res = serve(t, g.Authenticate(ok), r)
	assert.Equal(t, http.StatusBadRequest, res.status, "two Authorization headers")

	res = serve(t, g.Authenticate(ok), httptest.NewRequest(http.MethodGet, "/?access_token="+url.QueryEscape(pair.AccessToken), nil))
	assert.Equal(t, http.StatusBadRequest, res.status, "a token in the query string is not accepted")

	done, cancel := context.WithCancel(context.Background())
	cancel()
	res = serve(t, g.Authenticate(ok), get(pair.AccessToken).WithContext(done))
	assert.Equal(t, http.StatusServiceUnavailable, res.status)
	assert.Equal(t, "temporarily_unavailable", res.body["error"])
}

func TestJWKSHandler(t *testing.T) {
	f := newFixture(t)
	rec := httptest.NewRecorder()
	jtiguard.JWKSHandler(f.keys, 5*time.Minute).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "public, max-age=300", rec.Header().Get("Cache-Control"))
	published, err := jtiguard.ParseJWKS(rec.Body.Bytes())
	require.NoError(t, err)
	_, ok := published.Key("k1")
	assert.True(t, ok)
}

// FuzzBearerHeader: whatever the Authorization header, BearerToken returns
// a b64token or an invalid_request error, never panics.
func FuzzBearerHeader(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b.c", "Bearer ", "Basic x", "Bearer a b", "Bearer ===", "Bearer a=b", "Bearer\ta", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", h)
		tok, err := jtiguard.BearerToken(r)
		if err != nil {
			if tok != "" {
				t.Fatal("token with error")
			}
			return
		}
		if strings.ContainsAny(tok, " \t\r\n\",\\") {
			t.Fatalf("accepted token %q from %q", tok, h)
		}
	})
}

func TestCookieTransport(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	cookies := jtiguard.CookieConfig{}
	g := jtiguard.NewGuard(sf.ver, jtiguard.GuardConfig{Realm: "app", Cookies: &cookies})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	pair := sf.login(t, "alice")

	rec := httptest.NewRecorder()
	require.NoError(t, cookies.Set(rec, pair))
	set := map[string]*http.Cookie{}
	for _, c := range rec.Result().Cookies() {
		set[c.Name] = c
	}
	access, refresh, csrf := set["__Host-access"], set["__Secure-refresh"], set["__Host-csrf"]
	require.NotNil(t, access)
	require.NotNil(t, refresh)
	require.NotNil(t, csrf)
	for _, c := range []*http.Cookie{access, refresh, csrf} {
		assert.True(t, c.Secure, c.Name)
		assert.Equal(t, http.SameSiteStrictMode, c.SameSite, c.Name)
	}
	assert.True(t, access.HttpOnly)
	assert.True(t, refresh.HttpOnly)
	assert.False(t, csrf.HttpOnly, "the page's script reads the CSRF token")
	assert.Equal(t, "/", access.Path)
	assert.Equal(t, "/token", refresh.Path, "the refresh token goes to the refresh path only")
	assert.Equal(t, pair.AccessToken, access.Value)

	req := func(method string, withCSRF bool, cs ...*http.Cookie) *http.Request {
		r := httptest.NewRequest(method, "/", nil)
		for _, c := range cs {
			r.AddCookie(c)
		}
		if withCSRF {
			r.Header.Set("X-CSRF-Token", csrf.Value)
		}
		return r
	}
	assert.Equal(t, http.StatusNoContent, serve(t, g.Authenticate(ok), req("GET", false, access)).status)
	assert.Equal(t, http.StatusForbidden, serve(t, g.Authenticate(ok), req("POST", false, access, csrf)).status, "no CSRF header")
	wrong := req("POST", false, access, csrf)
	wrong.Header.Set("X-CSRF-Token", "forged")
	assert.Equal(t, http.StatusForbidden, serve(t, g.Authenticate(ok), wrong).status, "wrong CSRF header")
	assert.Equal(t, http.StatusForbidden, serve(t, g.Authenticate(ok), req("POST", true, access)).status, "no CSRF cookie")
	assert.Equal(t, http.StatusNoContent, serve(t, g.Authenticate(ok), req("POST", true, access, csrf)).status)

	rt, err := cookies.RefreshToken(req("POST", true, refresh, csrf))
	require.NoError(t, err)
	assert.Equal(t, pair.RefreshToken, rt)
	_, err = cookies.RefreshToken(req("POST", false, refresh, csrf))
	assert.ErrorIs(t, err, jtiguard.ErrInvalidRequest)

	clear := httptest.NewRecorder()
	cookies.Clear(clear)
	for _, c := range clear.Result().Cookies() {
		assert.Negative(t, c.MaxAge, c.Name)
	}
	// Without cookies configured, a cookie is not a credential.
	plain := jtiguard.NewGuard(sf.ver, jtiguard.GuardConfig{})
	assert.Equal(t, http.StatusUnauthorized, serve(t, plain.Authenticate(ok), req("GET", false, access)).status)
}

func TestGuardConsume(t *testing.T) {
	f := newFixture(t)
	g := jtiguard.NewGuard(f.ver, jtiguard.GuardConfig{})
	h := g.Consume("confirm", jtiguard.FormValue("action_token"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := jtiguard.OneTimeFrom(r.Context())
		require.True(t, ok)
		_, _ = w.Write([]byte(c.Subject))
	}))
	once, _ := f.oneTime(t, "confirm")
	post := func(tok string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(url.Values{"action_token": {tok}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return r
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	assert.Equal(t, http.StatusServiceUnavailable, serve(t, h, post(once).WithContext(done)).status, "fails closed, and does not use the token up")
	assert.Equal(t, http.StatusOK, serve(t, h, post(once)).status)
	res := serve(t, h, post(once))
	assert.Equal(t, http.StatusBadRequest, res.status, "replay")
	assert.Equal(t, "invalid_action_token", res.body["error"])
	assert.Equal(t, http.StatusBadRequest, serve(t, h, post("")).status)
	access, _ := f.access(t)
	assert.Equal(t, http.StatusBadRequest, serve(t, h, post(access)).status, "an access token is not a one-time token")
}

// padded returns form with a "pad" field that makes its encoding exactly n
// bytes long.
func padded(form url.Values, n int) string {
	out := url.Values{"pad": {""}}
	for k, v := range form {
		out[k] = v
	}
	out.Set("pad", strings.Repeat("x", n-len(out.Encode())))
	return out.Encode()
}

func postForm(body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

// TestFormBodyCap: every form the library reads is read up to MaxFormBytes
// and refused beyond, and the refused request changes nothing: it uses up,
// rotates and revokes nothing.
func TestFormBodyCap(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	g := jtiguard.NewGuard(sf.ver, jtiguard.GuardConfig{})
	clients := func(_ context.Context, id, secret string) bool { return id == "demo-client" && secret == "s" }
	alice, bob := sf.login(t, "alice"), sf.login(t, "bob")
	once, _ := sf.oneTime(t, "confirm")
	consumed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })

	for _, tc := range []struct {
		name     string
		h        http.Handler
		form     url.Values
		tooLarge int
		ok       int
	}{
		// Consume is no OAuth endpoint: 413, the status for the problem.
		// Had the refused request used the token up, the next would get 400.
		{"consume", g.Consume("confirm", jtiguard.FormValue("action_token"))(consumed),
			url.Values{"action_token": {once}}, http.StatusRequestEntityTooLarge, http.StatusNoContent},
		// The OAuth endpoints answer 400 invalid_request, as RFC 6749
		// section 5.2 has it. A rotation by the refused request would make
		// the next one reuse (400 invalid_grant).
		{"token", &jtiguard.TokenEndpoint{Sessions: sf.sess, Clients: clients},
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {alice.RefreshToken}}, http.StatusBadRequest, http.StatusOK},
		{"revocation", &jtiguard.RevocationEndpoint{Verifier: sf.ver, Clients: clients},
			url.Values{"token": {bob.AccessToken}}, http.StatusBadRequest, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			post := func(n int) *http.Request {
				r := postForm(padded(tc.form, n))
				require.EqualValues(t, n, r.ContentLength)
				r.SetBasicAuth("demo-client", "s")
				return r
			}
			res := serve(t, tc.h, post(jtiguard.MaxFormBytes+1))
			assert.Equal(t, tc.tooLarge, res.status)
			assert.Equal(t, "invalid_request", res.body["error"])
			assert.Contains(t, res.body["error_description"], "64 KiB")
			_, err := sf.ver.Verify(context.Background(), bob.AccessToken)
			assert.NoError(t, err, "nothing revoked")
			// Past any refresh grace window: presenting a refresh token
			// again is reuse, not a retry.
			sf.clock.Advance(jtiguard.MaxRefreshGrace + time.Second)

			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, post(jtiguard.MaxFormBytes))
			assert.Equal(t, tc.ok, rec.Code, "a body at the cap is read: %s", rec.Body)
		})
	}

	// FormValue caps the body on its own too, outside Consume.
	assert.Equal(t, "v", jtiguard.FormValue("f")(postForm(padded(url.Values{"f": {"v"}}, jtiguard.MaxFormBytes))))
	assert.Empty(t, jtiguard.FormValue("f")(postForm(padded(url.Values{"f": {"v"}}, jtiguard.MaxFormBytes+1))))
}

// checkCounter is the fixture's MemoryStore with its Check calls counted:
// how many store reads a request costs.
type checkCounter struct {
	*jtiguard.MemoryStore
	checks atomic.Int64
}

func (c *checkCounter) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	c.checks.Add(1)
	return c.MemoryStore.Check(ctx, t)
}

// TestGuardComposes: Authenticate on a router and Require on a route verify
// the token once; Optional routes serve anonymous requests but never a bad
// token; Extract and OnError replace the defaults; NewContext feeds
// handlers in tests and is never taken for a verified token.
func TestGuardComposes(t *testing.T) {
	f := newFixture(t)
	counter := &checkCounter{MemoryStore: f.store}
	ver, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: counter, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	g := jtiguard.NewGuard(ver, jtiguard.GuardConfig{})
	tok, _ := f.access(t) // scope "read write"
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := jtiguard.ClaimsFrom(r.Context()); ok {
			_, _ = w.Write([]byte(c.Subject))
			return
		}
		_, _ = w.Write([]byte("anonymous"))
	})
	get := func(auth string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		return r
	}
	body := func(h http.Handler, r *http.Request) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code, rec.Body.String()
	}

	t.Run("verified once per request", func(t *testing.T) {
		chain := g.Authenticate(g.Require(jtiguard.Requirement{Scopes: []string{"write"}})(whoami))
		before := counter.checks.Load()
		code, got := body(chain, get("Bearer "+tok))
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "alice", got)
		assert.EqualValues(t, 1, counter.checks.Load()-before, "one store read for the whole chain")

		code, _ = body(g.Authenticate(g.Require(jtiguard.Requirement{Scopes: []string{"admin"}})(whoami)), get("Bearer "+tok))
		assert.Equal(t, http.StatusForbidden, code, "the route's requirement still applies to claims verified earlier")

		// Another verifier (say, another audience) verifies for itself.
		other := jtiguard.NewGuard(f.ver, jtiguard.GuardConfig{})
		before = counter.checks.Load()
		code, _ = body(other.Authenticate(g.Authenticate(whoami)), get("Bearer "+tok))
		assert.Equal(t, http.StatusOK, code)
		assert.EqualValues(t, 1, counter.checks.Load()-before, "g read its store itself")
	})

	t.Run("optional", func(t *testing.T) {
		code, got := body(g.Optional(whoami), get(""))
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "anonymous", got)
		code, got = body(g.Optional(whoami), get("Bearer "+tok))
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "alice", got)
		code, _ = body(g.Optional(whoami), get("Bearer "+tok+"x"))
		assert.Equal(t, http.StatusUnauthorized, code, "a bad token is refused, not ignored")
	})

	t.Run("no credentials: a bare challenge, no error code", func(t *testing.T) {
		for _, auth := range []string{"", "Basic dXNlcjpwYXNz"} {
			rec := httptest.NewRecorder()
			g.Authenticate(whoami).ServeHTTP(rec, get(auth))
			assert.Equal(t, http.StatusUnauthorized, rec.Code, auth)
			assert.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"), auth)
			assert.Empty(t, rec.Body.String(), "RFC 6750 section 3.1: no error information")
		}
	})

	t.Run("extract and on error", func(t *testing.T) {
		var refused []error
		custom := jtiguard.NewGuard(ver, jtiguard.GuardConfig{
			Extract: func(r *http.Request) (string, error) { return r.Header.Get("X-Token"), nil },
			OnError: func(w http.ResponseWriter, r *http.Request, err error) {
				refused = append(refused, err)
				http.Error(w, "go away", http.StatusTeapot)
			},
		})
		r := get("Bearer " + tok) // not where this guard looks
		code, _ := body(custom.Authenticate(whoami), r)
		assert.Equal(t, http.StatusTeapot, code)
		r.Header.Set("X-Token", tok)
		code, got := body(custom.Authenticate(whoami), r)
		assert.Equal(t, http.StatusOK, code)
		assert.Equal(t, "alice", got)
		r.Header.Set("X-Token", tok+"x")
		code, _ = body(custom.Authenticate(whoami), r)
		assert.Equal(t, http.StatusTeapot, code)
		require.Len(t, refused, 2)
		assert.NoError(t, refused[0], "no credentials")
		assert.ErrorIs(t, refused[1], jtiguard.ErrInvalidToken)
	})

	t.Run("new context", func(t *testing.T) {
		injected := &jtiguard.Claims{Subject: "mallory"}
		r := get("").WithContext(jtiguard.NewContext(context.Background(), injected))
		_, got := body(whoami, r)
		assert.Equal(t, "mallory", got, "handlers read injected claims")
		code, _ := body(g.Authenticate(whoami), r)
		assert.Equal(t, http.StatusUnauthorized, code, "a Guard never takes them for a verified token")
	})
}

func TestOAuthError(t *testing.T) {
	for _, tc := range []struct {
		code   string
		status int
		kind   error
	}{
		{"invalid_request", 400, jtiguard.ErrInvalidRequest},
		{"invalid_client", 401, jtiguard.ErrInvalidClient},
		{"invalid_grant", 400, jtiguard.ErrInvalidGrant},
		{"unauthorized_client", 400, jtiguard.ErrUnauthorizedClient},
		{"unsupported_grant_type", 400, jtiguard.ErrUnsupportedGrantType},
		{"invalid_scope", 400, jtiguard.ErrInvalidScope},
		{"made_up", 400, jtiguard.ErrInvalidRequest},
	} {
		t.Run(tc.code, func(t *testing.T) {
			err := jtiguard.OAuthError(tc.code, "why")
			assert.ErrorIs(t, err, tc.kind)
			assert.NotErrorIs(t, err, jtiguard.ErrInvalidToken)
			rec := httptest.NewRecorder()
			jtiguard.WriteTokenError(rec, "api", err)
			assert.Equal(t, tc.status, rec.Code)
			assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
			var body map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			if tc.code == "made_up" {
				assert.Equal(t, "invalid_request", body["error"])
			} else {
				assert.Equal(t, tc.code, body["error"])
			}
			assert.Equal(t, "why", body["error_description"])
		})
	}
	rec := httptest.NewRecorder()
	jtiguard.WriteTokenError(rec, "", errors.New("database password is hunter2"))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.NotContains(t, rec.Body.String(), "hunter2")
}

func TestClientCredentialsGrant(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	clients := func(_ context.Context, id, secret string) bool { return id == "batch" && secret == "s" }
	e := &jtiguard.TokenEndpoint{Sessions: sf.sess, Clients: clients,
		ClientCredentials: func(_ context.Context, id, scope string) (jtiguard.Claims, error) {
			switch scope {
			case "", "reports":
				return jtiguard.Claims{Scope: "reports"}, nil
			case "admin":
				return jtiguard.Claims{}, jtiguard.OAuthError("invalid_scope", "admin is not for machines")
			}
			return jtiguard.Claims{}, errors.New("nope")
		}}
	post := func(form url.Values) *httptest.ResponseRecorder {
		r := postForm(form.Encode())
		r.SetBasicAuth("batch", "s")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, r)
		return rec
	}
	rec := post(url.Values{"grant_type": {"client_credentials"}, "scope": {"reports"}})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.NotContains(t, body, "refresh_token", "RFC 6749 section 4.4.3: no refresh token")
	assert.Equal(t, "reports", body["scope"])
	assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	c, err := sf.ver.Verify(context.Background(), body["access_token"].(string))
	require.NoError(t, err)
	assert.Equal(t, "batch", c.Subject)
	assert.Equal(t, "batch", c.ClientID)
	assert.Empty(t, c.Session, "no session family")

	rec = post(url.Values{"grant_type": {"client_credentials"}, "scope": {"admin"}})
	assert.Equal(t, http.StatusBadRequest, rec.Code)
	assert.Contains(t, rec.Body.String(), `"invalid_scope"`)
	rec = post(url.Values{"grant_type": {"client_credentials"}, "scope": {"other"}})
	assert.Contains(t, rec.Body.String(), `"unauthorized_client"`)

	e.ClientCredentials = nil
	rec = post(url.Values{"grant_type": {"client_credentials"}})
	assert.Contains(t, rec.Body.String(), `"unsupported_grant_type"`)

	r := postForm(url.Values{"grant_type": {"client_credentials"}}.Encode())
	r.SetBasicAuth("batch", "wrong")
	rec = httptest.NewRecorder()
	e.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
}

func TestVerifierPing(t *testing.T) {
	f := newFixture(t)
	assert.NoError(t, f.ver.Ping(context.Background()), "the memory store is always ready")
}

// TestClientSecretsFormEncoded: HTTP Basic client credentials are
// form-urlencoded first (RFC 6749 section 2.3.1), as golang.org/x/oauth2
// sends them, so secrets with any characters work.
func TestClientSecretsFormEncoded(t *testing.T) {
	f := newFixture(t)
	const id, secret = "app:1", "s+/= é"
	e := &jtiguard.RevocationEndpoint{Verifier: f.ver, Clients: func(_ context.Context, i, s string) bool { return i == id && s == secret }}
	tok, _ := f.access(t)
	post := func(user, pass string) int {
		r := postForm(url.Values{"token": {tok}}.Encode())
		r.SetBasicAuth(user, pass)
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, r)
		return rec.Code
	}
	assert.Equal(t, http.StatusUnauthorized, post("app%3A1", secret), "a secret sent raw, not form-encoded")
	assert.Equal(t, http.StatusBadRequest, post("app", "50%"), "malformed encoding")
	assert.Equal(t, http.StatusOK, post(url.QueryEscape(id), url.QueryEscape(secret)))
	_, err := f.ver.Verify(context.Background(), tok)
	assert.ErrorIs(t, err, jtiguard.ErrRevoked)
}

// TestRevokeAnyAudience: the issuer revokes tokens of every audience it
// mints for, not only its own Verifier's: a resource server sharing the
// store refuses them from then on.
func TestRevokeAnyAudience(t *testing.T) {
	f := newFixture(t)
	tok, _, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://orders.example.com"}})
	require.NoError(t, err)
	orders, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: "https://orders.example.com", Store: f.store, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(orders.Close)
	_, err = orders.Verify(context.Background(), tok)
	require.NoError(t, err)
	require.NoError(t, f.ver.Revoke(context.Background(), tok), "the issuer's verifier is for another audience")
	_, err = orders.Verify(context.Background(), tok)
	assert.ErrorIs(t, err, jtiguard.ErrRevoked)
}

// TestBoundTokenAsBearerCostsNoStoreRead: a DPoP-bound token presented
// without its proof is refused before the store is asked.
func TestBoundTokenAsBearerCostsNoStoreRead(t *testing.T) {
	f := newFixture(t)
	counter := &checkCounter{MemoryStore: f.store}
	ver, err := jtiguard.NewVerifier(f.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: counter, Now: f.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	tok, _, err := f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: strings.Repeat("A", 43)})
	require.NoError(t, err)
	_, err = ver.Verify(context.Background(), tok)
	require.ErrorIs(t, err, jtiguard.ErrDPoPRequired)
	assert.Zero(t, counter.checks.Load())
}
