package tokenserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

const testIssuer = "http://passwordflow.test"

// instance starts one server on an httptest listener, with DPoP on: its
// ExternalURL is the listener's URL.
func instance(t *testing.T, keyFile, redisAddr string) string {
	t.Helper()
	return instanceWith(t, func(c *Config) { c.KeyFile, c.RedisAddr = keyFile, redisAddr })
}

// instanceWith starts a server on an httptest listener, its configuration
// the test one with DPoP on at the listener's URL, as edit changes it.
func instanceWith(t *testing.T, edit func(*Config)) string {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	url := "http://" + ts.Listener.Addr().String()
	srv := newServerWith(t, func(c *Config) {
		c.ExternalURL = url
		edit(c)
	})
	ts.Config = srv.HTTPServer()
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.URL
}

func newServer(t *testing.T, keyFile, redisAddr string) *Server {
	t.Helper()
	return newServerWith(t, func(c *Config) { c.KeyFile, c.RedisAddr = keyFile, redisAddr })
}

// newServerWith starts a server on the test configuration as edit changes
// it.
func newServerWith(t *testing.T, edit func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Issuer:          testIssuer,
		Users:           map[string]string{"alice": "secret", "bob": "hunter2"},
		ClientID:        "demo-client",
		ClientSecret:    "demo-secret",
		PublicClientID:  "demo-public",
		ResourceServers: map[string]string{"orders-api": "orders-secret"},
		MFACode:         "123456",
		AccessTTL:       5 * time.Minute,
		Logger:          slog.New(slog.DiscardHandler),
	}
	edit(&cfg)
	srv, err := NewServer(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Close)
	return srv
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r reply) str(k string) string { s, _ := r.body[k].(string); return s }

// call sends one request: form (POST) or nil (GET), optional bearer token,
// optional client authentication by HTTP Basic.
func call(t *testing.T, base, method, path string, form url.Values, bearer string, basic bool) reply {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, base+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if basic {
		req.SetBasicAuth("demo-client", "demo-secret")
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	r := reply{status: res.StatusCode, header: res.Header}
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	if len(data) > 0 && strings.Contains(res.Header.Get("Content-Type"), "json") {
		require.NoError(t, json.Unmarshal(data, &r.body), "%s", data)
	}
	return r
}

func login(t *testing.T, base, user, pass string) (at, rt string) {
	t.Helper()
	r := call(t, base, "POST", "/token", url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}}, "", true)
	require.Equal(t, http.StatusOK, r.status, r.body)
	return r.str("access_token"), r.str("refresh_token")
}

