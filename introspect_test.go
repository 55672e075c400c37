package jtiguard_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// The credentials of the resource server that asks the endpoints below.
const (
	rsClient = "api-server"
	rsSecret = "rs-secret-0123456789"
)

func rsClients(_ context.Context, id, secret string) bool {
	return id == rsClient && jtiguard.SecretsEqual(secret, rsSecret)
}

// downStore is a MemoryStore whose Check fails while down is set.
type downStore struct {
	*jtiguard.MemoryStore
	down atomic.Bool
}

var errStoreDown = errors.New("store down")

func (s *downStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	if s.down.Load() {
		return store.Live, errStoreDown
	}
	return s.MemoryStore.Check(ctx, t)
}

// introspected is an endpoint's answer.
type introspected struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// introspectAt posts form to the endpoint at u with the resource server's
// credentials in HTTP Basic, unless the form carries its own.
func introspectAt(t *testing.T, u string, form url.Values) introspected {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if !form.Has("client_id") {
		req.SetBasicAuth(rsClient, rsSecret)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	res := introspected{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	require.NoError(t, json.Unmarshal(raw, &res.body), "%s", raw)
	return res
}

func assertInactive(t *testing.T, res introspected, why string) {
	t.Helper()
	assert.Equal(t, http.StatusOK, res.status, why)
	assert.Equal(t, "{\"active\":false}\n", res.raw, why+": active false alone")
	assert.Equal(t, "no-store", res.header.Get("Cache-Control"), why)
}

// TestIntrospectionEndpoint: an active access token is answered with its
// claims, whatever its audience; every token that Verify would refuse for
// anything but the audience, and every token of another class, is
// {"active":false}; the client must authenticate; a store that cannot
// answer is a 503, never active.
func TestIntrospectionEndpoint(t *testing.T) {
	store := &downStore{}
	sf := newSessions(t, jtiguard.SessionConfig{}, func(c *jtiguard.VerifierConfig) {
		store.MemoryStore = c.Store.(*jtiguard.MemoryStore)
		c.Store = store
	})
	srv := httptest.NewServer(&jtiguard.IntrospectionEndpoint{Verifier: sf.ver, Clients: rsClients, Realm: "auth"})
	t.Cleanup(srv.Close)
	ctx := context.Background()
	ask := func(tok string) introspected {
		t.Helper()
		return introspectAt(t, srv.URL, url.Values{"token": {tok}})
	}

	pair := sf.login(t, "alice") // client demo-client, scope read, acr pwd, amr pwd
	res := ask(pair.AccessToken)
	require.Equal(t, http.StatusOK, res.status, res.raw)
	assert.Equal(t, "no-store", res.header.Get("Cache-Control"))
	assert.Equal(t, "application/json", res.header.Get("Content-Type"))
	a := pair.Access
	assert.Equal(t, map[string]any{
		"active":     true,
		"scope":      "read",
		"client_id":  "demo-client",
		"token_type": "Bearer",
		"exp":        float64(a.ExpiresAt.Unix()),
		"iat":        float64(a.IssuedAt.Unix()),
		"sub":        "alice",
		"aud":        testAudience,
		"iss":        testIssuer,
		"jti":        a.ID.String(),
		"sid":        a.Session,
		"acr":        "pwd",
		"auth_time":  float64(a.AuthTime.Unix()),
	}, res.body, "the registered members, sid, and nothing else (no amr, no generation)")

	// Another audience, two of them, and nbf: active, aud reported as the
	// token carries it (the resource server checks it).
	nbf := t0.Add(-time.Minute).Unix()
	other := signRaw(t, jwt.SigningMethodEdDSA, sf.priv, goodHeader,
		payload(t, fmt.Sprintf(`"aud":["https://one.example.com","https://two.example.com"],"nbf":%d`, nbf), "aud"))
	res = ask(other)
	require.Equal(t, true, res.body["active"], res.raw)
	assert.Equal(t, []any{"https://one.example.com", "https://two.example.com"}, res.body["aud"])
	assert.Equal(t, float64(nbf), res.body["nbf"])
	_, err := sf.ver.Verify(ctx, other)
	require.ErrorIs(t, err, jtiguard.ErrInvalidAudience, "Verify itself still checks the audience")

	// token_type_hint is not trusted: the token's typ decides.
	res = introspectAt(t, srv.URL, url.Values{"token": {pair.AccessToken}, "token_type_hint": {"refresh_token"}})
	assert.Equal(t, true, res.body["active"], "an access token hinted as a refresh token")
	assertInactive(t, introspectAt(t, srv.URL, url.Values{"token": {pair.RefreshToken}, "token_type_hint": {"access_token"}}), "a refresh token hinted as an access token")
	assertInactive(t, ask(pair.RefreshToken), "a refresh token")
	_, err = sf.sess.Refresh(ctx, pair.RefreshToken)
	require.NoError(t, err, "introspecting a refresh token uses nothing up")

	// Credentials in the form work too.
	res = introspectAt(t, srv.URL, url.Values{"token": {pair.AccessToken}, "client_id": {rsClient}, "client_secret": {rsSecret}})
	assert.Equal(t, true, res.body["active"])

	// Not active, each for its own reason.
	assertInactive(t, ask("garbage"), "garbage")
	assertInactive(t, ask(pair.AccessToken+"x"), "a bad signature")
	access, _ := sf.access(t)
	require.NoError(t, sf.ver.Revoke(ctx, access))
	assertInactive(t, ask(access), "a revoked token")
	once, _ := sf.oneTime(t, "confirm")
	assertInactive(t, ask(once), "a one-time token, unused")
	_, err = sf.ver.Consume(ctx, once, "confirm")
	require.NoError(t, err)
	assertInactive(t, ask(once), "a one-time token, used")
	ended := sf.login(t, "bob")
	require.NoError(t, sf.sess.Logout(ctx, ended.AccessToken))
	assertInactive(t, ask(ended.AccessToken), "a token of an ended session")
	stepped := sf.login(t, "carol")
	_, err = sf.sess.Renew(ctx, stepped.AccessToken, jtiguard.Change{ACR: "mfa"})
	require.NoError(t, err)
	assertInactive(t, ask(stepped.AccessToken), "a token superseded by a step-up")
	foreign, _, err := must(jtiguard.NewIssuer(sf.keys, jtiguard.IssuerConfig{Issuer: "https://evil.example.com", Now: sf.clock.Now})).
		Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	assertInactive(t, ask(foreign), "another issuer's token")
	forged := signRaw(t, jwt.SigningMethodEdDSA, ed25519.NewKeyFromSeed([]byte("another key seed of 32 bytes!!!!")), goodHeader, payload(t, ""))
	assertInactive(t, ask(forged), "a token signed by another key")

	// The client must authenticate.
	for name, form := range map[string]url.Values{
		"wrong secret": {"token": {pair.AccessToken}, "client_id": {rsClient}, "client_secret": {"wrong"}},
		"no secret":    {"token": {pair.AccessToken}, "client_id": {rsClient}},
		"no client":    {"token": {pair.AccessToken}, "client_id": {""}},
	} {
		res := introspectAt(t, srv.URL, form)
		assert.Equal(t, http.StatusUnauthorized, res.status, name)
		assert.Equal(t, "invalid_client", res.body["error"], name)
		assert.Equal(t, `Basic realm="auth"`, res.header.Get("WWW-Authenticate"), name)
		assert.NotContains(t, res.raw, "active", name)
	}
	res = introspectAt(t, srv.URL, url.Values{})
	assert.Equal(t, http.StatusBadRequest, res.status, "no token")
	assert.Equal(t, "invalid_request", res.body["error"])
	resp, err := http.Get(srv.URL + "?token=" + url.QueryEscape(pair.AccessToken))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// A store that cannot answer: 503, never active.
	store.down.Store(true)
	res = ask(pair.AccessToken)
	assert.Equal(t, http.StatusServiceUnavailable, res.status)
	assert.Equal(t, "temporarily_unavailable", res.body["error"])
	assert.Equal(t, "1", res.header.Get("Retry-After"))
	assert.NotContains(t, res.raw, "active")
	assert.Contains(t, sf.eventKinds(), jtiguard.EventStoreUnavailable)
	assertInactive(t, ask("garbage"), "a token that is not one needs no store")
	store.down.Store(false)

	// Expired: not active, even unrevoked.
	fresh, _ := sf.access(t)
	assert.Equal(t, true, ask(fresh).body["active"])
	sf.clock.Advance(jtiguard.DefaultAccessTTL)
	assertInactive(t, ask(fresh), "an expired token")
}

// bubbleEpoch is where a synctest bubble's clock starts.
var bubbleEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// issuerServer is an authorization server with an IntrospectionEndpoint on
// a real server, for resource servers in synctest bubbles: it runs outside
// them (a goroutine waiting in Accept would keep a bubble's clock from
// moving), on a manual clock that starts where a bubble's does and that the
// test moves with the bubble's (advance). It counts the requests it
// answers; down makes it answer 500.
type issuerServer struct {
	*httptest.Server
	clock  *clock
	keys   *jtiguard.KeySet
	issuer *jtiguard.Issuer
	ver    *jtiguard.Verifier
	hits   atomic.Int64
	down   atomic.Bool
}

func newIssuerServer(t *testing.T) *issuerServer {
	t.Helper()
	s := &issuerServer{clock: &clock{t: bubbleEpoch}}
	k := must(jtiguard.NewKey("k1", jtiguard.EdDSA, ed25519.NewKeyFromSeed(testSeed)))
	s.keys = mustSet(t, k)
	store := must(jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: s.clock.Now}))
	s.issuer = must(jtiguard.NewIssuer(s.keys, jtiguard.IssuerConfig{Issuer: testIssuer, Now: s.clock.Now}))
	s.ver = must(jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: store, Now: s.clock.Now, Logger: quiet}))
	t.Cleanup(s.ver.Close)
	endpoint := &jtiguard.IntrospectionEndpoint{Verifier: s.ver, Clients: rsClients}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		endpoint.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// advance moves the bubble's clock, and the issuer's with it.
