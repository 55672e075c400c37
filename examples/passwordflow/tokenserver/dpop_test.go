package tokenserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/oauth2"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// nonceCounter sits under a DPoPTransport and counts the server's
// use_dpop_nonce refusals, per origin: 400 from the token endpoint, 401
// from the API.
type nonceCounter struct {
	mu   sync.Mutex
	asks map[string]int
}

func (n *nonceCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return res, err
	}
	asked := strings.Contains(res.Header.Get("WWW-Authenticate"), "use_dpop_nonce")
	if res.StatusCode == http.StatusBadRequest {
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		res.Body = io.NopCloser(bytes.NewReader(body))
		asked = asked || bytes.Contains(body, []byte(`"use_dpop_nonce"`))
	}
	if asked {
		n.mu.Lock()
		n.asks[req.URL.Scheme+"://"+req.URL.Host]++
		n.mu.Unlock()
	}
	return res, nil
}

// instanceDPoP is instanceWith, returning once the server accepts DPoP
// proofs: a store refuses, fail closed, proofs whose iat less the leeway
// predates its memory, since a process before it may have accepted them;
// so a new server accepts the proofs of its first seconds (the Verifier's
// Leeway, 5 s, and the second iat is rounded to) never. The tests run in
// parallel, so that they wait together.
func instanceDPoP(t *testing.T, edit func(*Config)) string {
	t.Helper()
	start := time.Now()
	base := instanceWith(t, edit)
	time.Sleep(time.Until(start.Add(jtiguard.DefaultLeeway + time.Second)))
	return base
}

// dpopClient returns a context whose HTTP client, used by x/oauth2 for
// token requests and under the clients it returns, signs DPoP proofs with
// a new key, and the counter of the nonces it was asked for.
func dpopClient(t *testing.T) (context.Context, *jtiguard.DPoPTransport, *nonceCounter) {
	t.Helper()
	key, err := jtiguard.GenerateKey("", jtiguard.ES256)
	require.NoError(t, err)
	counter := &nonceCounter{asks: map[string]int{}}
	tr, err := jtiguard.NewDPoPTransport(key, counter)
	require.NoError(t, err)
	return context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: tr}), tr, counter
}

// getJSON GETs url with client and decodes a JSON answer.
func getJSON(t *testing.T, client *http.Client, req *http.Request) reply {
	t.Helper()
	res, err := client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	r := reply{status: res.StatusCode, header: res.Header}
	if strings.Contains(res.Header.Get("Content-Type"), "json") {
		require.NoError(t, json.NewDecoder(res.Body).Decode(&r.body))
	}
	return r
}

// withAuth is a GET of u with an Authorization header.
func withAuth(t *testing.T, u, auth string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", auth)
	return req
}

// stale is tok as if it had expired, so that a TokenSource refreshes it.
func stale(tok *oauth2.Token) *oauth2.Token {
	s := *tok
	s.Expiry = time.Now().Add(-time.Minute)
	return &s
}

// TestDPoPEndToEnd: golang.org/x/oauth2 over jtiguard.DPoPTransport, as
// the public client, logs in with the password grant, calls the
// DPoP-only route, refreshes with its bound refresh token; the stolen
// tokens are useless without the key. With nonces on, the transport meets
// use_dpop_nonce once and recovers by itself.
func TestDPoPEndToEnd(t *testing.T) {
	t.Parallel()
	for _, nonces := range []bool{false, true} {
		name := "nonces off"
		if nonces {
			name = "nonces on"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			base := instanceDPoP(t, func(c *Config) {
				c.KeyFile = filepath.Join(t.TempDir(), "key.pem")
				if nonces {
					c.DPoPNonceSecret = []byte(rand.Text() + rand.Text())
				}
			})
			dpopEndToEnd(t, base, nonces)
		})
	}
}

