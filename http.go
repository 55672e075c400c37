package jtiguard

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HTTP errors that are not about a token: a request the endpoint cannot
// read (400 invalid_request), a client that failed to authenticate (401
// invalid_client), a grant the endpoint does not support (400
// unsupported_grant_type), and credentials or a refresh token that do not
// grant anything (400 invalid_grant). They are *Error values.
var (
	// ErrInvalidRequest: the request is malformed (400 invalid_request).
	ErrInvalidRequest = newSentinel("invalid request", nil)
	// ErrInvalidClient: client authentication failed (401 invalid_client).
	ErrInvalidClient = newSentinel("client authentication failed", nil)
	// ErrUnsupportedGrantType: 400 unsupported_grant_type.
	ErrUnsupportedGrantType = newSentinel("unsupported grant type", nil)
	// ErrInvalidGrant: credentials or refresh token grant nothing (400
	// invalid_grant); the token rejection, if any, is wrapped.
	ErrInvalidGrant = newSentinel("invalid grant", nil)
	// ErrUnauthorizedClient: the client may not use this grant or token
	// (400 unauthorized_client).
	ErrUnauthorizedClient = newSentinel("unauthorized client", nil)
	// ErrInvalidScope: the requested scope is invalid, unknown or beyond
	// what the client may have (400 invalid_scope).
	ErrInvalidScope = newSentinel("invalid scope", nil)
)

// oauthKinds maps RFC 6749 section 5.2 error codes to their sentinels.
var oauthKinds = map[string]error{
	"invalid_request":        ErrInvalidRequest,
	"invalid_client":         ErrInvalidClient,
	"invalid_grant":          ErrInvalidGrant,
	"unauthorized_client":    ErrUnauthorizedClient,
	"unsupported_grant_type": ErrUnsupportedGrantType,
	"invalid_scope":          ErrInvalidScope,
}

// OAuthError returns the *Error for an RFC 6749 section 5.2 error code
// (invalid_request, invalid_client, invalid_grant, unauthorized_client,
// unsupported_grant_type, invalid_scope) with the status the section gives
// it: 401 for invalid_client, 400 for the others. It matches the code's
// sentinel (ErrInvalidGrant, ...). An unknown code is a programming error:
// it yields invalid_request. description must be safe to show the client.
func OAuthError(code, description string) *Error {
	kind, ok := oauthKinds[code]
	if !ok {
		code, kind = "invalid_request", ErrInvalidRequest
	}
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	return requestError(kind, status, code, description)
}

func requestError(kind error, status int, code, desc string) *Error {
	return &Error{Status: status, Code: code, Description: desc, kind: kind}
}

func invalidRequest(desc string) *Error {
	return OAuthError("invalid_request", desc)
}

// BearerToken returns the bearer token of r, taken from its Authorization
// header only (RFC 6750 section 2.1): one header, scheme "Bearer" in any
// case, one token of the b64token alphabet. It returns "" and nil when r
// carries no bearer credentials (no header, or another scheme such as
// Basic: RFC 6750 section 3.1 treats both as lacking authentication). A
// token in the query string or form is refused, not read (it leaks into
// logs and Referer headers), as are two Authorization headers and a
// malformed Bearer one: those return an *Error for 400 invalid_request.
func BearerToken(r *http.Request) (string, error) {
	if r.URL != nil && r.URL.Query().Has("access_token") {
		return "", invalidRequest("access tokens are not accepted in the query string")
	}
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", invalidRequest("more than one Authorization header")
	}
	return parseBearer(values[0])
}

// parseBearer reads `Bearer <b64token>`; another scheme is no bearer
// credential at all.
func parseBearer(h string) (string, error) {
	scheme, token, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", nil
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || !isB64Token(token) {
		return "", invalidRequest("malformed bearer token")
	}
	return token, nil
}

// isB64Token checks RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(b64Alphabet[c] || c == '.' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

type claimsKey struct{}

// verified is what a Guard leaves in a request's context: the claims and
// the Verifier that checked them, so that a later Guard of the same
// Verifier in the chain does not verify (and ask the store) again.
type verified struct {
	claims *Claims
	by     *Verifier
}

// ClaimsFrom returns the claims a Guard verified for the request (or that
// NewContext put in ctx).
func ClaimsFrom(ctx context.Context) (*Claims, bool) {
	v, ok := ctx.Value(claimsKey{}).(verified)
	return v.claims, ok
}

// NewContext returns ctx carrying c as ClaimsFrom reads them, so that a
// handler can be tested without a token. A Guard never takes claims put
// there for verified: it verifies the request's own token.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, verified{claims: c})
}