func (s *issuerServer) advance(d time.Duration) {
	time.Sleep(d)
	s.clock.Advance(d)
}

func (s *issuerServer) access(t *testing.T) string {
	t.Helper()
	tok, _, err := s.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	return tok
}

// resourceServer is a resource server in a bubble: the issuer's public
// keys, and its state through an IntrospectionStore on s.
type resourceServer struct {
	store *jtiguard.IntrospectionStore
	ver   *jtiguard.Verifier
}

func newResourceServer(t *testing.T, s *issuerServer, cfg jtiguard.IntrospectionConfig) *resourceServer {
	t.Helper()
	return newResourceServerAt(t, s, s.URL, cfg)
}

// newResourceServerAt is newResourceServer asking the endpoint at u.
func newResourceServerAt(t *testing.T, s *issuerServer, u string, cfg jtiguard.IntrospectionConfig) *resourceServer {
	t.Helper()
	require.True(t, time.Now().Equal(s.clock.Now()), "inside a bubble, on the issuer's clock")
	doc, err := s.keys.JWKS()
	require.NoError(t, err)
	public, err := jtiguard.ParseJWKS(doc)
	require.NoError(t, err)
	cfg.ClientID, cfg.ClientSecret = rsClient, rsSecret
	if cfg.Client == nil {
		cfg.Client = bubbleClient()
	}
	rs := &resourceServer{}
	rs.store, err = jtiguard.NewIntrospectionStore(u, cfg)
	require.NoError(t, err)
	t.Cleanup(rs.store.Close)
	rs.ver, err = jtiguard.NewVerifier(public, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: rs.store, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(rs.ver.Close)
	return rs
}

func (rs *resourceServer) verify(tok string) error {
	_, err := rs.ver.Verify(context.Background(), tok)
	return err
}

// TestIntrospectionStoreRevocation: a live token verifies, and its answer
// is reused for CacheTTL counted from before the request: a revocation on
// the issuer is seen once that has passed, and not before. The inactive
// answer is then kept until the token's exp; past it the Verifier refuses
// the token on its own.
func TestIntrospectionStoreRevocation(t *testing.T) {
	s := newIssuerServer(t)
	synctest.Test(t, func(t *testing.T) {
		const ttl = 10 * time.Second
		rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{CacheTTL: ttl})
		tok := s.access(t)
		require.NoError(t, rs.verify(tok))
		require.NoError(t, rs.verify(tok))
		assert.EqualValues(t, 1, s.hits.Load(), "the second verification is answered from the cache")

		s.advance(time.Second)
		require.NoError(t, s.ver.Revoke(context.Background(), tok))
		s.advance(ttl - time.Second - time.Nanosecond)
		assert.NoError(t, rs.verify(tok), "within CacheTTL of the answer, the revocation is not seen yet")
		assert.EqualValues(t, 1, s.hits.Load())

		s.advance(time.Nanosecond)
		assert.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked, "CacheTTL after the answer's request, it is")
		assert.EqualValues(t, 2, s.hits.Load())

		s.advance(jtiguard.DefaultAccessTTL - ttl - time.Nanosecond)
		assert.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked)
		assert.EqualValues(t, 2, s.hits.Load(), "an inactive answer is kept until exp")
		s.advance(time.Nanosecond)
		assert.ErrorIs(t, rs.verify(tok), jtiguard.ErrExpired)
		assert.EqualValues(t, 2, s.hits.Load(), "an expired token is refused without asking")
	})
}

