package jtiguard_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/store"
)

// dpopOrigin is the ExternalURL of the DPoP tests' server: what proofs
// name in htu, whatever host the test server listens on.
const dpopOrigin = "https://api.example.com"

// bindServer is a token endpoint and an API behind a Guard, both taking
// DPoP, on a real HTTP server.
type bindServer struct {
	*sessionFixture
	dv  *jtiguard.DPoPVerifier
	srv *httptest.Server
}

// newBindServer serves POST /token (clients "spa", public, and "backend"
// with secret "s"; any user with password "pw"), GET /orders for any
// valid token and GET /dpop-only for DPoP-bound ones.
func newBindServer(t *testing.T, cfg jtiguard.DPoPConfig) *bindServer {
	t.Helper()
	sf := newSessions(t, jtiguard.SessionConfig{})
	sf.clock.Advance(time.Minute) // proofs issued at the store's creation, less the leeway, would predate it
	cfg.ExternalURL = dpopOrigin
	dv, err := jtiguard.NewDPoPVerifier(sf.ver, cfg)
	require.NoError(t, err)
	clients := func(_ context.Context, id, secret string) bool {
		return (id == "spa" && secret == "") || (id == "backend" && secret == "s")
	}
	g := jtiguard.NewGuard(sf.ver, jtiguard.GuardConfig{Realm: "api", DPoP: dv})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := jtiguard.ClaimsFrom(r.Context())
		_, _ = io.WriteString(w, c.Subject)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /token", &jtiguard.TokenEndpoint{Sessions: sf.sess, Clients: clients, DPoP: dv,
		Password: func(_ context.Context, _, user, pass, scope string) (jtiguard.Login, error) {
			if pass != "pw" {
				return jtiguard.Login{}, fmt.Errorf("wrong password")
			}
			return jtiguard.Login{Subject: user, Scope: scope, JKT: "ignored-by-the-endpoint"}, nil
		}})
	mux.Handle("GET /orders", g.Authenticate(whoami))
	mux.Handle("GET /dpop-only", g.Require(jtiguard.Requirement{DPoP: true})(whoami))
	mux.Handle("POST /introspect", &jtiguard.IntrospectionEndpoint{Verifier: sf.ver, Clients: clients})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &bindServer{sessionFixture: sf, dv: dv, srv: srv}
}

// proofFor signs a fresh proof by c for method and path at this server,
// bound to accessToken if given, with extra claims (a nonce) if given.
func (s *bindServer) proofFor(t *testing.T, c dpopClient, method, path, accessToken, extra string) string {
	t.Helper()
	req := jtiguard.DPoPRequest{Method: method, URL: dpopOrigin + path, AccessToken: accessToken}
	return c.proof(t, claimsFor(freshJTI(), req, s.clock.Now(), extra))
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (a answer) str(name string) string { s, _ := a.body[name].(string); return s }

// send makes a request to the server with the given headers (a header
// given twice is sent twice) and form, if any.
func (s *bindServer) send(t *testing.T, method, path string, form url.Values, headers ...[2]string) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r, err := http.NewRequest(method, s.srv.URL+path, body)
	require.NoError(t, err)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range headers {
		r.Header.Add(h[0], h[1])
	}
	res, err := s.srv.Client().Do(r)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	a := answer{status: res.StatusCode, header: res.Header}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		require.NoError(t, json.Unmarshal(raw, &a.body), string(raw))
	} else {
		a.body = map[string]any{"text": string(raw)}
	}
	return a
}

// token posts a token request for client ("spa" is public, "backend"
// confidential) with the given DPoP headers.
func (s *bindServer) token(t *testing.T, client string, form url.Values, proofs ...string) answer {
	t.Helper()
	form.Set("client_id", client)
	if client == "backend" {
		form.Set("client_secret", "s")
	}
	var hs [][2]string
	for _, p := range proofs {
		hs = append(hs, [2]string{"DPoP", p})
	}
	return s.send(t, http.MethodPost, "/token", form, hs...)
}

