package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard/examples/passwordflow/tokenserver"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// scenario is the resource server's life beside the token server, on the
// state source startRS gives it: a user's token is accepted; revoked, or
// its session logged out, at the token server, it is refused at once; the
// token server rotates its key and the resource server, not restarted,
// accepts the new key's tokens and the old key's still.
func scenario(t *testing.T, n network, ts *tokenServer, startRS func() string) {
	// Step 1 of the rotation below comes before the resource server's
	// first fetch of the JWKS: a key is published before it signs, as
	// KeyDir's schedule has it, so the resource server knows it when it
	// does. A key that signs at once is picked up by the refetch an
	// unknown kid triggers, at most once per 10 s:
	// TestUnknownKeyAndIntrospectionCache shows that on synctest's clock.
	next := ts.addKey(t)
	rs := startRS()
	refused := func(t *testing.T, token, why string) {
		t.Helper()
		r := getOrders(t, n, rs, token)
		assert.Equal(t, http.StatusUnauthorized, r.status, why)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`, why)
	}

	t.Run("orders", func(t *testing.T) {
		r := getOrders(t, n, rs, login(t, n, ts))
		require.Equal(t, http.StatusOK, r.status, r.body)
		assert.Equal(t, "alice", r.str("sub"))
		assert.Equal(t, "no-store", r.header.Get("Cache-Control"))

		r = getOrders(t, n, rs, "")
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.Equal(t, `Bearer realm="orders"`, r.header.Get("WWW-Authenticate"))
	})

	t.Run("revoked at the token server", func(t *testing.T) {
		at := login(t, n, ts)
		require.Equal(t, http.StatusOK, getOrders(t, n, rs, at).status)
		require.Equal(t, http.StatusOK, call(t, n.client(), "POST", ts.url+"/revoke", url.Values{"token": {at}}, "", true).status)
		refused(t, at, "revoked")
	})

	t.Run("logged out at the token server", func(t *testing.T) {
		at := login(t, n, ts)
		require.Equal(t, http.StatusOK, getOrders(t, n, rs, at).status)
		require.Equal(t, http.StatusOK, call(t, n.client(), "POST", ts.url+"/logout", url.Values{}, at, false).status)
		refused(t, at, "its session ended")
	})

	t.Run("key rotation", func(t *testing.T) {
		before := login(t, n, ts)
		ts.activate(t) // step 2: the new key signs
		at := login(t, n, ts)
		require.Equal(t, next.KID(), kid(t, at))
		require.NotEqual(t, kid(t, before), kid(t, at))
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, at).status, "the new key's token, on the same resource server")
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, before).status, "the old key's token, until the key is retired")
		assert.EqualValues(t, 1, ts.fetches.Load(), "one fetch of the JWKS: the first")
	})

	t.Run("healthz", func(t *testing.T) {
		assert.Equal(t, http.StatusOK, call(t, n.client(), "GET", rs+"/healthz", nil, "", false).status)
	})
}

// TestIntrospection: the resource server shares nothing with the token
// server but its URLs: keys from the JWKS, state from introspection.
func TestIntrospection(t *testing.T) {
	n := loopback{}
	ts := startTokenServer(t, n, "", testAudience)
	scenario(t, n, ts, func() string {
		return startResourceServer(t, n, Config{
			JWKSURL:          ts.url + "/.well-known/jwks.json",
			IntrospectionURL: ts.url + "/introspect",
			ClientID:         "orders-api",
			ClientSecret:     "orders-secret",
			// Every verification asks, so a revocation is refused at once;
			// with the default cache (5 s), within that:
			// TestUnknownKeyAndIntrospectionCache.
			IntrospectionCacheTTL: -1,
		})
	})
}

// TestSharedRedis: keys from the JWKS, state from the token server's Redis.
// It takes 11 s, the wait of redisstore.New on a fresh prefix (twice
// MaxClockSkew, plus up to a second), so it runs beside the others.
func TestSharedRedis(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	n := loopback{}
	ts := startTokenServer(t, n, redis.Addr(), testAudience)
	scenario(t, n, ts, func() string {
		return startResourceServer(t, n, Config{
			JWKSURL:     ts.url + "/.well-known/jwks.json",
			RedisAddr:   redis.Addr(),
			RedisPrefix: tokenserver.RedisPrefix,
		})
	})
}

// TestUnknownKeyAndIntrospectionCache runs every server in process on an
// in-memory network in a synctest bubble, so that the library's documented
// bounds are met exactly and at once, on the bubble's clock:
//
//   - a key the token server signs with as soon as it adds it is unknown to
//     the resource server, which refuses its tokens until 10 s after its
//     last fetch of the JWKS (the rate limit on refetches an unknown kid
//     triggers); from then the first such token triggers one fetch and is
//     accepted: no restart;
//   - an "active" introspection answer is reused for the default CacheTTL,
//     5 s from when it was asked: a token revoked, or logged out, at R is
//     still accepted before R + 5 s and refused from then on.
func TestUnknownKeyAndIntrospectionCache(t *testing.T) {
	const cacheTTL = 5 * time.Second         // IntrospectionConfig.CacheTTL's default
	const refetchInterval = 10 * time.Second // RemoteKeys: between fetches an unknown kid may start
	synctest.Test(t, func(t *testing.T) {
		n := newMemNet(t)
		ts := startTokenServer(t, n, "", testAudience)
		fetched := time.Now()
		rs := startResourceServer(t, n, Config{
			JWKSURL:          ts.url + "/.well-known/jwks.json",
			IntrospectionURL: ts.url + "/introspect",
			ClientID:         "orders-api",
			ClientSecret:     "orders-secret",
		})
		require.EqualValues(t, 1, ts.fetches.Load())
		// Three sessions of alice, on the first key.
		old, revoked, loggedOut := login(t, n, ts), login(t, n, ts), login(t, n, ts)
		require.Equal(t, http.StatusOK, getOrders(t, n, rs, old).status)

		// The token server adds a key and signs with it at once.
		next := ts.addKey(t)
		ts.activate(t)
		rotated := login(t, n, ts)
		require.Equal(t, next.KID(), kid(t, rotated))
		assert.Equal(t, http.StatusUnauthorized, getOrders(t, n, rs, rotated).status, "unknown kid, and no refetch within 10 s of the last fetch")
		assert.EqualValues(t, 1, ts.fetches.Load())

		require.Equal(t, http.StatusOK, getOrders(t, n, rs, revoked).status) // answered active, cached
		require.Equal(t, http.StatusOK, call(t, n.client(), "POST", ts.url+"/revoke", url.Values{"token": {revoked}}, "", true).status)
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, revoked).status, "within CacheTTL: the cached answer stands")
		time.Sleep(cacheTTL)
		assert.Equal(t, http.StatusUnauthorized, getOrders(t, n, rs, revoked).status, "revoked, refused from R + CacheTTL")

		require.Equal(t, http.StatusOK, getOrders(t, n, rs, loggedOut).status)
		require.Equal(t, http.StatusOK, call(t, n.client(), "POST", ts.url+"/logout", url.Values{}, loggedOut, false).status)
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, loggedOut).status, "within CacheTTL: the cached answer stands")
		time.Sleep(cacheTTL)
		assert.Equal(t, http.StatusUnauthorized, getOrders(t, n, rs, loggedOut).status, "logged out, refused from R + CacheTTL")

		time.Sleep(time.Until(fetched.Add(refetchInterval))) // no time left by now: the waits above took it
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, rotated).status, "the unknown kid is fetched and accepted")
		assert.EqualValues(t, 2, ts.fetches.Load())
		assert.Equal(t, http.StatusOK, getOrders(t, n, rs, old).status, "the old key's tokens too, until it is retired")
		assert.Equal(t, fetched.Add(refetchInterval), time.Now())
	})
}

// TestAudience: an access token that does not name the resource server in
// its aud is refused there, though the token server accepts it.
func TestAudience(t *testing.T) {
	n := loopback{}
	ts := startTokenServer(t, n, "") // no -rs-audience: tokens for ISSUER/api only
	rs := startResourceServer(t, n, Config{
		JWKSURL: ts.url + "/.well-known/jwks.json", IntrospectionURL: ts.url + "/introspect",
		ClientID: "orders-api", ClientSecret: "orders-secret",
	})
	at := login(t, n, ts)
	assert.Equal(t, http.StatusOK, call(t, nil, "GET", ts.url+"/me", nil, at, false).status)
	r := getOrders(t, n, rs, at)
	assert.Equal(t, http.StatusUnauthorized, r.status)
	assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_token"`)
}