// TestIntrospectionStoreCaching: an inactive answer is kept until exp (one
// request for the token's life), a live one never past exp; with CacheTTL
// negative every verification of a live token asks; with CacheSize
// negative every verification asks.
func TestIntrospectionStoreCaching(t *testing.T) {
	t.Run("inactive until exp", func(t *testing.T) {
		s := newIssuerServer(t)
		synctest.Test(t, func(t *testing.T) {
			rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{})
			tok := s.access(t)
			require.NoError(t, s.ver.Revoke(context.Background(), tok))
			for range 10 {
				assert.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked)
				s.advance(jtiguard.DefaultAccessTTL / 10)
			}
			assert.EqualValues(t, 1, s.hits.Load(), "one request for the token's whole life")
		})
	})
	t.Run("live never past exp", func(t *testing.T) {
		s := newIssuerServer(t)
		synctest.Test(t, func(t *testing.T) {
			rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{CacheTTL: time.Minute})
			tok, c, err := s.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
			require.NoError(t, err)
			// Check as a Verifier would, for a token that ends in 2 s.
			ref := store.TokenRef{ID: c.ID, Subject: c.Subject, IssuedAt: c.IssuedAt, ExpiresAt: time.Now().Add(2 * time.Second), Token: tok}
			check := func() store.Status {
				st, err := rs.store.Check(context.Background(), ref)
				require.NoError(t, err)
				return st
			}
			assert.Equal(t, store.Live, check())
			s.advance(2*time.Second - time.Nanosecond)
			assert.Equal(t, store.Live, check())
			assert.EqualValues(t, 1, s.hits.Load())
			s.advance(time.Nanosecond)
			assert.Equal(t, store.Live, check())
			assert.EqualValues(t, 2, s.hits.Load(), "the answer was not reused past the token's end")
		})
	})
	t.Run("CacheTTL negative", func(t *testing.T) {
		s := newIssuerServer(t)
		synctest.Test(t, func(t *testing.T) {
			rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{CacheTTL: -1})
			tok := s.access(t)
			for range 3 {
				require.NoError(t, rs.verify(tok))
			}
			assert.EqualValues(t, 3, s.hits.Load(), "a live answer is never reused")
			require.NoError(t, s.ver.Revoke(context.Background(), tok))
			for range 3 {
				require.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked)
			}
			assert.EqualValues(t, 4, s.hits.Load(), "an inactive one still is")
		})
	})
	t.Run("CacheSize negative", func(t *testing.T) {
		s := newIssuerServer(t)
		synctest.Test(t, func(t *testing.T) {
			rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{CacheSize: -1})
			tok := s.access(t)
			require.NoError(t, rs.verify(tok))
			require.NoError(t, rs.verify(tok))
			require.NoError(t, s.ver.Revoke(context.Background(), tok))
			require.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked)
			require.ErrorIs(t, rs.verify(tok), jtiguard.ErrRevoked)
			assert.EqualValues(t, 4, s.hits.Load())
		})
	})
}