func loginForm() url.Values {
	return url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw"}}
}

func refreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

// cnfOf returns the cnf claim of a token as raw JSON, "" without one.
func cnfOf(t *testing.T, tok string) string {
	t.Helper()
	_, p, _ := segments(tok)
	raw, err := base64.RawURLEncoding.DecodeString(p)
	require.NoError(t, err)
	var claims map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &claims))
	return string(claims["cnf"])
}

func jktClaim(jkt string) string { return `{"jkt":"` + jkt + `"}` }

func TestDPoPTokenEndpointBindsTokens(t *testing.T) {
	s := newBindServer(t, jtiguard.DPoPConfig{})
	key, other := esClient(t, 1), edClient(t, 2)

	t.Run("public client: access and refresh bound", func(t *testing.T) {
		a := s.token(t, "spa", loginForm(), s.proofFor(t, key, "POST", "/token", "", ""))
		require.Equal(t, http.StatusOK, a.status, a.body)
		assert.Equal(t, "DPoP", a.str("token_type"))
		assert.Equal(t, jktClaim(key.jkt), cnfOf(t, a.str("access_token")))
		assert.Equal(t, jktClaim(key.jkt), cnfOf(t, a.str("refresh_token")), "RFC 9449 section 5: a public client's refresh token is bound")
		assert.Empty(t, a.header.Get("DPoP-Nonce"), "nonces are off")
	})

	t.Run("confidential client: access bound, refresh not", func(t *testing.T) {
		a := s.token(t, "backend", loginForm(), s.proofFor(t, key, "POST", "/token", "", ""))
		require.Equal(t, http.StatusOK, a.status, a.body)
		assert.Equal(t, "DPoP", a.str("token_type"))
		assert.Equal(t, jktClaim(key.jkt), cnfOf(t, a.str("access_token")))
		assert.Empty(t, cnfOf(t, a.str("refresh_token")), "bound by the client's authentication instead")

		// RFC 9449 section 5: the new access token is bound to the key of
		// the refresh request's proof.
		b := s.token(t, "backend", refreshForm(a.str("refresh_token")), s.proofFor(t, other, "POST", "/token", "", ""))
		require.Equal(t, http.StatusOK, b.status, b.body)
		assert.Equal(t, jktClaim(other.jkt), cnfOf(t, b.str("access_token")))
		assert.Empty(t, cnfOf(t, b.str("refresh_token")))
	})

	t.Run("no proof: bearer tokens, and the callback cannot bind them", func(t *testing.T) {
		a := s.token(t, "spa", loginForm())
		require.Equal(t, http.StatusOK, a.status, a.body)
		assert.Equal(t, "Bearer", a.str("token_type"))
		assert.Empty(t, cnfOf(t, a.str("access_token")))
		assert.Empty(t, cnfOf(t, a.str("refresh_token")))
	})

	t.Run("bound refresh token rotates only with its key", func(t *testing.T) {
		a := s.token(t, "spa", loginForm(), s.proofFor(t, key, "POST", "/token", "", ""))
		require.Equal(t, http.StatusOK, a.status, a.body)
		rt := a.str("refresh_token")

		none := s.token(t, "spa", refreshForm(rt))
		assert.Equal(t, http.StatusBadRequest, none.status)
		assert.Equal(t, "invalid_grant", none.str("error"))
		assert.Contains(t, none.str("error_description"), "DPoP proof")

		stolen := s.token(t, "spa", refreshForm(rt), s.proofFor(t, other, "POST", "/token", "", ""))
		assert.Equal(t, http.StatusBadRequest, stolen.status)
		assert.Equal(t, "invalid_grant", stolen.str("error"))
		assert.Contains(t, stolen.str("error_description"), "another DPoP key")

		_, err := s.sess.Refresh(context.Background(), rt)
		assert.ErrorIs(t, err, jtiguard.ErrDPoPRequired, "Sessions.Refresh cannot prove a key")

		// None of that rotated anything: the owner's refresh still works,
		// and its successors stay bound to the same key.
		ok := s.token(t, "spa", refreshForm(rt), s.proofFor(t, key, "POST", "/token", "", ""))
		require.Equal(t, http.StatusOK, ok.status, ok.body)
		assert.Equal(t, "DPoP", ok.str("token_type"))
		assert.Equal(t, jktClaim(key.jkt), cnfOf(t, ok.str("access_token")))
		assert.Equal(t, jktClaim(key.jkt), cnfOf(t, ok.str("refresh_token")))
		assert.Contains(t, s.eventKinds(), jtiguard.EventDPoPBindingRefused)
	})

	t.Run("refused proofs", func(t *testing.T) {
		good := s.proofFor(t, key, "POST", "/token", "", "")
		two := s.token(t, "spa", loginForm(), good, s.proofFor(t, key, "POST", "/token", "", ""))
		assert.Equal(t, http.StatusBadRequest, two.status)
		assert.Equal(t, "invalid_dpop_proof", two.str("error"), "RFC 9449 section 4.3: one DPoP header")

		// The server's own address: the endpoint compares htu with its
		// ExternalURL, never with the Host header.
		host := key.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "POST", URL: s.srv.URL + "/token"}, s.clock.Now(), ""))
		a := s.token(t, "spa", loginForm(), host)
		assert.Equal(t, http.StatusBadRequest, a.status)
		assert.Equal(t, "invalid_dpop_proof", a.str("error"))

		get := s.token(t, "spa", loginForm(), s.proofFor(t, key, "GET", "/token", "", ""))
		assert.Equal(t, "invalid_dpop_proof", get.str("error"))

		require.Equal(t, http.StatusOK, s.token(t, "spa", loginForm(), good).status)
		again := s.token(t, "spa", loginForm(), good)
		assert.Equal(t, http.StatusBadRequest, again.status)
		assert.Equal(t, "invalid_dpop_proof", again.str("error"), "a proof is accepted once")
	})

	t.Run("introspection reports the binding", func(t *testing.T) {
		a := s.token(t, "spa", loginForm(), s.proofFor(t, key, "POST", "/token", "", ""))
		in := s.send(t, http.MethodPost, "/introspect", url.Values{"client_id": {"backend"}, "client_secret": {"s"}, "token": {a.str("access_token")}})
		require.Equal(t, http.StatusOK, in.status)
		assert.Equal(t, true, in.body["active"])
		assert.Equal(t, "DPoP", in.str("token_type"))
		assert.Equal(t, map[string]any{"jkt": key.jkt}, in.body["cnf"], "RFC 9449 section 6.2")
	})
}