// TestFailClosed: a resource server the introspection endpoint refuses
// (wrong credentials) is not ready, and accepts nothing: 503, never a pass.
func TestFailClosed(t *testing.T) {
	n := loopback{}
	ts := startTokenServer(t, n, "", testAudience)
	rs := startResourceServer(t, n, Config{
		JWKSURL: ts.url + "/.well-known/jwks.json", IntrospectionURL: ts.url + "/introspect",
		ClientID: "orders-api", ClientSecret: "wrong",
	})
	assert.Equal(t, http.StatusServiceUnavailable, call(t, nil, "GET", rs+"/healthz", nil, "", false).status)
	assert.Equal(t, http.StatusServiceUnavailable, getOrders(t, n, rs, login(t, n, ts)).status)
}

// TestRequestDeadline: an introspection endpoint that never answers costs
// a request its deadline, requestTimeout, and the answer is a JSON 503.
func TestRequestDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newMemNet(t)
		ts := startTokenServer(t, n, "", testAudience)
		release := make(chan struct{})
		stuck := n.serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client leave
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})})
		t.Cleanup(func() { close(release) })
		rs := startResourceServer(t, n, Config{
			JWKSURL: ts.url + "/.well-known/jwks.json", IntrospectionURL: stuck + "/introspect",
			ClientID: "orders-api", ClientSecret: "orders-secret",
		})
		at := login(t, n, ts)
		for _, path := range []string{"/orders", "/healthz"} {
			start := time.Now()
			r := call(t, n.client(), "GET", rs+path, nil, at, false)
			assert.Equal(t, requestTimeout, time.Since(start), path)
			assert.Equal(t, http.StatusServiceUnavailable, r.status, path)
			assert.Equal(t, "application/json", r.header.Get("Content-Type"), path)
		}
	})
}