func assertStoreUnavailable(t *testing.T, err error, why string) {
	t.Helper()
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable, why)
	assert.NotErrorIs(t, err, jtiguard.ErrInvalidToken, why)
	var e *jtiguard.Error
	require.ErrorAs(t, err, &e, why)
	assert.Equal(t, http.StatusServiceUnavailable, e.Status, why)
}

// TestIntrospectionStoreEndpointDown: while the endpoint fails, a cached
// live answer stands for its CacheTTL, and every other verification fails
// with ErrStoreUnavailable (503), never a pass; so does an endpoint that
// cannot be reached at all. Once the endpoint answers again, so does the
// Verifier.
func TestIntrospectionStoreEndpointDown(t *testing.T) {
	s := newIssuerServer(t)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	synctest.Test(t, func(t *testing.T) {
		rs := newResourceServer(t, s, jtiguard.IntrospectionConfig{})
		cached := s.access(t)
		require.NoError(t, rs.verify(cached))
		s.down.Store(true)
		assert.NoError(t, rs.verify(cached), "a cached live answer stands for its CacheTTL")
		assertStoreUnavailable(t, rs.verify(s.access(t)), "a token not cached")
		s.advance(5 * time.Second)
		assertStoreUnavailable(t, rs.verify(cached), "the default CacheTTL (5 s) has passed")
		s.down.Store(false)
		assert.NoError(t, rs.verify(cached))

		unreachable := newResourceServerAt(t, s, gone.URL, jtiguard.IntrospectionConfig{})
		assertStoreUnavailable(t, unreachable.verify(cached), "an endpoint that cannot be reached")
	})
}