// Guard turns a Verifier into net/http middleware that rejects by default:
// a request reaches the wrapped handler only with a valid access token that
// meets the route's Requirement. It answers everything else itself, with
// the status, WWW-Authenticate challenge (RFC 6750, RFC 9470, RFC 9449) and
// JSON body {"error","error_description"} the failure calls for.
//
// A DPoP-bound access token (cnf.jkt) is accepted only as `Authorization:
// DPoP <token>` with one `DPoP` proof header of its key, and only by a
// Guard configured with a DPoPVerifier; presented as Bearer it is refused
// (401 invalid_token, RFC 9449 section 7.2).
type Guard struct {
	v       *Verifier
	dpop    *DPoPVerifier
	realm   string
	cookies *CookieConfig
	extract func(*http.Request) (string, error)
	onError func(http.ResponseWriter, *http.Request, error)
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Realm names the protected space in challenges (may be empty).
	Realm string
	// Cookies, if set, also accepts the access token from its cookie when
	// no Authorization header is sent, with a CSRF check on unsafe methods.
	Cookies *CookieConfig
	// Extract, if set, reads the access token from a request instead of
	// the Authorization header and cookies: "" and nil for a request
	// without credentials, an *Error (400 invalid_request) for a
	// malformed one. Never read tokens from the query string.
	Extract func(*http.Request) (string, error)
	// OnError, if set, answers the requests the Guard refuses instead of
	// WriteError (whose RFC 6750 and RFC 9470 responses it may call). err
	// is nil when the request carried no credentials; otherwise an *Error
	// with the status and code to answer.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
	// DPoP, if set, also accepts DPoP-bound access tokens (RFC 9449
	// section 7.1): `Authorization: DPoP <token>` with exactly one DPoP
	// proof header, checked by DPoPVerifier.Verify for the request's
	// method and URI. Refusals carry a DPoP challenge (algs, and error
	// invalid_dpop_proof, use_dpop_nonce with a DPoP-Nonce header, or
	// invalid_token); a request without credentials gets a Bearer and a
	// DPoP challenge. It must be a DPoPVerifier of the Guard's Verifier
	// with an ExternalURL: the proof's htu is compared with ExternalURL
	// and the request's path, never with the Host header, which the
	// client chooses. NewGuard panics otherwise.
	DPoP *DPoPVerifier
}

// NewGuard returns a Guard for v. It panics on a GuardConfig.DPoP of
// another Verifier or without an ExternalURL: a programming error, like a
// bad pattern given to http.ServeMux.
func NewGuard(v *Verifier, cfg GuardConfig) *Guard {
	if d := cfg.DPoP; d != nil && (d.v != v || d.origin == "") {
		panic("jtiguard: GuardConfig.DPoP must be a DPoPVerifier of the Guard's Verifier, with DPoPConfig.ExternalURL set")
	}
	g := &Guard{v: v, dpop: cfg.DPoP, realm: cfg.Realm, extract: cfg.Extract, onError: cfg.OnError}
	if cfg.Cookies != nil {
		c := cfg.Cookies.withDefaults()
		g.cookies = &c
	}
	return g
}

// Token returns the request's access token as the Guard reads it: the
// Authorization header (Bearer, or DPoP when the Guard accepts DPoP), else
// the access cookie if cookies are enabled (with the CSRF check), or what
// Extract returns; "" when there is none. Handlers behind the Guard use it
// to pass the token on, to Sessions.Renew or Logout.
func (g *Guard) Token(r *http.Request) (string, error) {
	tok, _, err := g.credentials(r)
	return tok, err
}

// credentials is Token, and whether the token came with the DPoP scheme.
func (g *Guard) credentials(r *http.Request) (tok string, dpop bool, err error) {
	if g.dpop != nil {
		if tok, ok, err := dpopAuthorization(r); ok {
			return tok, true, err
		}
	}
	if g.extract != nil {
		tok, err = g.extract(r)
		return tok, false, err
	}
	tok, err = BearerToken(r)
	if err != nil || tok != "" || g.cookies == nil {
		return tok, false, err
	}
	tok, err = g.cookies.accessToken(r)
	return tok, false, err
}

// dpopAuthorization reads `DPoP <token>` from r's one Authorization
// header; ok is false when r has no such header (or two, which
// BearerToken refuses).
func dpopAuthorization(r *http.Request) (tok string, ok bool, err error) {
	vs := r.Header.Values("Authorization")
	if len(vs) != 1 {
		return "", false, nil
	}
	scheme, tok, _ := strings.Cut(vs[0], " ")
	if !strings.EqualFold(scheme, "DPoP") {
		return "", false, nil
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" || !isB64Token(tok) {
		return "", true, invalidRequest("malformed DPoP token")
	}
	return tok, true, nil
}