func TestDPoPTokenEndpointNonces(t *testing.T) {
	s := newBindServer(t, jtiguard.DPoPConfig{NonceSecret: []byte(strings.Repeat("n", 32))})
	key := esClient(t, 3)

	a := s.token(t, "spa", loginForm(), s.proofFor(t, key, "POST", "/token", "", ""))
	require.Equal(t, http.StatusBadRequest, a.status)
	assert.Equal(t, "use_dpop_nonce", a.str("error"))
	nonce := a.header.Get("DPoP-Nonce")
	require.NotEmpty(t, nonce)

	b := s.token(t, "spa", loginForm(), s.proofFor(t, key, "POST", "/token", "", `"nonce":"`+nonce+`"`))
	require.Equal(t, http.StatusOK, b.status, b.body)
	assert.Equal(t, "DPoP", b.str("token_type"))
	assert.NotEmpty(t, b.header.Get("DPoP-Nonce"), "RFC 9449 section 8.2: a fresh nonce with every answer")
}

func TestDPoPTokenEndpointNeedsExternalURL(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	sf.clock.Advance(time.Minute)
	dv, err := jtiguard.NewDPoPVerifier(sf.ver, jtiguard.DPoPConfig{})
	require.NoError(t, err)
	e := &jtiguard.TokenEndpoint{Sessions: sf.sess, DPoP: dv,
		Clients: func(context.Context, string, string) bool { return true },
		Password: func(context.Context, string, string, string, string) (jtiguard.Login, error) {
			return jtiguard.Login{Subject: "alice"}, nil
		}}
	key := esClient(t, 4)
	r := postForm(loginForm().Encode() + "&client_id=spa")
	r.Header.Set("DPoP", key.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "POST", URL: "http://example.com/"}, sf.clock.Now(), "")))
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, r)
	assert.Equal(t, http.StatusInternalServerError, rec.Code, "never trusts the Host header")
}