// fakeIntrospection is an endpoint that answers what a test tells it, and
// records the requests it got.
type fakeIntrospection struct {
	*httptest.Server
	mu       sync.Mutex
	status   int
	ctype    string
	body     string
	location string
	requests []*http.Request
	forms    []url.Values
}

func newFakeIntrospection(t *testing.T) *fakeIntrospection {
	f := &fakeIntrospection{status: http.StatusOK, ctype: "application/json", body: `{"active":true}`}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.requests = append(f.requests, r)
		f.forms = append(f.forms, r.PostForm)
		if f.location != "" {
			w.Header().Set("Location", f.location)
		}
		w.Header().Set("Content-Type", f.ctype)
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIntrospection) answer(status int, ctype, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.ctype, f.body = status, ctype, body
}

func (f *fakeIntrospection) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// TestIntrospectionStoreAnswers: what the store sends (a POST form with the
// token and the hint, Basic credentials form-urlencoded first, nothing in
// the URL) and how strictly it reads the answer: only a 200
// application/json object with one boolean "active" is an answer; anything
// else is an error, never Live.
func TestIntrospectionStoreAnswers(t *testing.T) {
	f := newFakeIntrospection(t)
	const secret = "s3cret+/=:x" // characters that Basic needs encoded
	s, err := jtiguard.NewIntrospectionStore(f.URL+"/introspect", jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: secret, CacheSize: -1})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	id := must(store.NewJTI(nil))
	ref := store.TokenRef{ID: id, Subject: "alice", ExpiresAt: time.Now().Add(time.Minute), Token: "header.payload.signature"}
	ctx := context.Background()

	st, err := s.Check(ctx, ref)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st)
	r := f.requests[0]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/introspect", r.URL.Path)
	assert.Empty(t, r.URL.RawQuery, "the token never goes in the URL")
	assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	assert.Equal(t, url.Values{"token": {ref.Token}, "token_type_hint": {"access_token"}}, f.forms[0])
	user, pass, ok := r.BasicAuth()
	require.True(t, ok)
	assert.Equal(t, rsClient, user)
	assert.Equal(t, url.QueryEscape(secret), pass, "RFC 6749 section 2.3.1: form-urlencoded, then Basic")

	for _, tc := range []struct {
		name   string
		status int
		ctype  string
		body   string
		want   store.Status // 0 with bad set
		bad    bool
	}{
		{name: "active", body: `{"active":true,"scope":"read","exp":1}`, want: store.Live},
		{name: "active, its own jti", body: `{"active":true,"jti":"` + id.String() + `"}`, want: store.Live},
		{name: "inactive", body: `{"active":false}`, want: store.Revoked},
		{name: "inactive, with members", body: ` {"jti":"other","active":false,"x":[{"y":null}]} `, want: store.Revoked},
		{name: "charset", ctype: "application/json; charset=utf-8", body: `{"active":false}`, want: store.Revoked},
		{name: "another token's jti", body: `{"active":true,"jti":"AAAAAAAAAAAAAAAAAAAAAA"}`, bad: true},
		{name: "two jti", body: `{"active":true,"jti":"` + id.String() + `","jti":"x"}`, bad: true},
		{name: "401", status: http.StatusUnauthorized, body: `{"error":"invalid_client"}`, bad: true},
		{name: "500", status: http.StatusInternalServerError, body: `{"active":true}`, bad: true},
		{name: "204", status: http.StatusNoContent, body: ``, bad: true},
		{name: "text/html", ctype: "text/html", body: `{"active":true}`, bad: true},
		{name: "no content type", ctype: "-", body: `{"active":true}`, bad: true},
		{name: "active as a string", body: `{"active":"true"}`, bad: true},
		{name: "active as a number", body: `{"active":1}`, bad: true},
		{name: "active null", body: `{"active":null}`, bad: true},
		{name: "no active", body: `{"scope":"read"}`, bad: true},
		{name: "two active", body: `{"active":false,"active":true}`, bad: true},
		{name: "case variant", body: `{"active":false,"Active":true}`, bad: true},
		{name: "case variant alone", body: `{"ACTIVE":true}`, bad: true},
		{name: "array", body: `[{"active":true}]`, bad: true},
		{name: "trailing data", body: `{"active":true}{"active":false}`, bad: true},
		{name: "truncated", body: `{"active":true`, bad: true},
		{name: "truex", body: `{"active":truex}`, bad: true},
		{name: "empty", body: ``, bad: true},
		{name: "too large", body: `{"active":true,"pad":"` + strings.Repeat("x", 64<<10) + `"}`, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ctype := tc.status, tc.ctype
			if status == 0 {
				status = http.StatusOK
			}
			switch ctype {
			case "":
				ctype = "application/json"
			case "-":
				ctype = ""
			}
			f.answer(status, ctype, tc.body)
			st, err := s.Check(ctx, ref)
			if tc.bad {
				require.Error(t, err)
				assert.NotContains(t, err.Error(), ref.Token)
				assert.NotEqual(t, store.Live, st)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, st)
		})
	}

	// A redirect is not followed: the token would go with a 307.
	elsewhere := newFakeIntrospection(t)
	f.mu.Lock()
	f.status, f.location = http.StatusTemporaryRedirect, elsewhere.URL
	f.mu.Unlock()
	_, err = s.Check(ctx, ref)
	require.Error(t, err)
	assert.Zero(t, elsewhere.count())

	// A TokenRef without the token (not from Verify) is a mistake.
	_, err = s.Check(ctx, store.TokenRef{ID: id, ExpiresAt: ref.ExpiresAt})
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
}