// Authenticate is middleware that requires a valid access token and puts
// its claims in the request context (see ClaimsFrom).
func (g *Guard) Authenticate(next http.Handler) http.Handler {
	return g.Require(Requirement{})(next)
}

// Optional is middleware for routes that serve anonymous requests too: a
// request without credentials passes with no claims in its context; one
// with a token passes only if the token is valid (a bad token is refused,
// never ignored), with its claims in the context.
func (g *Guard) Optional(next http.Handler) http.Handler {
	return g.guard(Requirement{}, true, next)
}

// Require returns middleware that requires a valid access token meeting
// req: scopes (403 insufficient_scope otherwise), acr and maximum
// authentication age (401 insufficient_user_authentication with acr_values
// and max_age, so the client can step up). A request already verified by
// a Guard of the same Verifier earlier in the chain (Authenticate on a
// router, Require on a route) is not verified again: its claims are
// checked against req, with no second store read.
func (g *Guard) Require(req Requirement) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return g.guard(req, false, next) }
}

func (g *Guard) guard(req Requirement, optional bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if prior, ok := r.Context().Value(claimsKey{}).(verified); ok && prior.by == g.v {
			c := *prior.claims
			if err := g.v.Require(&c, req); err != nil {
				g.fail(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		tok, dpop, err := g.credentials(r)
		if err == nil && tok == "" {
			if optional {
				next.ServeHTTP(w, r)
			} else {
				g.fail(w, r, nil)
			}
			return
		}
		var c Claims
		switch {
		case err != nil:
		case dpop:
			c, err = g.verifyDPoP(r, tok)
		default:
			c, err = g.v.Verify(r.Context(), tok)
		}
		if err == nil {
			err = g.v.Require(&c, req)
		}
		if err != nil {
			if dpop {
				err = dpopScheme(err)
			}
			g.fail(w, r, err)
			return
		}
		if dpop && g.dpop.slot != 0 {
			w.Header().Set("DPoP-Nonce", g.dpop.Nonce()) // RFC 9449 section 9: a fresh one saves a round trip
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, verified{claims: &c, by: g.v})))
	})
}

var errProofAbsent = proofRejection("DPoP proof missing")

// verifyDPoP checks tok, presented with the DPoP scheme, and r's proof.
func (g *Guard) verifyDPoP(r *http.Request, tok string) (Claims, error) {
	proof, err := requestProof(r)
	switch {
	case err != nil:
		return Claims{}, err
	case proof == "":
		return Claims{}, errProofAbsent
	}
	return g.dpop.Verify(r.Context(), tok, proof, DPoPRequest{Method: r.Method, URL: requestURI(r)})
}

// dpopScheme marks a refusal of a DPoP request, so that it is answered
// with a DPoP challenge: a copy, since rejections are shared.
func dpopScheme(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.dpop {
		return err
	}
	c := *e
	c.dpop = true
	return &c
}

func (g *Guard) fail(w http.ResponseWriter, r *http.Request, err error) {
	if g.onError != nil {
		g.onError(w, r, err)
		return
	}
	g.WriteError(w, err)
}

type oneTimeKey struct{}

// OneTimeFrom returns the claims of the one-time token a Guard's Consume
// accepted for the request.
func OneTimeFrom(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(oneTimeKey{}).(*Claims)
	return c, ok
}

// Consume returns middleware that lets a request through only with a
// one-time token for purpose, read from the request by from (a form field
// or a header: never the bearer credential), and uses the token up: of any
// number of requests presenting it, on every replica sharing the Store, one
// gets through. Its claims are in the context (OneTimeFrom). A missing,
// invalid or replayed token is answered 400 invalid_action_token; a store
// that cannot answer, 503. The request body is capped at MaxFormBytes,
// whatever from reads; a larger one is answered 413 invalid_request and
// uses nothing up. Put it behind Authenticate or Require when the action
// also needs a logged-in user, and compare the two subjects.
func (g *Guard) Consume(purpose string, from func(*http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := capBody(w, r)
			tok := from(r)
			if body.over {
				// Not a token problem: net/http's form parser dropped the
				// error, and "a one-time token is required" would mislead.
				writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "invalid_request", Description: bodyTooLarge})
				return
			}
			if tok == "" {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid_action_token", Description: "a one-time token is required"})
				return
			}
			c, err := g.v.Consume(r.Context(), tok, purpose)
			var e *Error
			switch {
			case err == nil:
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), oneTimeKey{}, &c)))
			case errors.As(err, &e) && e.Code == codeInvalidToken:
				w.Header().Set("Cache-Control", "no-store")
				writeJSON(w, http.StatusBadRequest, errorBody{Error: "invalid_action_token", Description: e.Description})
			default:
				g.WriteError(w, err)
			}
		})
	}
}