// TestHTTPServerTimeouts: every phase of a connection is bounded, and the
// write deadline leaves room for the 503 of a request out of time.
func TestHTTPServerTimeouts(t *testing.T) {
	hs := (&Server{}).HTTPServer()
	assert.Positive(t, hs.ReadHeaderTimeout)
	assert.GreaterOrEqual(t, hs.ReadTimeout, hs.ReadHeaderTimeout)
	assert.Positive(t, hs.IdleTimeout)
	assert.Greater(t, hs.WriteTimeout, requestTimeout)
}

// TestFlags: flags that cannot work are refused before the server starts.
func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-introspect", "http://127.0.0.1:8080/introspect", "-redis", "127.0.0.1:6379"},
		{"-introspect", "http://127.0.0.1:8080/introspect", "-client", "orders-api"},
		{"-introspect", "http://127.0.0.1:8080/introspect", "-client", "orders-api:"},
	} {
		// An address that cannot be listened on: a flag accepted by mistake
		// would fail later, with another error.
		err := run(append(args, "-addr", "256.0.0.1:0"), io.Discard)
		if assert.Error(t, err, strings.Join(args, " ")) {
			assert.Regexp(t, `^-[a-z-]+`, err.Error())
		}
	}
	_, err := NewServer(t.Context(), Config{JWKSURL: "http://127.0.0.1:1/jwks"})
	assert.Error(t, err, "no state source")
}
