package jtiguard_test

import (
	"crypto/sha256"
	"encoding/base64"
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
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// dpopServer is a resource server (401 and a DPoP challenge on a refused
// proof) or a token endpoint (400 and a JSON error) that checks every
// request's proof with a DPoPVerifier, and sends its nonce, if any, with
// every response.
type dpopServer struct {
	*httptest.Server
	dv            *jtiguard.DPoPVerifier
	tokenEndpoint bool
	hits          atomic.Int64
	accepted      atomic.Int64

	mu      sync.Mutex
	proofs  []string
	results []jtiguard.DPoPProof
	bodies  []string
}

func newDPoPServer(t *testing.T, cfg jtiguard.DPoPConfig, tokenEndpoint bool) (*dpopServer, *fixture) {
	t.Helper()
	f := newFixture(t)
	f.clock.Advance(time.Minute) // proofs must postdate the store
	dv, err := jtiguard.NewDPoPVerifier(f.ver, cfg)
	require.NoError(t, err)
	s := &dpopServer{dv: dv, tokenEndpoint: tokenEndpoint}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s, f
}

func (s *dpopServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	var token string
	if a := r.Header.Get("Authorization"); len(a) > 5 && strings.EqualFold(a[:5], "DPoP ") {
		token = a[5:]
	}
	if n := s.dv.Nonce(); n != "" {
		w.Header().Set("DPoP-Nonce", n)
	}
	proofs := r.Header.Values("DPoP")
	var p jtiguard.DPoPProof
	err := errors.New("not exactly one DPoP header")
	if len(proofs) == 1 {
		p, err = s.dv.VerifyProof(r.Context(), proofs[0], jtiguard.DPoPRequest{Method: r.Method, URL: "http://" + r.Host + r.RequestURI, AccessToken: token})
	}
	if err != nil {
		code := "invalid_dpop_proof"
		if errors.Is(err, jtiguard.ErrUseDPoPNonce) {
			code = "use_dpop_nonce"
		}
		if s.tokenEndpoint {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, err.Error())
			return
		}
		w.Header().Set("WWW-Authenticate", `DPoP algs="`+jtiguard.DPoPAlgs+`", error="`+code+`"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.accepted.Add(1)
	s.mu.Lock()
	s.proofs = append(s.proofs, proofs[0])
	s.results = append(s.results, p)
	s.bodies = append(s.bodies, string(body))
	s.mu.Unlock()
	fmt.Fprint(w, "ok ", p.JKT)
}

func dpopTransport(t *testing.T, f *fixture, alg string) *jtiguard.DPoPTransport {
	t.Helper()
	key, err := jtiguard.GenerateKey("", alg)
	require.NoError(t, err)
	tr, err := jtiguard.NewDPoPTransport(key, nil)
	require.NoError(t, err)
	tr.Now = f.clock.Now
	require.Equal(t, key.KID(), tr.JKT(), "a key named by its thumbprint")
	return tr
}

func nonceSecret() []byte { return []byte("DPoP nonce secret of 32 bytes!!!") }

func TestDPoPTransportProofsVerify(t *testing.T) {
	for _, alg := range []string{jtiguard.ES256, jtiguard.EdDSA} {
		t.Run(alg, func(t *testing.T) {
			srv, f := newDPoPServer(t, jtiguard.DPoPConfig{}, false)
			tr := dpopTransport(t, f, alg)
			c := &http.Client{Transport: tr}

			// A GET with a query and a fragment, no access token.
			resp, err := c.Get(srv.URL + "/orders?id=7#top")
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
			assert.Equal(t, "ok "+tr.JKT(), string(b))

			// A POST with a body and an access token: ath must match.
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/orders/../orders/new", strings.NewReader("qty=2"))
			require.NoError(t, err)
			req.Header.Set("Authorization", "DPoP the-access-token")
			resp, err = c.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Empty(t, req.Header.Values("DPoP"), "the caller's request is not modified")

			// The scheme is case-insensitive: x/oauth2 passes the token
			// endpoint's token_type through as it is.
			req, _ = http.NewRequest(http.MethodDelete, srv.URL+"/orders/7", nil)
			req.Header.Set("Authorization", "dpop the-access-token")
			resp, err = c.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)

			srv.mu.Lock()
			defer srv.mu.Unlock()
			require.Len(t, srv.results, 3)
			for _, p := range srv.results {
				assert.Equal(t, tr.JKT(), p.JKT)
				assert.Equal(t, f.clock.Now().Unix(), p.IssuedAt.Unix())
			}
			assert.Equal(t, "qty=2", srv.bodies[1])
		})
	}
}

// TestDPoPTransportProofClaims checks a proof's header and claims directly:
// what VerifyProof accepts, and no member it would refuse.
func TestDPoPTransportProofClaims(t *testing.T) {
	srv, f := newDPoPServer(t, jtiguard.DPoPConfig{}, false)
	tr := dpopTransport(t, f, jtiguard.ES256)
	u, err := url.Parse("HTTP://User:pw@Example.COM:80/a%7Eb/c?q=1#frag")
	require.NoError(t, err)
	p, err := tr.Proof("PATCH", u, "tok")
	require.NoError(t, err)
	parts := strings.Split(p, ".")
	require.Len(t, parts, 3)
	hdr, claims := decodePart(t, parts[0]), decodePart(t, parts[1])
	assert.Regexp(t, `^\{"typ":"dpop\+jwt","alg":"ES256","jwk":\{"kty":"EC","crv":"P-256","x":"[A-Za-z0-9_-]{43}","y":"[A-Za-z0-9_-]{43}"\}\}$`, hdr)
	assert.Regexp(t, `^\{"jti":"[A-Za-z0-9_-]{22}","htm":"PATCH","htu":"http://Example.COM:80/a%7Eb/c","iat":\d+,"ath":"`+athOf("tok")+`"\}$`, claims)
	got, err := srv.dv.VerifyProof(t.Context(), p, jtiguard.DPoPRequest{Method: "PATCH", URL: "http://example.com/a~b/c?x", AccessToken: "tok"})
	require.NoError(t, err)
	assert.Equal(t, tr.JKT(), got.JKT)

	_, err = tr.Proof("GET", &url.URL{Path: "/relative"}, "")
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
}

func athOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func decodePart(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	require.NoError(t, err)
	return string(b)
}

func TestDPoPTransportNewProofPerRequest(t *testing.T) {
	srv, f := newDPoPServer(t, jtiguard.DPoPConfig{}, false)
	c := &http.Client{Transport: dpopTransport(t, f, jtiguard.EdDSA)}
	for range 20 {
		resp, err := c.Get(srv.URL + "/same")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "a replayed proof would be refused")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range srv.results {
		assert.False(t, seen[p.JTI], "jti reused")
		seen[p.JTI] = true
	}
	assert.Len(t, seen, 20)
}

func TestDPoPTransportNonce(t *testing.T) {
	for _, tokenEndpoint := range []bool{false, true} {
		name := "resource server 401"
		if tokenEndpoint {
			name = "token endpoint 400"
		}
		t.Run(name, func(t *testing.T) {
			srv, f := newDPoPServer(t, jtiguard.DPoPConfig{NonceSecret: nonceSecret()}, tokenEndpoint)
			c := &http.Client{Transport: dpopTransport(t, f, jtiguard.ES256)}

			do := func(req *http.Request) (int, string) {
				t.Helper()
				resp, err := c.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				return resp.StatusCode, string(b)
			}

			// First request: refused for want of a nonce, sent again with
			// it, accepted; two round trips.
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/r", nil)
			code, _ := do(req)
			assert.Equal(t, http.StatusOK, code)
			assert.EqualValues(t, 2, srv.hits.Load())

			// The nonce is remembered: one round trip.
			req, _ = http.NewRequest(http.MethodPost, srv.URL+"/token", strings.NewReader("grant_type=x"))
			code, _ = do(req)
			assert.Equal(t, http.StatusOK, code)
			assert.EqualValues(t, 3, srv.hits.Load())

			// A new slot's nonce: a replayable body is sent again, whole.
			f.clock.Advance(11 * time.Minute)
			req, _ = http.NewRequest(http.MethodPost, srv.URL+"/token", strings.NewReader("grant_type=y"))
			code, _ = do(req)
			assert.Equal(t, http.StatusOK, code)
			assert.EqualValues(t, 5, srv.hits.Load())
			srv.mu.Lock()
			assert.Equal(t, "grant_type=y", srv.bodies[len(srv.bodies)-1])
			srv.mu.Unlock()

			// A body that cannot be sent again: the refusal is returned,
			// body intact for a token endpoint's JSON error.
			f.clock.Advance(11 * time.Minute)
			req, _ = http.NewRequest(http.MethodPost, srv.URL+"/token", io.NopCloser(strings.NewReader("grant_type=z")))
			require.Nil(t, req.GetBody)
			code, body := do(req)
			assert.EqualValues(t, 6, srv.hits.Load())
			if tokenEndpoint {
				assert.Equal(t, http.StatusBadRequest, code)
				assert.Contains(t, body, `"error":"use_dpop_nonce"`)
			} else {
				assert.Equal(t, http.StatusUnauthorized, code)
			}

			// The nonce of that refusal was remembered all the same.
			req, _ = http.NewRequest(http.MethodPost, srv.URL+"/token", io.NopCloser(strings.NewReader("grant_type=z")))
			code, _ = do(req)
			assert.Equal(t, http.StatusOK, code)
			assert.EqualValues(t, 7, srv.hits.Load())
		})
	}
}

// TestDPoPTransportRetriesOnce: a server that asks for a new nonce every
// time gets two requests, not a loop; one that asks without giving a
// nonce, or answers another 400, gets one, and its body is intact.
func TestDPoPTransportRetriesOnce(t *testing.T) {
	f := newFixture(t)
	tr := dpopTransport(t, f, jtiguard.EdDSA)
	var hits atomic.Int64
	var mode atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		switch mode.Load() {
		case "always":
			w.Header().Set("DPoP-Nonce", fmt.Sprint("nonce-", n))
			w.Header().Set("WWW-Authenticate", `Bearer realm="api", DPoP algs="ES256", error="use_dpop_nonce"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "no nonce":
			w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce"`)
			w.WriteHeader(http.StatusUnauthorized)
		case "other 400":
			w.Header().Set("DPoP-Nonce", fmt.Sprint("nonce-", n))
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: tr}
	for _, tc := range []struct {
		mode string
		hits int64
		body string
	}{{"always", 2, ""}, {"no nonce", 1, ""}, {"other 400", 1, `{"error":"invalid_grant"}`}} {
		mode.Store(tc.mode)
		hits.Store(0)
		resp, err := c.Get(srv.URL)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, tc.hits, hits.Load(), tc.mode)
		assert.Equal(t, tc.body, string(b), tc.mode)
	}
}