// FormValue reads a one-time token from a POST form field, for Consume. It
// reads at most MaxFormBytes of the body (net/http alone would read 10 MB);
// a larger body yields "", and Consume answers it 413.
func FormValue(name string) func(*http.Request) string {
	return func(r *http.Request) string {
		capBody(nil, r)
		return r.PostFormValue(name)
	}
}

// MaxFormBytes caps every request body jtiguard reads: the forms of
// TokenEndpoint, RevocationEndpoint and IntrospectionEndpoint, and whatever
// Consume's from reads (FormValue). They carry a few tokens and names, far
// below it; without a cap, net/http reads up to 10 MB of each into memory
// before anything is checked.
const MaxFormBytes = 64 << 10

const bodyTooLarge = "the request body is over 64 KiB" // MaxFormBytes

// formBody is a request body capped at MaxFormBytes that remembers going
// over the cap, because r.PostFormValue and its kind drop the error.
type formBody struct {
	io.ReadCloser
	over bool
}

func (b *formBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		b.over = true
	}
	return n, err
}

// capBody caps r's body at MaxFormBytes, once however often it is called, so
// that every form read goes through one cap. When w is the server's own
// ResponseWriter, the server closes the connection after a body over the
// cap rather than reading on; w may be nil.
func capBody(w http.ResponseWriter, r *http.Request) *formBody {
	if b, ok := r.Body.(*formBody); ok {
		return b
	}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	b := &formBody{ReadCloser: http.MaxBytesReader(w, r.Body, MaxFormBytes)}
	r.Body = b
	return b
}

// WriteError answers a request that failed authentication or
// authorization: err nil means no token was presented (401 with a bare
// Bearer challenge, and a bare DPoP one when the Guard accepts DPoP). An
// *Error is answered with its status and code, and a DPoP challenge when
// the request used DPoP or the error is about DPoP (a use_dpop_nonce
// error with a DPoP-Nonce header); any other error with 500 and no
// detail.
func (g *Guard) WriteError(w http.ResponseWriter, err error) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if err == nil {
		// RFC 6750 section 3.1: a request without credentials gets the
		// challenge and no error code or other error information.
		h.Set("WWW-Authenticate", challenge(g.realm, nil))
		if g.dpop != nil {
			h.Add("WWW-Authenticate", dpopChallenge(g.realm, nil))
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "server_error"})
		return
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		if e.dpop || e.Code == codeInvalidDPoPProof || e.Code == codeUseDPoPNonce || e.kind == ErrDPoPRequired {
			h.Set("WWW-Authenticate", dpopChallenge(g.realm, e))
		} else {
			h.Set("WWW-Authenticate", challenge(g.realm, e))
		}
	}
	if e.Code == codeUseDPoPNonce && g.dpop != nil {
		h.Set("DPoP-Nonce", g.dpop.Nonce())
	}
	if e.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
}

type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// challenge builds a Bearer WWW-Authenticate value: bare when e is nil
// (no token presented, RFC 6750 section 3.1), otherwise with the error and what the
// client must bring.
func challenge(realm string, e *Error) string { return authChallenge("Bearer", realm, "", e) }

// dpopChallenge builds a DPoP WWW-Authenticate value (RFC 9449 section
// 7.1): as challenge, with the algs a proof may use.
func dpopChallenge(realm string, e *Error) string { return authChallenge("DPoP", realm, DPoPAlgs, e) }

func authChallenge(scheme, realm, algs string, e *Error) string {
	var b strings.Builder
	b.WriteString(scheme)
	sep := " "
	param := func(name, value string) {
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteString("=")
		b.WriteString(quote(value))
		sep = ", "
	}
	if realm != "" {
		param("realm", realm)
	}
	if algs != "" {
		param("algs", algs)
	}
	if e == nil {
		return b.String()
	}
	param("error", e.Code)
	if e.Description != "" {
		param("error_description", e.Description)
	}
	if e.Scope != "" {
		param("scope", e.Scope)
	}
	if e.ACRValues != "" {
		param("acr_values", e.ACRValues)
	}
	if e.MaxAge > 0 {
		b.WriteString(sep + "max_age=" + strconv.FormatInt(int64(e.MaxAge/time.Second), 10))
	}
	return b.String()
}

