// Package dpopinterop checks jtiguard's DPoP against independent
// implementations: proofs signed by go-jose v4 are accepted by
// DPoPVerifier, proofs signed by DPoPTransport verify with go-jose, and
// golang.org/x/oauth2 obtains and uses DPoP-bound tokens through
// DPoPTransport.
package dpopinterop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
)

// clock is a manual clock shared by the verifier, its store and the
// client, so that tests do not depend on the wall clock's seconds.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newDPoPVerifier returns a DPoPVerifier over a memory store, on a clock a
// minute past the store's creation (a store refuses proofs that could
// predate its memory).
func newDPoPVerifier(t *testing.T, cfg jtiguard.DPoPConfig) (*clock, *jtiguard.DPoPVerifier) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	k, err := jtiguard.GenerateKey("", jtiguard.EdDSA)
	require.NoError(t, err)
	keys, err := jtiguard.NewKeySet(k)
	require.NoError(t, err)
	st, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: clk.Now})
	require.NoError(t, err)
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: "https://as.example", Audience: "https://api.example", Store: st, Now: clk.Now})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	dv, err := jtiguard.NewDPoPVerifier(ver, cfg)
	require.NoError(t, err)
	clk.Advance(time.Minute)
	return clk, dv
}

func ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func newJTI(t *testing.T) string {
	var b [16]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// TestGoJoseProofsAccepted: proofs built by go-jose (EmbedJWK, typ
// dpop+jwt) pass VerifyProof, with the key's thumbprint as go-jose
// computes it; once only.
func TestGoJoseProofsAccepted(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for _, tc := range []struct {
		alg  jose.SignatureAlgorithm
		priv any
		pub  any
	}{{jose.ES256, ecKey, ecKey.Public()}, {jose.EdDSA, edKey, edKey.Public()}} {
		t.Run(string(tc.alg), func(t *testing.T) {
			clk, dv := newDPoPVerifier(t, jtiguard.DPoPConfig{})
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: tc.alg, Key: tc.priv},
				(&jose.SignerOptions{EmbedJWK: true}).WithType("dpop+jwt"))
			require.NoError(t, err)
			sign := func(claims map[string]any) string {
				payload, err := json.Marshal(claims)
				require.NoError(t, err)
				obj, err := signer.Sign(payload)
				require.NoError(t, err)
				s, err := obj.CompactSerialize()
				require.NoError(t, err)
				return s
			}
			tp, err := (&jose.JSONWebKey{Key: tc.pub}).Thumbprint(crypto.SHA256)
			require.NoError(t, err)
			jkt := base64.RawURLEncoding.EncodeToString(tp)

			// A token request.
			tokenProof := sign(map[string]any{"jti": newJTI(t), "htm": "POST", "htu": "https://as.example/token", "iat": clk.Now().Unix()})
			p, err := dv.VerifyProof(t.Context(), tokenProof, jtiguard.DPoPRequest{Method: "POST", URL: "https://as.example/token"})
			require.NoError(t, err)
			assert.Equal(t, jkt, p.JKT)
			_, err = dv.VerifyProof(t.Context(), tokenProof, jtiguard.DPoPRequest{Method: "POST", URL: "https://as.example/token"})
			assert.ErrorIs(t, err, jtiguard.ErrDPoPReplayed)

			// A resource request, with ath and a query on the request.
			req := jtiguard.DPoPRequest{Method: "GET", URL: "https://api.example/orders?id=7", AccessToken: "access-token"}
			p, err = dv.VerifyProof(t.Context(), sign(map[string]any{"jti": newJTI(t), "htm": "GET", "htu": "https://api.example/orders", "iat": clk.Now().Unix(), "ath": ath("access-token")}), req)
			require.NoError(t, err)
			assert.Equal(t, jkt, p.JKT)

			// The same library's proof for another token is refused.
			_, err = dv.VerifyProof(t.Context(), sign(map[string]any{"jti": newJTI(t), "htm": "GET", "htu": "https://api.example/orders", "iat": clk.Now().Unix(), "ath": ath("other")}), req)
			assert.ErrorIs(t, err, jtiguard.ErrInvalidDPoPProof)
		})
	}
}