// suite drives every endpoint. a and b are two instances (the same one on
// the in-memory store): a token obtained from one is used on the other, so
// on Redis the suite shows that replicas agree at once.
func suite(t *testing.T, a, b string) {
	t.Run("token endpoint errors", func(t *testing.T) {
		pw := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"wrong"}}
		r := call(t, a, "POST", "/token", pw, "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "invalid_grant", r.str("error"))
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))
		assert.Equal(t, "no-cache", r.header.Get("Pragma"))

		pw.Set("password", "secret")
		r = call(t, a, "POST", "/token", pw, "", false)
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.Equal(t, "invalid_client", r.str("error"))

		r = call(t, a, "POST", "/token", url.Values{"grant_type": {"client_credentials"}}, "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "unsupported_grant_type", r.str("error"))

		r = call(t, a, "POST", "/token", url.Values{"grant_type": {"password"}, "username": {"alice"}}, "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "invalid_request", r.str("error"))

		// Client authentication in the form works too.
		pw.Set("client_id", "demo-client")
		pw.Set("client_secret", "demo-secret")
		r = call(t, a, "POST", "/token", pw, "", false)
		assert.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "Bearer", r.str("token_type"))
		assert.EqualValues(t, 300, r.body["expires_in"])
		assert.Equal(t, "read write", r.str("scope"))
		assert.NotEmpty(t, r.str("refresh_token"))
	})

	t.Run("me", func(t *testing.T) {
		at, _ := login(t, a, "alice", "secret")
		r := call(t, b, "GET", "/me", nil, at, false)
		require.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "alice", r.str("sub"))
		assert.Equal(t, "pwd", r.str("acr"))
		assert.Equal(t, "read write", r.str("scope"))
		assert.NotEmpty(t, r.str("sid"))

		r = call(t, b, "GET", "/me", nil, "", false)
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.Equal(t, `Bearer realm="passwordflow"`, r.header.Get("WWW-Authenticate"))

		r = call(t, b, "GET", "/me?access_token="+at, nil, "", false)
		assert.Equal(t, http.StatusBadRequest, r.status, "a token in the query string is not accepted")

		req, err := http.NewRequest("GET", b+"/me", nil)
		require.NoError(t, err)
		req.Header.Add("Authorization", "Bearer "+at)
		req.Header.Add("Authorization", "Bearer "+at)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusBadRequest, res.StatusCode, "two Authorization headers")
	})

	t.Run("mfa invalidates older tokens", func(t *testing.T) {
		at, rt := login(t, a, "alice", "secret")
		r := call(t, b, "GET", "/admin", nil, at, false)
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="insufficient_user_authentication"`)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), `acr_values="mfa"`)

		r = call(t, a, "POST", "/mfa", url.Values{"code": {"000000"}}, at, false)
		assert.Equal(t, http.StatusForbidden, r.status)
		assert.Equal(t, http.StatusOK, call(t, b, "GET", "/me", nil, at, false).status, "a wrong code changes nothing")

		r = call(t, a, "POST", "/mfa", url.Values{"code": {"123456"}}, at, false)
		require.Equal(t, http.StatusOK, r.status, r.body)
		at2 := r.str("access_token")
		assert.Equal(t, http.StatusOK, call(t, b, "GET", "/admin", nil, at2, false).status)
		assert.Equal(t, "mfa", call(t, b, "GET", "/me", nil, at2, false).str("acr"))
		assert.Equal(t, http.StatusUnauthorized, call(t, b, "GET", "/me", nil, at, false).status, "the pre-MFA access token is dead")
		r = call(t, b, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true)
		assert.Equal(t, "invalid_grant", r.str("error"), "so is the pre-MFA refresh token")
	})

	t.Run("refresh reuse kills the family", func(t *testing.T) {
		at, rt := login(t, a, "alice", "secret")
		r := call(t, a, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true)
		require.Equal(t, http.StatusOK, r.status, r.body)
		at2, rt2 := r.str("access_token"), r.str("refresh_token")
		assert.NotEqual(t, rt, rt2)

		// A client that lost the answer retries within the grace window: the
		// same successor.
		r = call(t, b, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, rt2, r.str("refresh_token"))
		r = call(t, a, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}}, "", true)
		require.Equal(t, http.StatusOK, r.status, r.body)
		at3, rt3 := r.str("access_token"), r.str("refresh_token")

		// The token before the previous one is reuse.
		r = call(t, b, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "invalid_grant", r.str("error"))
		for _, tok := range []string{at, at2, at3} {
			assert.Equal(t, http.StatusUnauthorized, call(t, a, "GET", "/me", nil, tok, false).status)
		}
		r = call(t, a, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt3}}, "", true)
		assert.Equal(t, "invalid_grant", r.str("error"))
	})

	t.Run("one-time token", func(t *testing.T) {
		at, _ := login(t, a, "alice", "secret")
		r := call(t, a, "POST", "/transfer/token", url.Values{}, at, false)
		require.Equal(t, http.StatusOK, r.status, r.body)
		act := r.str("action_token")
		assert.Equal(t, http.StatusOK, call(t, b, "POST", "/transfer", url.Values{"action_token": {act}}, at, false).status)
		for _, inst := range []string{a, b} {
			r = call(t, inst, "POST", "/transfer", url.Values{"action_token": {act}}, at, false)
			assert.Equal(t, http.StatusBadRequest, r.status, "replay refused")
		}
		bob, _ := login(t, a, "bob", "hunter2")
		act2 := call(t, a, "POST", "/transfer/token", url.Values{}, at, false).str("action_token")
		assert.Equal(t, http.StatusForbidden, call(t, b, "POST", "/transfer", url.Values{"action_token": {act2}}, bob, false).status, "another user's action token")
	})

	t.Run("revoke", func(t *testing.T) {
		at, rt := login(t, a, "alice", "secret")
		assert.Equal(t, http.StatusOK, call(t, a, "POST", "/revoke", url.Values{"token": {at}}, "", true).status)
		assert.Equal(t, http.StatusUnauthorized, call(t, b, "GET", "/me", nil, at, false).status, "revoked on A, rejected on B")

		r := call(t, a, "POST", "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, "", true)
		require.Equal(t, http.StatusOK, r.status, "revoking the access token leaves the session")
		at2, rt2 := r.str("access_token"), r.str("refresh_token")
		assert.Equal(t, http.StatusOK, call(t, a, "POST", "/revoke", url.Values{"token": {rt2}, "token_type_hint": {"access_token"}}, "", true).status)
		assert.Equal(t, http.StatusUnauthorized, call(t, b, "GET", "/me", nil, at2, false).status, "revoking the refresh token ends the family")

		assert.Equal(t, http.StatusOK, call(t, a, "POST", "/revoke", url.Values{"token": {"unknown"}}, "", true).status, "200 for unknown tokens")
		assert.Equal(t, http.StatusUnauthorized, call(t, a, "POST", "/revoke", url.Values{"token": {at}}, "", false).status, "client authentication required")
	})

	t.Run("logout and logout-all", func(t *testing.T) {
		at, _ := login(t, a, "alice", "secret")
		assert.Equal(t, http.StatusOK, call(t, a, "POST", "/logout", url.Values{}, at, false).status)
		assert.Equal(t, http.StatusUnauthorized, call(t, b, "GET", "/me", nil, at, false).status)

		laptop, _ := login(t, a, "alice", "secret")
		phone, _ := login(t, b, "alice", "secret")
		bob, _ := login(t, a, "bob", "hunter2")
		assert.Equal(t, http.StatusOK, call(t, b, "POST", "/logout-all", url.Values{}, laptop, false).status)
		for _, tok := range []string{laptop, phone} {
			assert.Equal(t, http.StatusUnauthorized, call(t, a, "GET", "/me", nil, tok, false).status)
		}
		assert.Equal(t, http.StatusOK, call(t, a, "GET", "/me", nil, bob, false).status, "another user is unaffected")
	})

	t.Run("bodies over the cap", func(t *testing.T) {
		over, atCap := jtiguard.MaxFormBytes+1, jtiguard.MaxFormBytes
		at, rt := login(t, a, "alice", "secret")

		r := call(t, a, "POST", "/mfa", padded(url.Values{"code": {"123456"}}, over), at, false)
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)
		assert.Equal(t, "invalid_request", r.str("error"))
		assert.Equal(t, "pwd", call(t, b, "GET", "/me", nil, at, false).str("acr"), "no step-up")

		act := call(t, a, "POST", "/transfer/token", url.Values{}, at, false).str("action_token")
		r = call(t, b, "POST", "/transfer", padded(url.Values{"action_token": {act}}, over), at, false)
		assert.Equal(t, http.StatusRequestEntityTooLarge, r.status)
		r = call(t, a, "POST", "/transfer", padded(url.Values{"action_token": {act}}, atCap), at, false)
		assert.Equal(t, http.StatusOK, r.status, "the refused request used nothing up")

		r = call(t, a, "POST", "/revoke", padded(url.Values{"token": {at}}, over), "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "invalid_request", r.str("error"))
		assert.Equal(t, http.StatusOK, call(t, b, "GET", "/me", nil, at, false).status, "not revoked")

		r = call(t, b, "POST", "/token", padded(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, over), "", true)
		assert.Equal(t, http.StatusBadRequest, r.status)
		assert.Equal(t, "invalid_request", r.str("error"))

		// At the cap, the example's own form is read like the library's.
		r = call(t, a, "POST", "/mfa", padded(url.Values{"code": {"123456"}}, atCap), at, false)
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, "mfa", call(t, b, "GET", "/me", nil, r.str("access_token"), false).str("acr"))
	})

	t.Run("healthz", func(t *testing.T) {
		for _, inst := range []string{a, b} {
			res, err := http.Get(inst + "/healthz")
			require.NoError(t, err)
			res.Body.Close()
			assert.Equal(t, http.StatusOK, res.StatusCode)
		}
	})

	t.Run("jwks has every token's kid", func(t *testing.T) {
		at, rt := login(t, a, "alice", "secret")
		set := fetchJWKS(t, b)
		for _, tok := range []string{at, rt} {
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.EdDSA})
			require.NoError(t, err)
			assert.NotEmpty(t, set.Key(jws.Signatures[0].Header.KeyID))
		}
	})
}

// padded returns form with a "pad" field that makes its encoding exactly n
// bytes long.
func padded(form url.Values, n int) url.Values {
	out := url.Values{"pad": {""}}
	for k, v := range form {
		out[k] = v
	}
	out.Set("pad", strings.Repeat("x", n-len(out.Encode())))
	return out
}

func fetchJWKS(t *testing.T, base string) jose.JSONWebKeySet {
	res, err := http.Get(base + "/.well-known/jwks.json")
	require.NoError(t, err)
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	require.NoError(t, json.NewDecoder(res.Body).Decode(&set))
	return set
}

func TestEndToEndInMemory(t *testing.T) {
	base := instance(t, filepath.Join(t.TempDir(), "key.pem"), "")
	suite(t, base, base)
}

func TestEndToEndTwoInstancesOnRedis(t *testing.T) {
	redis := redistest.Start(t)
	key := filepath.Join(t.TempDir(), "key.pem")
	a := instance(t, key, redis.Addr())
	b := instance(t, key, redis.Addr())
	suite(t, a, b)
}

// TestOAuth2Client: golang.org/x/oauth2, a client nobody here wrote, logs in
// with the password grant and refreshes through its TokenSource.
func TestOAuth2Client(t *testing.T) {
	base := instance(t, filepath.Join(t.TempDir(), "key.pem"), "")
	ctx := context.Background()
	conf := &oauth2.Config{
		ClientID:     "demo-client",
		ClientSecret: "demo-secret",
		Endpoint:     oauth2.Endpoint{TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInHeader},
		Scopes:       []string{"read"},
	}
	tok, err := conf.PasswordCredentialsToken(ctx, "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "Bearer", tok.TokenType)
	assert.NotEmpty(t, tok.RefreshToken)

	// Pretend the access token expired: the TokenSource refreshes.
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	fresh, err := conf.TokenSource(ctx, &stale).Token()
	require.NoError(t, err)
	assert.NotEqual(t, tok.AccessToken, fresh.AccessToken)
	assert.NotEqual(t, tok.RefreshToken, fresh.RefreshToken, "the refresh token rotated")

	res, err := oauth2.NewClient(ctx, oauth2.StaticTokenSource(fresh)).Get(base + "/me")
	require.NoError(t, err)
	defer res.Body.Close()
	var me map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&me))
	assert.Equal(t, "alice", me["sub"])
	assert.Equal(t, "read", me["scope"])

	// Within the grace window the rotated-away token gets the same
	// successor (a client that lost the answer); once the successor has
	// rotated too, it is reuse.
	again, err := conf.TokenSource(ctx, &stale).Token()
	require.NoError(t, err)
	assert.Equal(t, fresh.RefreshToken, again.RefreshToken)
	staleFresh := *fresh
	staleFresh.Expiry = time.Now().Add(-time.Minute)
	_, err = conf.TokenSource(ctx, &staleFresh).Token()
	require.NoError(t, err)
	_, err = conf.TokenSource(ctx, &stale).Token()
	var re *oauth2.RetrieveError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invalid_grant", re.ErrorCode)
}

// TestIndependentJOSE: go-jose, with nothing but the server's JWKS,
// verifies a token the server issued.
func TestIndependentJOSE(t *testing.T) {
	base := instance(t, filepath.Join(t.TempDir(), "key.pem"), "")
	at, _ := login(t, base, "alice", "secret")
	set := fetchJWKS(t, base)
	jws, err := jose.ParseSignedCompact(at, []jose.SignatureAlgorithm{jose.EdDSA})
	require.NoError(t, err)
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	require.Len(t, keys, 1)
	payload, err := jws.Verify(keys[0])
	require.NoError(t, err)
	var claims map[string]any
	require.NoError(t, json.Unmarshal(payload, &claims))
	assert.Equal(t, "alice", claims["sub"])
	assert.Equal(t, testIssuer, claims["iss"])
	assert.Equal(t, "at+jwt", jws.Signatures[0].Header.ExtraHeaders["typ"])
}

// TestRequestDeadline: a request the server cannot finish (a store that
// does not answer) gets a JSON 503 when requestTimeout is up, through the
// http.Server's own handler, even from a handler that ignores its context;
// and the handler's context carries the deadline, so a store call that
// watches it gives up then. synctest's clock makes the 5 s instant and exact.
func TestRequestDeadline(t *testing.T) {
	srv := newServer(t, filepath.Join(t.TempDir(), "key.pem"), "")
	h := srv.HTTPServer().Handler
	synctest.Test(t, func(t *testing.T) {
		deadlines, release := make(chan time.Time, 1), make(chan struct{})
		srv.mux.HandleFunc("GET /test/stuck", func(w http.ResponseWriter, r *http.Request) {
			d, _ := r.Context().Deadline()
			deadlines <- d
			<-release
		})
		defer close(release)

		start := time.Now()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/test/stuck", nil))
		assert.Equal(t, requestTimeout, time.Since(start))
		assert.Equal(t, start.Add(requestTimeout), <-deadlines)
		assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
		assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		var body map[string]string
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
		assert.Equal(t, "temporarily_unavailable", body["error"])
	})
}

// TestHTTPServerTimeouts: the http.Server bounds every phase of a
// connection, and its write deadline leaves room for the 503 of a request
// out of time.
func TestHTTPServerTimeouts(t *testing.T) {
	hs := newServer(t, filepath.Join(t.TempDir(), "key.pem"), "").HTTPServer()
	assert.Positive(t, hs.ReadHeaderTimeout)
	assert.GreaterOrEqual(t, hs.ReadTimeout, hs.ReadHeaderTimeout)
	assert.Positive(t, hs.IdleTimeout)
	assert.Greater(t, hs.WriteTimeout, requestTimeout)
}

// TestIntrospection: resource servers, and only they, learn whether an
// access token is active; the token's aud names them as configured.
func TestIntrospection(t *testing.T) {
	srv := newServerWith(t, func(c *Config) {
		c.KeyFile = filepath.Join(t.TempDir(), "key.pem")
		c.ResourceAudiences = []string{"https://orders.example.com"}
	})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	at, rt := login(t, ts.URL, "alice", "secret")

	introspect := func(id, secret, token string) reply {
		t.Helper()
		req, err := http.NewRequest("POST", ts.URL+"/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		r := reply{status: res.StatusCode, header: res.Header}
		require.NoError(t, json.NewDecoder(res.Body).Decode(&r.body))
		return r
	}
	r := introspect("orders-api", "orders-secret", at)
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, true, r.body["active"])
	assert.Equal(t, "alice", r.str("sub"))
	assert.Equal(t, []any{testIssuer + "/api", "https://orders.example.com"}, r.body["aud"])
	assert.Equal(t, map[string]any{"active": false}, introspect("orders-api", "orders-secret", rt).body, "refresh tokens are never active")

	for _, c := range [][2]string{{"orders-api", "wrong"}, {"demo-client", "demo-secret"}, {"nobody", ""}} {
		r := introspect(c[0], c[1], at)
		assert.Equal(t, http.StatusUnauthorized, r.status, c[0])
		assert.Equal(t, "invalid_client", r.str("error"), c[0])
	}
	pw := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"secret"},
		"client_id": {"orders-api"}, "client_secret": {"orders-secret"}}
	assert.Equal(t, "invalid_client", call(t, ts.URL, "POST", "/token", pw, "", false).str("error"), "a resource server is no OAuth client")

	assert.Equal(t, http.StatusOK, call(t, ts.URL, "POST", "/revoke", url.Values{"token": {at}}, "", true).status)
	assert.Equal(t, map[string]any{"active": false}, introspect("orders-api", "orders-secret", at).body)
}

// TestKeyDirRotation: a key added to the directory is published, signs
// once "active" names it and the keys are read again, and the tokens of the
// previous key stay valid until its file is removed; no restart.
func TestKeyDirRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	srv := newServerWith(t, func(c *Config) { c.KeyDir = dir })
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	old, _ := login(t, ts.URL, "alice", "secret")
	oldKID := kid(t, old)
	require.Len(t, fetchJWKS(t, ts.URL).Keys, 1)
	active, err := os.ReadFile(filepath.Join(dir, "active"))
	require.NoError(t, err)
	assert.Equal(t, "initial.pem\n", string(active), "created with the first key")

	// 1. Add: published, not signing.
	next := must(jtiguard.GenerateKey("", jtiguard.EdDSA))
	require.NoError(t, jtiguard.WriteKeyFile(filepath.Join(dir, "next.pem"), next))
	require.NoError(t, srv.ReloadKeys())
	set := fetchJWKS(t, ts.URL)
	assert.Len(t, set.Key(next.KID()), 1)
	at, _ := login(t, ts.URL, "alice", "secret")
	assert.Equal(t, oldKID, kid(t, at))

	// 2. Rotate.
	writeActive(t, dir, "next.pem")
	require.NoError(t, srv.ReloadKeys())
	at, _ = login(t, ts.URL, "alice", "secret")
	assert.Equal(t, next.KID(), kid(t, at))
	assert.Equal(t, http.StatusOK, call(t, ts.URL, "GET", "/me", nil, at, false).status)
	assert.Equal(t, http.StatusOK, call(t, ts.URL, "GET", "/me", nil, old, false).status, "the old key still verifies")

	// 3. Retire.
	require.NoError(t, os.Remove(filepath.Join(dir, "initial.pem")))
	require.NoError(t, srv.ReloadKeys())
	assert.Equal(t, http.StatusUnauthorized, call(t, ts.URL, "GET", "/me", nil, old, false).status)
	set = fetchJWKS(t, ts.URL)
	assert.Empty(t, set.Key(oldKID))

	// A directory the server cannot read keeps the last good keys.
	writeActive(t, dir, "missing.pem")
	require.Error(t, srv.ReloadKeys())
	assert.Equal(t, http.StatusOK, call(t, ts.URL, "GET", "/me", nil, at, false).status)

	fileOnly := newServer(t, filepath.Join(t.TempDir(), "key.pem"), "")
	assert.Error(t, fileOnly.ReloadKeys(), "a key file is not reloaded")
}

// TestKeyDirShared: servers started at once on one empty directory share
// one key.
func TestKeyDirShared(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	var wg sync.WaitGroup
	srvs := make([]*Server, 4)
	for i := range srvs {
		wg.Go(func() {
			srv, err := NewServer(context.Background(), Config{Issuer: testIssuer, KeyDir: dir, Logger: slog.New(slog.DiscardHandler)})
			if assert.NoError(t, err) {
				srvs[i] = srv
				t.Cleanup(srv.Close)
			}
		})
	}
	wg.Wait()
	for _, srv := range srvs[1:] {
		require.NotNil(t, srv)
		assert.Equal(t, srvs[0].keys.Signer().KID(), srv.keys.Signer().KID())
	}
}

// writeActive names the signer's file in dir's "active", replacing it in
// one step as KeyDir asks.
func writeActive(t *testing.T, dir, name string) {
	t.Helper()
	tmp := filepath.Join(dir, ".active")
	require.NoError(t, os.WriteFile(tmp, []byte(name+"\n"), 0o600))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "active")))
}

// kid is the kid in a token's header.
func kid(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	require.NoError(t, err)
	return jws.Signatures[0].Header.KeyID
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