func TestSessionsBinding(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	ctx := context.Background()
	jkt := esClient(t, 5).jkt

	p, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", JKT: jkt})
	require.NoError(t, err)
	assert.Equal(t, jkt, p.Access.JKT)
	assert.Empty(t, p.Refresh.JKT, "BindRefresh not asked")
	_, err = sf.ver.Verify(ctx, p.AccessToken)
	assert.ErrorIs(t, err, jtiguard.ErrDPoPRequired, "RFC 9449 section 7.2: never as a bearer token")
	assert.ErrorIs(t, err, jtiguard.ErrInvalidToken)

	// An unbound refresh token refreshed without a proof mints bearer
	// tokens: only the TokenEndpoint proves keys.
	q, err := sf.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	assert.Empty(t, q.Access.JKT)

	b, err := sf.sess.Login(ctx, jtiguard.Login{Subject: "alice", JKT: jkt, BindRefresh: true})
	require.NoError(t, err)
	assert.Equal(t, jkt, b.Refresh.JKT)
	// Renew keeps the binding, of both tokens.
	r, err := sf.sess.Renew(ctx, b.AccessToken, jtiguard.Change{ACR: "mfa"})
	require.NoError(t, err)
	assert.Equal(t, jkt, r.Access.JKT)
	assert.Equal(t, jkt, r.Refresh.JKT)
	assert.Equal(t, "mfa", r.Access.ACR)

	for _, l := range []jtiguard.Login{
		{Subject: "alice", JKT: "short"},
		{Subject: "alice", JKT: strings.Repeat("A", 42) + "B"}, // non-canonical last character
		{Subject: "alice", BindRefresh: true},
	} {
		_, err := sf.sess.Login(ctx, l)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, "%+v", l)
	}
	_, _, err = sf.issuer.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "x", JKT: jkt})
	assert.ErrorIs(t, err, jtiguard.ErrConfig, "only access and refresh tokens are bound")
	_, _, err = sf.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: "not a thumbprint"})
	assert.ErrorIs(t, err, jtiguard.ErrConfig)
	tok, c, err := sf.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: jkt})
	require.NoError(t, err)
	assert.Equal(t, jkt, c.JKT)
	assert.Equal(t, jktClaim(jkt), cnfOf(t, tok))
}