// quote makes a quoted-string (RFC 9110 section 5.6.4) of s: quote and backslash
// escaped, and anything outside printable ASCII dropped, so that no value
// can end the header or inject another parameter.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// JWKSHandler serves the key set's public keys (RFC 7517) with
// Cache-Control for maxAge, so that verifiers refetch soon after a key is
// added or retired.
func JWKSHandler(keys *KeySet, maxAge time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, err := keys.JWKS()
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge/time.Second)))
		_, _ = w.Write(doc)
	})
}

// ClientAuth checks an OAuth client's credentials; it reports whether
// secret is right for id. Compare secrets in constant time (see
// SecretsEqual).
type ClientAuth func(ctx context.Context, id, secret string) bool

// SecretsEqual compares two secrets in constant time.
func SecretsEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// clientCredentials reads client authentication from HTTP Basic (RFC 6749
// section 2.3.1) or the form, never both.
func clientCredentials(r *http.Request) (id, secret string, err error) {
	bid, bsecret, basic := r.BasicAuth()
	fid, fsecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	switch {
	case basic && (fid != "" || fsecret != ""):
		return "", "", invalidRequest("client credentials given twice")
	case basic:
		// RFC 6749 section 2.3.1: both are form-urlencoded before Basic
		// encoding (as golang.org/x/oauth2 sends them).
		id, err1 := url.QueryUnescape(bid)
		secret, err2 := url.QueryUnescape(bsecret)
		if err1 != nil || err2 != nil {
			return "", "", invalidRequest("malformed client credentials")
		}
		return id, secret, nil
	}
	return fid, fsecret, nil
}

// authClient reads an OAuth endpoint's form and authenticates its client,
// returning the client's id and whether it is public: authenticated
// without a secret (ClientAuth accepted an empty one).
func authClient(w http.ResponseWriter, r *http.Request, clients ClientAuth) (id string, public bool, err error) {
	if err := parseForm(w, r); err != nil {
		return "", false, err
	}
	id, secret, err := clientCredentials(r)
	if err != nil {
		return "", false, err
	}
	if id == "" || !clients(r.Context(), id, secret) {
		return "", false, OAuthError("invalid_client", "client authentication failed")
	}
	return id, secret == "", nil
}

// formToken is the token parameter of a revocation or introspection
// request.
func formToken(r *http.Request) (string, error) {
	tok := r.PostForm.Get("token")
	if tok == "" {
		return "", invalidRequest("token is required")
	}
	return tok, nil
}

// parseForm reads an OAuth endpoint's POST form, refusing other methods,
// other content types, bodies over MaxFormBytes, repeated parameters and
// parameters in the URL.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return requestError(ErrInvalidRequest, http.StatusMethodNotAllowed, "invalid_request", "POST required")
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	body := capBody(w, r)
	if err := r.ParseForm(); err != nil {
		if body.over {
			return invalidRequest(bodyTooLarge)
		}
		return invalidRequest("malformed form")
	}
	if r.URL.RawQuery != "" {
		return invalidRequest("parameters belong in the body")
	}
	for name, vs := range r.PostForm {
		if len(vs) > 1 {
			return invalidRequest("repeated parameter " + name)
		}
	}
	return nil
}