// proofClaims are a DPoP proof's claims as a go-jose user reads them.
type proofClaims struct {
	JTI   string `json:"jti"`
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	ATH   string `json:"ath"`
	Nonce string `json:"nonce"`
}

// TestTransportProofsVerifyWithGoJose: DPoPTransport's proofs parse and
// verify with go-jose, with the embedded public JWK, and carry the claims
// RFC 9449 asks for.
func TestTransportProofsVerifyWithGoJose(t *testing.T) {
	for _, alg := range []string{jtiguard.ES256, jtiguard.EdDSA} {
		t.Run(alg, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				got = append(got, r.Header.Get("DPoP"))
				mu.Unlock()
				w.Header().Set("DPoP-Nonce", "server-nonce-1")
			}))
			defer srv.Close()
			key, err := jtiguard.GenerateKey("", alg)
			require.NoError(t, err)
			tr, err := jtiguard.NewDPoPTransport(key, nil)
			require.NoError(t, err)
			now := time.Unix(1_800_000_000, 0)
			tr.Now = func() time.Time { return now }
			c := &http.Client{Transport: tr}

			resp, err := c.Get(srv.URL + "/a/b?c=d")
			require.NoError(t, err)
			resp.Body.Close()
			req, _ := http.NewRequest(http.MethodPut, srv.URL+"/x", nil)
			req.Header.Set("Authorization", "DPoP tok")
			resp, err = c.Do(req)
			require.NoError(t, err)
			resp.Body.Close()

			require.Len(t, got, 2)
			for i, proof := range got {
				jws, err := jose.ParseSignedCompact(proof, []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
				require.NoError(t, err)
				require.Len(t, jws.Signatures, 1)
				h := jws.Signatures[0].Protected
				assert.Equal(t, alg, h.Algorithm)
				assert.Equal(t, "dpop+jwt", h.ExtraHeaders[jose.HeaderType])
				require.NotNil(t, h.JSONWebKey)
				assert.True(t, h.JSONWebKey.IsPublic())
				assert.True(t, h.JSONWebKey.Valid())
				payload, err := jws.Verify(h.JSONWebKey)
				require.NoError(t, err)
				tp, err := h.JSONWebKey.Thumbprint(crypto.SHA256)
				require.NoError(t, err)
				assert.Equal(t, tr.JKT(), base64.RawURLEncoding.EncodeToString(tp))

				var c proofClaims
				require.NoError(t, json.Unmarshal(payload, &c))
				jti, err := base64.RawURLEncoding.DecodeString(c.JTI)
				require.NoError(t, err)
				assert.Len(t, jti, 16)
				assert.Equal(t, now.Unix(), c.IAT)
				if i == 0 {
					assert.Equal(t, proofClaims{JTI: c.JTI, HTM: "GET", HTU: srv.URL + "/a/b", IAT: c.IAT}, c)
				} else {
					assert.Equal(t, proofClaims{JTI: c.JTI, HTM: "PUT", HTU: srv.URL + "/x", IAT: c.IAT, ATH: ath("tok"), Nonce: "server-nonce-1"}, c)
				}
			}
		})
	}
}

// authServer is a minimal authorization and resource server in one: a
// token endpoint that checks the proof with DPoPVerifier and binds the
// tokens it mints (opaque, remembered here) to the proof's key, and an API
// that wants "Authorization: DPoP" with a proof of that key carrying the
// token's hash. Nonces are on, so every client first meets use_dpop_nonce.
type authServer struct {
	*httptest.Server
	dv *jtiguard.DPoPVerifier

	mu     sync.Mutex
	bound  map[string]string // token (access or refresh) -> jkt
	grants []string
	calls  int
	asks   int // use_dpop_nonce answers
}