// TestCnfParsedStrictly: cnf holds exactly one member, jkt, a canonical
// thumbprint, and only access and refresh tokens carry it.
func TestCnfParsedStrictly(t *testing.T) {
	f := newFixture(t)
	jkt := esClient(t, 6).jkt
	id, err := store.NewJTI(nil)
	require.NoError(t, err)
	now := f.clock.Now().Unix()
	sign := func(typ, members string) string {
		payload := fmt.Sprintf(`{"iss":%q,"sub":"alice","aud":%q,"exp":%d,"iat":%d,"jti":%q%s}`, testIssuer, testAudience, now+60, now, id.String(), members)
		return signRaw(t, jwt.SigningMethodEdDSA, f.priv, `{"alg":"EdDSA","kid":"k1","typ":"`+typ+`"}`, payload)
	}
	_, err = f.ver.Verify(context.Background(), sign("at+jwt", `,"cnf":`+jktClaim(jkt)))
	assert.ErrorIs(t, err, jtiguard.ErrDPoPRequired, "well-formed: read as a binding")
	for _, members := range []string{
		`,"cnf":{}`,
		`,"cnf":{"jkt":"` + jkt + `","kid":"x"}`,
		`,"cnf":{"jwk":{"kty":"OKP"}}`,
		`,"cnf":{"jkt":"` + jkt + `","jkt":"` + jkt + `"}`,
		`,"cnf":{"JKT":"` + jkt + `"}`,
		`,"cnf":{"jkt":"` + jkt[:42] + `"}`,
		`,"cnf":{"jkt":"` + jkt + `="}`,
		`,"cnf":{"jkt":"` + strings.Repeat("A", 42) + `B"}`,
		`,"cnf":{"jkt":` + `null}`,
		`,"cnf":"` + jkt + `"`,
		`,"cnf":null`,
		`,"cnf":` + jktClaim(jkt) + `,"cnf":` + jktClaim(jkt),
		`,"cnf":` + jktClaim(jkt) + `,"CNF":` + jktClaim(jkt),
	} {
		_, err := f.ver.Verify(context.Background(), sign("at+jwt", members))
		assert.ErrorIs(t, err, jtiguard.ErrInvalidClaims, members)
	}
	_, err = f.ver.Consume(context.Background(), sign("once+jwt", `,"purpose":"p","cnf":`+jktClaim(jkt)), "p")
	assert.ErrorIs(t, err, jtiguard.ErrInvalidClaims, "one-time tokens are never bound")
	_, _, err = f.issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience},
		Extra: map[string]json.RawMessage{"cnf": json.RawMessage(jktClaim(jkt))}})
	assert.ErrorIs(t, err, jtiguard.ErrConfig, "cnf is registered: no custom claim stands in for it")
}

// TestRequireDPoPPerClient: a client the token endpoint requires DPoP of
// gets nothing without a proof, and so only ever holds bound tokens; other
// clients may still get Bearer tokens.
func TestRequireDPoPPerClient(t *testing.T) {
	sf := newSessions(t, jtiguard.SessionConfig{})
	sf.clock.Advance(time.Minute)
	dv, err := jtiguard.NewDPoPVerifier(sf.ver, jtiguard.DPoPConfig{ExternalURL: dpopOrigin})
	require.NoError(t, err)
	e := &jtiguard.TokenEndpoint{Sessions: sf.sess, DPoP: dv,
		Clients:     func(_ context.Context, _, secret string) bool { return secret == "" },
		RequireDPoP: func(id string) bool { return id == "spa" },
		Password: func(_ context.Context, _, user, _, _ string) (jtiguard.Login, error) {
			return jtiguard.Login{Subject: user}, nil
		}}
	c := esClient(t, 3)
	post := func(client string, withProof bool) answer {
		form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"pw"}, "client_id": {client}}
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if withProof {
			r.Header.Set("DPoP", c.proof(t, claimsFor(freshJTI(), jtiguard.DPoPRequest{Method: "POST", URL: dpopOrigin + "/token"}, sf.clock.Now(), "")))
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, r)
		a := answer{status: rec.Code, header: rec.Header()}
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &a.body))
		return a
	}
	a := post("spa", false)
	assert.Equal(t, http.StatusBadRequest, a.status)
	assert.Equal(t, "invalid_dpop_proof", a.str("error"))
	a = post("spa", true)
	require.Equal(t, http.StatusOK, a.status, a.body)
	assert.Equal(t, "DPoP", a.str("token_type"))
	a = post("cli", false)
	require.Equal(t, http.StatusOK, a.status, a.body)
	assert.Equal(t, "Bearer", a.str("token_type"))
}