// TokenEndpoint serves an OAuth 2.0 token endpoint (RFC 6749) for the
// password, refresh_token and client_credentials grants on Sessions. It authenticates the
// client (HTTP Basic or form), leaves the user's credential check to
// Password, and answers with section 5.1 success and section 5.2 error
// responses, never cached. Every successful password grant starts a new
// session family; every refresh rotates. A body over MaxFormBytes is
// answered 400 invalid_request, as section 5.2 has it for a malformed
// request, so OAuth clients read it like any other error.
type TokenEndpoint struct {
	Sessions *Sessions
	// Clients authenticates the OAuth client. Required.
	Clients ClientAuth
	// Password checks a user's credentials for the password grant and
	// returns the Login to start, or an error (answered as invalid_grant,
	// whatever it says). Nil disables the password grant.
	Password func(ctx context.Context, clientID, username, password, scope string) (Login, error)
	// ClientCredentials grants an authenticated machine client an access
	// token of its own (RFC 6749 section 4.4): no session family, no
	// refresh token. It returns the claims to mint for clientID and the
	// requested scope: Subject defaults to the client id, Audience to the
	// Sessions' audience, and ClientID is always the authenticated client.
	// An *Error from OAuthError (say, invalid_scope) is answered as it is;
	// any other error as unauthorized_client. Nil disables the grant.
	ClientCredentials func(ctx context.Context, clientID, scope string) (Claims, error)
	// Realm names the protected space in invalid_client challenges.
	Realm string
	// DPoP, if set, accepts DPoP proofs (RFC 9449 section 5): a request
	// with one DPoP header has its proof checked for POST and the
	// endpoint's URL, which is DPoPConfig.ExternalURL and the request's
	// path (the Host header, which the client chooses, is never trusted:
	// without an ExternalURL such requests are answered 500). The tokens
	// minted are then bound to the proof's key, and answered with
	// token_type "DPoP": the access token always, the refresh token when
	// the client is public (authenticated without a secret). A bound
	// refresh token rotates only with a proof of its key: presented
	// without a proof or with another key's, it is answered 400
	// invalid_grant and rotates nothing (the proof itself may be valid; it
	// is the grant that does not hold for this key, as for another
	// client's token). A refused proof is answered 400 invalid_dpop_proof,
	// or 400 use_dpop_nonce with a DPoP-Nonce header, and two DPoP headers
	// 400 invalid_dpop_proof. When nonces are on, every answer carries a
	// fresh DPoP-Nonce (RFC 9449 section 8.2). Without DPoP, DPoP headers
	// are ignored and tokens are Bearer tokens.
	DPoP *DPoPVerifier
	// RequireDPoP, if set with DPoP, names the clients that must present a
	// DPoP proof with every token request (400 invalid_dpop_proof
	// otherwise): their tokens are always bound, so no route accepts them
	// as Bearer tokens.
	RequireDPoP func(clientID string) bool
}

// ServeHTTP implements http.Handler.
func (e *TokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pair, err := e.grant(w, r)
	if e.DPoP != nil && e.DPoP.slot != 0 {
		w.Header().Set("DPoP-Nonce", e.DPoP.Nonce())
	}
	if err != nil {
		WriteTokenError(w, e.Realm, err)
		return
	}
	WriteTokenPair(w, pair)
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// WriteTokenPair answers with a token pair as a token endpoint does (RFC
// 6749 section 5.1), for handlers that mint pairs themselves (a step-up
// endpoint). The token_type is "DPoP" for an access token bound to a DPoP
// key (RFC 9449 section 5), "Bearer" otherwise.
func WriteTokenPair(w http.ResponseWriter, pair *TokenPair) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	typ := "Bearer"
	if pair.Access.JKT != "" {
		typ = "DPoP"
	}
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken:  pair.AccessToken,
		TokenType:    typ,
		ExpiresIn:    int64(pair.Access.ExpiresAt.Sub(pair.Access.IssuedAt) / time.Second),
		RefreshToken: pair.RefreshToken,
		Scope:        pair.Access.Scope,
	})
}

func (e *TokenEndpoint) grant(w http.ResponseWriter, r *http.Request) (*TokenPair, error) {
	id, public, err := authClient(w, r, e.Clients)
	if err != nil {
		return nil, err
	}
	jkt, err := e.proof(r)
	if err != nil {
		return nil, err
	}
	if jkt == "" && e.DPoP != nil && e.RequireDPoP != nil && e.RequireDPoP(id) {
		return nil, tokenEndpointProofErr(errProofAbsent)
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "password":
		if e.Password == nil {
			return nil, OAuthError("unsupported_grant_type", "the password grant is not enabled")
		}
		user, pass := f.Get("username"), f.Get("password")
		if user == "" || pass == "" {
			return nil, invalidRequest("username and password are required")
		}
		login, err := e.Password(r.Context(), id, user, pass, f.Get("scope"))
		if err != nil {
			return nil, invalidGrant("invalid user credentials")
		}
		login.ClientID = id
		login.JKT, login.BindRefresh = jkt, public && jkt != ""
		pair, err := e.Sessions.Login(r.Context(), login)
		return pair, grantErr(err)
	case "refresh_token":
		rt := f.Get("refresh_token")
		if rt == "" {
			return nil, invalidRequest("refresh_token is required")
		}
		// RFC 6749 section 6: a refresh token is bound to the client it was
		// issued to; another client's attempt rotates nothing.
		pair, err := e.Sessions.refresh(r.Context(), rt, id, refreshKey{jkt: jkt, public: public})
		return pair, grantErr(err)
	case "client_credentials":
		if e.ClientCredentials == nil {
			return nil, OAuthError("unsupported_grant_type", "the client_credentials grant is not enabled")
		}
		c, err := e.ClientCredentials(r.Context(), id, f.Get("scope"))
		if err != nil {
			var x *Error
			if errors.As(err, &x) {
				return nil, x
			}
			return nil, OAuthError("unauthorized_client", "the client may not use this grant")
		}
		return e.Sessions.machine(c, id, jkt)
	case "":
		return nil, invalidRequest("grant_type is required")
	}
	return nil, OAuthError("unsupported_grant_type", "unsupported grant type")
}