func TestDPoPTransportConcurrent(t *testing.T) {
	srv, f := newDPoPServer(t, jtiguard.DPoPConfig{NonceSecret: nonceSecret()}, false)
	c := &http.Client{Transport: dpopTransport(t, f, jtiguard.ES256)}
	const goroutines, each = 16, 10
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/g%d/%d", srv.URL, g, i), strings.NewReader("x"))
				req.Header.Set("Authorization", "DPoP token-"+fmt.Sprint(g))
				resp, err := c.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failed.Load())
	assert.EqualValues(t, goroutines*each, srv.accepted.Load())
}

func TestDPoPTransportRefusesKeys(t *testing.T) {
	rs, err := jtiguard.GenerateKey("", jtiguard.RS256)
	require.NoError(t, err)
	hs, err := jtiguard.GenerateKey("", jtiguard.HS256)
	require.NoError(t, err)
	es, err := jtiguard.GenerateKey("", jtiguard.ES256)
	require.NoError(t, err)
	for name, k := range map[string]*jtiguard.Key{"nil": nil, "RS256": rs, "HS256": hs, "verify-only": es.Public()} {
		_, err := jtiguard.NewDPoPTransport(k, nil)
		assert.ErrorIs(t, err, jtiguard.ErrInvalidKey, name)
	}
}