func TestNewIntrospectionStoreConfig(t *testing.T) {
	ok := jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: rsSecret}
	for _, u := range []string{"https://auth.example.com/introspect", "http://127.0.0.1:8080/introspect", "http://localhost/i", "http://[::1]/i"} {
		s, err := jtiguard.NewIntrospectionStore(u, ok)
		require.NoError(t, err, u)
		s.Close()
		s.Close()
	}
	for _, u := range []string{"http://auth.example.com/introspect", "/introspect", "ftp://auth.example.com/", "https://"} {
		_, err := jtiguard.NewIntrospectionStore(u, ok)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, u)
	}
	for name, cfg := range map[string]jtiguard.IntrospectionConfig{
		"no client id":     {ClientSecret: rsSecret},
		"no client secret": {ClientID: rsClient},
		"CacheTTL over 1m": {ClientID: rsClient, ClientSecret: rsSecret, CacheTTL: time.Minute + time.Nanosecond},
	} {
		_, err := jtiguard.NewIntrospectionStore("https://auth.example.com/introspect", cfg)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, name)
	}
	s, err := jtiguard.NewIntrospectionStore("https://auth.example.com/introspect", jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: rsSecret, CacheTTL: time.Minute})
	require.NoError(t, err, "a minute is the most")
	s.Close()
}