// proof checks the request's DPoP proof, if any, and returns its key's
// thumbprint: "" when the request has none or the endpoint takes none.
func (e *TokenEndpoint) proof(r *http.Request) (string, error) {
	if e.DPoP == nil {
		return "", nil
	}
	proof, err := requestProof(r)
	if err != nil || proof == "" {
		return "", tokenEndpointProofErr(err)
	}
	p, err := e.DPoP.VerifyProof(r.Context(), proof, DPoPRequest{Method: r.Method, URL: r.URL.EscapedPath()})
	if err != nil {
		return "", tokenEndpointProofErr(err)
	}
	return p.JKT, nil
}

// tokenEndpointProofErr turns a proof's refusal (401, as a resource
// server answers it) into the token endpoint's 400 with the same code
// (RFC 9449 sections 5 and 8).
func tokenEndpointProofErr(err error) error {
	var e *Error
	if err == nil || !errors.As(err, &e) || (e.Code != codeInvalidDPoPProof && e.Code != codeUseDPoPNonce) {
		return err
	}
	c := *e
	c.Status = http.StatusBadRequest
	return &c
}

func invalidGrant(desc string) *Error {
	return OAuthError("invalid_grant", desc)
}

// grantErr maps a rejected grant to invalid_grant (RFC 6749 section 5.2), keeping
// the reason in its description and the store's 503 as it is.
func grantErr(err error) error {
	var e *Error
	if err == nil || !errors.As(err, &e) || e.Code != codeInvalidToken {
		return err
	}
	return &Error{Status: http.StatusBadRequest, Code: "invalid_grant", Description: e.Description, kind: ErrInvalidGrant, cause: err}
}

// WriteTokenError answers a token request with an RFC 6749 section 5.2
// error, never cached: an *Error (from OAuthError, or one this package
// returned) with its status and code, a 503 with Retry-After, invalid_client
// with a Basic challenge for realm; any other error as 500 server_error with
// no detail. For custom token endpoints.
func WriteTokenError(w http.ResponseWriter, realm string, err error) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	var e *Error
	if errors.As(err, &e) && e.Code == "invalid_client" {
		w.Header().Set("WWW-Authenticate", `Basic realm=`+quote(realm))
	}
	if errors.As(err, &e) {
		if e.Status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		writeJSON(w, e.Status, errorBody{Error: e.Code, Description: e.Description})
		return
	}
	writeJSON(w, http.StatusInternalServerError, errorBody{Error: "server_error"})
}

// RevocationEndpoint serves token revocation (RFC 7009) for every token
// class: a refresh token ends its session family, any other token is
// revoked by its jti. It answers 200 for tokens that are unknown, invalid
// or already revoked (the client can do nothing about them), 401 for a
// client that fails to authenticate, 400 invalid_request for a malformed
// request or a body over MaxFormBytes (RFC 7009 section 2.2.1 uses RFC 6749's
// errors), and 503 when the store cannot record the revocation.
// token_type_hint is accepted and not trusted: the token's own typ decides.
type RevocationEndpoint struct {
	Verifier *Verifier
	Clients  ClientAuth
	Realm    string
}