func newAuthServer(t *testing.T) (*clock, *authServer) {
	t.Helper()
	clk, dv := newDPoPVerifier(t, jtiguard.DPoPConfig{NonceSecret: []byte("interop nonce secret, 32 bytes!!")})
	s := &authServer{dv: dv, bound: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("GET /api/me", s.api)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return clk, s
}

func (s *authServer) proof(w http.ResponseWriter, r *http.Request, token string) (jtiguard.DPoPProof, error) {
	w.Header().Set("DPoP-Nonce", s.dv.Nonce())
	proofs := r.Header.Values("DPoP")
	if len(proofs) != 1 {
		return jtiguard.DPoPProof{}, jtiguard.ErrInvalidDPoPProof
	}
	return s.dv.VerifyProof(r.Context(), proofs[0], jtiguard.DPoPRequest{Method: r.Method, URL: s.URL + r.URL.RequestURI(), AccessToken: token})
}

func (s *authServer) code(err error) string {
	if errors.Is(err, jtiguard.ErrUseDPoPNonce) {
		s.mu.Lock()
		s.asks++
		s.mu.Unlock()
		return "use_dpop_nonce"
	}
	return "invalid_dpop_proof"
}

func (s *authServer) token(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":%q}`, code)
	}
	p, err := s.proof(w, r, "")
	if err != nil {
		fail(http.StatusBadRequest, s.code(err))
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request")
		return
	}
	grant := r.PostForm.Get("grant_type")
	switch grant {
	case "password":
		if r.PostForm.Get("username") != "alice" || r.PostForm.Get("password") != "wonderland" {
			fail(http.StatusBadRequest, "invalid_grant")
			return
		}
	case "client_credentials":
	case "refresh_token":
		s.mu.Lock()
		jkt, ok := s.bound[r.PostForm.Get("refresh_token")]
		delete(s.bound, r.PostForm.Get("refresh_token"))
		s.mu.Unlock()
		if !ok || jkt != p.JKT {
			fail(http.StatusBadRequest, "invalid_grant") // RFC 9449 section 5: bound to the key
			return
		}
	default:
		fail(http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	if id, secret, ok := r.BasicAuth(); !ok || id != "app" || secret != "app-secret" {
		fail(http.StatusUnauthorized, "invalid_client")
		return
	}
	access, refresh := newOpaque(), newOpaque()
	s.mu.Lock()
	s.bound[access], s.bound[refresh] = p.JKT, p.JKT
	s.grants = append(s.grants, grant)
	first := len(s.grants) == 1
	s.mu.Unlock()
	expires := 3600
	if first && grant == "password" {
		expires = 1 // within x/oauth2's expiry delta: the next call refreshes
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": access, "token_type": "DPoP", "expires_in": expires, "refresh_token": refresh})
}

func (s *authServer) api(w http.ResponseWriter, r *http.Request) {
	challenge := func(code string) {
		w.Header().Set("WWW-Authenticate", `DPoP algs="`+jtiguard.DPoPAlgs+`", error="`+code+`"`)
		w.WriteHeader(http.StatusUnauthorized)
	}
	a := r.Header.Get("Authorization")
	if len(a) <= 5 || a[:5] != "DPoP " {
		challenge("invalid_token")
		return
	}
	token := a[5:]
	s.mu.Lock()
	jkt, ok := s.bound[token]
	s.mu.Unlock()
	if !ok {
		challenge("invalid_token")
		return
	}
	p, err := s.proof(w, r, token)
	if err != nil {
		challenge(s.code(err))
		return
	}
	if p.JKT != jkt {
		challenge("invalid_token") // bound to another key (RFC 9449 section 7.1)
		return
	}
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	fmt.Fprint(w, `{"sub":"alice"}`)
}

func newOpaque() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