// TestIntrospectionStoreReadOnly: a resource server can neither use up a
// one-time token nor revoke through introspection: each is refused with an
// error matching ErrConfig, and nothing is asked.
func TestIntrospectionStoreReadOnly(t *testing.T) {
	fx := newFixture(t)
	f := newFakeIntrospection(t)
	s, err := jtiguard.NewIntrospectionStore(f.URL, jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: rsSecret})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	ver, err := jtiguard.NewVerifier(fx.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: s, Now: fx.clock.Now, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	ctx := context.Background()

	access, c := fx.access(t)
	_, err = ver.Verify(ctx, access)
	require.NoError(t, err, "checking is what it does")
	once, _ := fx.oneTime(t, "confirm")
	_, err = ver.Consume(ctx, once, "confirm")
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
	assertStoreUnavailable(t, err, "Consume fails closed")
	assert.ErrorIs(t, ver.Revoke(ctx, access), jtiguard.ErrConfig)
	assert.ErrorIs(t, ver.RevokeID(ctx, c.ID, c.Subject, c.ExpiresAt), jtiguard.ErrConfig)
	_, err = s.Consume(ctx, store.TokenRef{ID: c.ID, Token: once}, 1)
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
	assert.ErrorIs(t, s.Revoke(ctx, store.TokenRef{ID: c.ID, Token: access}), jtiguard.ErrConfig)
	assert.Equal(t, 1, f.count(), "only the verification asked")
	_, err = jtiguard.NewSessions(fx.issuer, ver, jtiguard.SessionConfig{})
	assert.ErrorIs(t, err, jtiguard.ErrConfig, "it holds no sessions")
}

// TestIntrospectionStorePing: Verifier.Ping asks the endpoint, with the
// store's credentials, for readiness probes.
func TestIntrospectionStorePing(t *testing.T) {
	s := newIssuerServer(t)
	good, err := jtiguard.NewIntrospectionStore(s.URL, jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: rsSecret})
	require.NoError(t, err)
	t.Cleanup(good.Close)
	ver, err := jtiguard.NewVerifier(s.keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: good, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	require.NoError(t, ver.Ping(context.Background()))

	wrong, err := jtiguard.NewIntrospectionStore(s.URL, jtiguard.IntrospectionConfig{ClientID: rsClient, ClientSecret: "wrong"})
	require.NoError(t, err)
	t.Cleanup(wrong.Close)
	assert.ErrorContains(t, wrong.Ping(context.Background()), "status 401")
	s.down.Store(true)
	err = ver.Ping(context.Background())
	assertStoreUnavailable(t, err, "an endpoint that fails")
}