// ServeHTTP implements http.Handler.
func (e *RevocationEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	err := e.revoke(w, r)
	var x *Error
	if err != nil && (!errors.As(err, &x) || x.Code != codeInvalidToken) {
		WriteTokenError(w, e.Realm, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (e *RevocationEndpoint) revoke(w http.ResponseWriter, r *http.Request) error {
	id, _, err := authClient(w, r, e.Clients)
	if err != nil {
		return err
	}
	tok, err := formToken(r)
	if err != nil {
		return err
	}
	c, err := e.Verifier.authentic(r.Context(), tok, 0)
	if err != nil {
		return err
	}
	if c.ClientID != "" && c.ClientID != id {
		// RFC 7009 section 2.1: a client revokes only its own tokens.
		return OAuthError("unauthorized_client", "token issued to another client")
	}
	return e.Verifier.revokeAuthentic(r.Context(), c)
}

// IntrospectionEndpoint serves token introspection (RFC 7662) from the
// Verifier's store, for resource servers that cannot reach that store
// (NewIntrospectionStore is the client). It authenticates the client
// (HTTP Basic or form, as TokenEndpoint does: give credentials to resource
// servers only) and answers it with 200 and a JSON object, never cached,
// or with one of the errors below.
//
// A token is active when it is an access token (typ at+jwt) of the
// Verifier's issuer, signed by a key of its set, within MaxLifetime, not
// expired, not issued or valid only in the future beyond the leeway, and
// Live in the store (not revoked, its session family live and at its
// generation, not issued before the store's memory begins): what Verify
// checks, but for the audience. Introspection is asked by resource
// servers of any audience, so the audience is reported as the token
// carries it, and each resource server must check that its own identifier
// is among them (a Verifier using an IntrospectionStore does). Refresh, one-time and
// step tokens are never active: they are not for resource servers, and
// introspecting a refresh token would let whoever holds a stolen one learn
// whether it still works without presenting it, and so without tripping
// reuse detection. token_type_hint is accepted and not trusted: the
// token's own typ decides.
//
// An active token is answered with active, scope, client_id, token_type
// ("Bearer", or "DPoP" with cnf.jkt for a DPoP-bound token, RFC 9449
// section 6.2), exp, iat, nbf, sub, aud, iss and jti (RFC 7662 section 2.2),
// acr and auth_time (registered for introspection by RFC 9470), and sid
// (the session, a service-specific member as section 2.2 allows, with the
// meaning of the JWT claim), each only when the token carries it. Its
// other claims (amr, the session generation, custom claims) are not
// answered. Anything not active, whatever the reason, is answered
// {"active": false} alone (section 2.2: no reason is given).
//
// Errors: 401 invalid_client for a client that fails to authenticate, 400
// invalid_request for a malformed request, a missing token or a body over
// MaxFormBytes, 405 for another method than POST, and 503 when the store
// cannot answer: never "active": true on a guess.
type IntrospectionEndpoint struct {
	Verifier *Verifier
	// Clients authenticates the resource server asking. Required.
	Clients ClientAuth
	// Realm names the protected space in invalid_client challenges.
	Realm string
}

// introspection is an RFC 7662 section 2.2 answer.
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	Exp       int64  `json:"exp,omitempty"`
	Iat       int64  `json:"iat,omitempty"`
	Nbf       int64  `json:"nbf,omitempty"`
	Sub       string `json:"sub,omitempty"`
	Aud       any    `json:"aud,omitempty"` // a string, or an array of them, as in the token
	Iss       string `json:"iss,omitempty"`
	Jti       string `json:"jti,omitempty"`
	Sid       string `json:"sid,omitempty"`
	ACR       string `json:"acr,omitempty"`
	AuthTime  int64  `json:"auth_time,omitempty"`
	Cnf       *cnf   `json:"cnf,omitempty"`
}

// cnf is a confirmation claim (RFC 7800) of a DPoP key (RFC 9449 section
// 6.2).
type cnf struct {
	JKT string `json:"jkt"`
}

// ServeHTTP implements http.Handler.
func (e *IntrospectionEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := e.introspect(w, r)
	var x *Error
	if err != nil && (!errors.As(err, &x) || x.Code != codeInvalidToken) {
		WriteTokenError(w, e.Realm, err)
		return
	}
	answer := introspection{}
	if c != nil {
		answer = introspection{
			Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: "Bearer",
			Exp: c.ExpiresAt.Unix(), Iat: c.IssuedAt.Unix(),
			Sub: c.Subject, Iss: c.Issuer, Jti: c.ID.String(),
			Sid: c.Session, ACR: c.ACR,
		}
		if !c.NotBefore.IsZero() {
			answer.Nbf = c.NotBefore.Unix()
		}
		if !c.AuthTime.IsZero() {
			answer.AuthTime = c.AuthTime.Unix()
		}
		if c.JKT != "" { // RFC 9449 section 6.2
			answer.TokenType, answer.Cnf = "DPoP", &cnf{JKT: c.JKT}
		}
		answer.Aud = c.Audience
		if len(c.Audience) == 1 {
			answer.Aud = c.Audience[0]
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, answer)
}

// introspect authenticates the client and returns the claims of an active
// token; a token that is not active yields its invalid_token *Error.
func (e *IntrospectionEndpoint) introspect(w http.ResponseWriter, r *http.Request) (*Claims, error) {
	if _, _, err := authClient(w, r, e.Clients); err != nil {
		return nil, err
	}
	tok, err := formToken(r)
	if err != nil {
		return nil, err
	}
	return e.Verifier.introspect(r.Context(), tok)
}