func dpopEndToEnd(t *testing.T, base string, nonces bool) {
	ctx, tr, counter := dpopClient(t)
	conf := &oauth2.Config{
		ClientID: "demo-public", // no secret: a public client
		Endpoint: oauth2.Endpoint{TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	tok, err := conf.PasswordCredentialsToken(ctx, "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "DPoP", tok.Type())
	require.NotEmpty(t, tok.RefreshToken)

	client := conf.Client(ctx, tok)
	me := getJSON(t, client, must(http.NewRequest(http.MethodGet, base+"/dpop/me", nil)))
	require.Equal(t, http.StatusOK, me.status, me.body)
	assert.Equal(t, "alice", me.str("sub"))
	assert.Equal(t, "demo-public", me.str("client_id"))
	assert.Equal(t, tr.JKT(), me.str("jkt"))
	if nonces {
		assert.NotEmpty(t, me.header.Get("DPoP-Nonce"), "a fresh nonce with the answer")
	}
	me = getJSON(t, client, must(http.NewRequest(http.MethodGet, base+"/me", nil)))
	assert.Equal(t, http.StatusOK, me.status, "a DPoP token works on the other routes too")

	// Refresh through the TokenSource: the bound refresh token rotates
	// with a proof of the same key.
	fresh, err := conf.TokenSource(ctx, stale(tok)).Token()
	require.NoError(t, err)
	assert.Equal(t, "DPoP", fresh.Type())
	assert.NotEqual(t, tok.AccessToken, fresh.AccessToken)
	assert.NotEqual(t, tok.RefreshToken, fresh.RefreshToken)
	me = getJSON(t, conf.Client(ctx, fresh), must(http.NewRequest(http.MethodGet, base+"/dpop/me", nil)))
	require.Equal(t, http.StatusOK, me.status, me.body)
	assert.Equal(t, tr.JKT(), me.str("jkt"))

	// Stolen access token: as Bearer, as DPoP without a proof, as DPoP
	// with a proof of the thief's key: 401 on every route.
	thiefCtx, thief, _ := dpopClient(t)
	thiefHTTP := &http.Client{Transport: thief}
	for _, path := range []string{"/dpop/me", "/me"} {
		r := getJSON(t, http.DefaultClient, withAuth(t, base+path, "Bearer "+fresh.AccessToken))
		assert.Equal(t, http.StatusUnauthorized, r.status, "Bearer "+path)
		r = getJSON(t, http.DefaultClient, withAuth(t, base+path, "DPoP "+fresh.AccessToken))
		assert.Equal(t, http.StatusUnauthorized, r.status, "no proof "+path)
		r = getJSON(t, thiefHTTP, withAuth(t, base+path, "DPoP "+fresh.AccessToken))
		assert.Equal(t, http.StatusUnauthorized, r.status, "another key "+path)
		assert.Contains(t, r.header.Get("WWW-Authenticate"), "DPoP ", path)
	}

	// Stolen refresh token: refused for another key or none, and nothing
	// rotates: the owner's refresh token is still the current one.
	var re *oauth2.RetrieveError
	_, err = conf.TokenSource(thiefCtx, stale(fresh)).Token()
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invalid_grant", re.ErrorCode)
	_, err = conf.TokenSource(context.Background(), stale(fresh)).Token()
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "invalid_grant", re.ErrorCode, "without a proof")
	me = getJSON(t, conf.Client(ctx, fresh), must(http.NewRequest(http.MethodGet, base+"/dpop/me", nil)))
	assert.Equal(t, http.StatusOK, me.status, "the family lives on")
	next, err := conf.TokenSource(ctx, stale(fresh)).Token()
	require.NoError(t, err, "the owner's refresh token was not rotated by the thief")
	assert.NotEqual(t, fresh.RefreshToken, next.RefreshToken)
	me = getJSON(t, conf.Client(ctx, next), must(http.NewRequest(http.MethodGet, base+"/dpop/me", nil)))
	assert.Equal(t, http.StatusOK, me.status)

	counter.mu.Lock()
	defer counter.mu.Unlock()
	if nonces {
		assert.Equal(t, map[string]int{base: 1}, counter.asks, "one use_dpop_nonce, on the first token request")
	} else {
		assert.Empty(t, counter.asks)
	}
}

// TestDPoPConfidentialAndBearer: the confidential client gets a DPoP
// access token with a proof and a Bearer one without; a Bearer token is
// refused by the DPoP-only route and works everywhere else.
func TestDPoPConfidentialAndBearer(t *testing.T) {
	t.Parallel()
	base := instanceDPoP(t, func(c *Config) { c.KeyFile = filepath.Join(t.TempDir(), "key.pem") })
	ctx, _, _ := dpopClient(t)
	conf := &oauth2.Config{
		ClientID: "demo-client", ClientSecret: "demo-secret",
		Endpoint: oauth2.Endpoint{TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	tok, err := conf.PasswordCredentialsToken(ctx, "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "DPoP", tok.Type())
	r := getJSON(t, conf.Client(ctx, tok), must(http.NewRequest(http.MethodGet, base+"/dpop/me", nil)))
	assert.Equal(t, http.StatusOK, r.status, r.body)

	bearer, err := conf.PasswordCredentialsToken(context.Background(), "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "Bearer", bearer.Type())
	r = getJSON(t, http.DefaultClient, withAuth(t, base+"/dpop/me", "Bearer "+bearer.AccessToken))
	assert.Equal(t, http.StatusUnauthorized, r.status)
	assert.Regexp(t, `^DPoP realm="passwordflow", algs="ES256 EdDSA", error="invalid_token"`, r.header.Get("WWW-Authenticate"))
	r = getJSON(t, http.DefaultClient, withAuth(t, base+"/me", "Bearer "+bearer.AccessToken))
	assert.Equal(t, http.StatusOK, r.status)
	assert.Empty(t, r.str("jkt"))

	// The public client without DPoP gets Bearer tokens: DPoP is the
	// client's choice.
	pub := &oauth2.Config{ClientID: "demo-public", Endpoint: oauth2.Endpoint{TokenURL: base + "/token", AuthStyle: oauth2.AuthStyleInParams}}
	tok, err = pub.PasswordCredentialsToken(context.Background(), "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "Bearer", tok.Type())
	// A wrong secret for the public client is no public login.
	r = call(t, base, "POST", "/token", url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"secret"},
		"client_id": {"demo-public"}, "client_secret": {"guess"}}, "", false)
	assert.Equal(t, "invalid_client", r.str("error"))
}

// roundRobin is a load balancer in front of replicas: it sends each
// request to the next one, and remembers the last request's DPoP proof.
type roundRobin struct {
	mu       sync.Mutex
	replicas []*url.URL
	next     int
	proof    string
	counter  *nonceCounter
}

func (lb *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	lb.mu.Lock()
	to := lb.replicas[lb.next%len(lb.replicas)]
	lb.next++
	lb.proof = req.Header.Get("DPoP")
	lb.mu.Unlock()
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = to.Scheme, to.Host, ""
	res, err := lb.counter.RoundTrip(out)
	if err == nil {
		res.Request = req
	}
	return res, err
}

// TestDPoPTwoInstancesOnRedis: two replicas on one Redis behind a load
// balancer, with one ExternalURL and the nonce secret shared, accept each
// other's nonces and tokens; a proof accepted by one is a replay on the
// other.
func TestDPoPTwoInstancesOnRedis(t *testing.T) {
	t.Parallel()
	redis := redistest.Start(t)
	key := filepath.Join(t.TempDir(), "key.pem")
	secret := []byte(rand.Text() + rand.Text())
	const external = "https://api.passwordflow.test"
	replica := func(c *Config) {
		c.KeyFile, c.RedisAddr = key, redis.Addr()
		c.ExternalURL, c.DPoPNonceSecret = external, secret
	}
	a, b := instanceWith(t, replica), instanceDPoP(t, replica)

	lb := &roundRobin{replicas: []*url.URL{must(url.Parse(a)), must(url.Parse(b))}, counter: &nonceCounter{asks: map[string]int{}}}
	tr, err := jtiguard.NewDPoPTransport(must(jtiguard.GenerateKey("", jtiguard.EdDSA)), lb)
	require.NoError(t, err)
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Transport: tr})
	conf := &oauth2.Config{
		ClientID: "demo-public",
		Endpoint: oauth2.Endpoint{TokenURL: external + "/token", AuthStyle: oauth2.AuthStyleInParams},
	}
	// A refuses the first token request (use_dpop_nonce); the retry, with
	// A's nonce, goes to B, which accepts it.
	tok, err := conf.PasswordCredentialsToken(ctx, "alice", "secret")
	require.NoError(t, err)
	assert.Equal(t, "DPoP", tok.Type())
	assert.Equal(t, map[string]int{a: 1}, lb.counter.asks)

	client := conf.Client(ctx, tok)
	r := getJSON(t, client, must(http.NewRequest(http.MethodGet, external+"/dpop/me", nil))) // on A
	require.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, tr.JKT(), r.str("jkt"))

	// The request A accepted, replayed on B: refused.
	lb.mu.Lock()
	proof := lb.proof
	lb.mu.Unlock()
	req := withAuth(t, b+"/dpop/me", "DPoP "+tok.AccessToken)
	req.Header.Set("DPoP", proof)
	r = getJSON(t, http.DefaultClient, req)
	assert.Equal(t, http.StatusUnauthorized, r.status, "the proof A accepted is a replay on B")
	assert.Contains(t, r.header.Get("WWW-Authenticate"), `error="invalid_dpop_proof"`)
	assert.Contains(t, r.header.Get("WWW-Authenticate"), "already used")

	r = getJSON(t, client, must(http.NewRequest(http.MethodGet, external+"/dpop/me", nil))) // on B
	assert.Equal(t, http.StatusOK, r.status, "a fresh proof is fine on B")
	// The refresh goes to A, the call after to B.
	fresh, err := conf.TokenSource(ctx, stale(tok)).Token()
	require.NoError(t, err)
	r = getJSON(t, conf.Client(ctx, fresh), must(http.NewRequest(http.MethodGet, external+"/dpop/me", nil)))
	assert.Equal(t, http.StatusOK, r.status, r.body)
	assert.Equal(t, map[string]int{a: 1}, lb.counter.asks, "one use_dpop_nonce in all")
}
