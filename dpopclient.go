package jtiguard

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// maxDPoPOrigins bounds the server nonces a DPoPTransport remembers: one
// per origin, and a client talks to a handful.
const maxDPoPOrigins = 256

// maxNonceErrorBody bounds how much of a 400 response a DPoPTransport
// reads to find a use_dpop_nonce error; the rest is left to the caller.
const maxNonceErrorBody = 4 << 10

// DPoPTransport is the client side of DPoP (RFC 9449): an
// http.RoundTripper that adds a fresh proof, signed with the client's key,
// to every request it sends. It is safe for concurrent use.
//
// Each proof carries a random jti (16 bytes), the request's method (htm)
// and URL without query and fragment (htu), the time (iat), the hash of
// the access token (ath) when the request carries "Authorization: DPoP
// <token>", and the latest server nonce seen for the request's origin.
// Server nonces are remembered per origin from every response's DPoP-Nonce
// header. A response that asks for a nonce (401 with a DPoP challenge
// whose error is use_dpop_nonce, or 400 with the JSON error
// use_dpop_nonce, and a DPoP-Nonce header) is answered by sending the
// request again, once, with a new proof carrying that nonce, provided the
// request's body can be sent again (it has none, or Request.GetBody is
// set, as http.NewRequest sets it for in-memory bodies); otherwise the
// response is returned as it is.
//
// With golang.org/x/oauth2, use it as the Transport of the http.Client
// passed in the context (oauth2.HTTPClient) for token requests, and as the
// Base of the oauth2.Transport that makes API calls: oauth2.Transport sets
// "Authorization: DPoP <token>" when the token endpoint answered with
// token_type DPoP, and this transport, underneath, hashes that token into
// the proof.
type DPoPTransport struct {
	// Base sends the requests; nil means http.DefaultTransport. Set it
	// before first use.
	Base http.RoundTripper
	// Now is the clock the proofs' iat comes from; nil means time.Now.
	// Set it before first use.
	Now func() time.Time

	key    *Key
	prefix string // the encoded protected header and its dot
	jkt    string

	mu     sync.Mutex
	nonces map[string]string // origin -> latest DPoP-Nonce
}

// NewDPoPTransport returns a DPoPTransport that signs proofs with key, a
// signing key (one made from private material) pinned to ES256 or EdDSA,
// the algorithms a DPoPVerifier accepts, and sends requests with base
// (nil: http.DefaultTransport). Tokens bound through it are bound to the
// key's RFC 7638 thumbprint, JKT.
func NewDPoPTransport(key *Key, base http.RoundTripper) (*DPoPTransport, error) {
	if key == nil || key.method == nil {
		return nil, keyErr(ErrInvalidKey, "", "DPoP needs a key")
	}
	if key.alg != ES256 && key.alg != EdDSA {
		return nil, keyErr(ErrInvalidKey, key.kid, fmt.Sprintf("DPoP proofs are signed with %s, not %s", DPoPAlgs, key.alg))
	}
	if !key.CanSign() {
		return nil, keyErr(ErrInvalidKey, key.kid, "DPoP needs a key that can sign")
	}
	// The jwk holds the members of the key's thumbprint and nothing else:
	// no kid, which could tie proofs to a name the client uses elsewhere.
	j, _ := key.publicJWK()
	var jw jsonWriter
	jw.str("kty", j.Kty)
	jw.str("crv", j.Crv)
	jw.str("x", j.X)
	if j.Y != "" {
		jw.str("y", j.Y)
	}
	w := jsonWriter{b: make([]byte, 0, 192)}
	w.str("typ", dpopTyp)
	w.str("alg", key.alg)
	w.raw("jwk", string(jw.close()))
	hdr := w.close()
	return &DPoPTransport{
		Base:   base,
		key:    key,
		prefix: b64(hdr) + ".",
		jkt:    key.thumbprint(),
		nonces: make(map[string]string),
	}, nil
}

// JKT returns the RFC 7638 thumbprint of the transport's key: the cnf.jkt
// of the tokens bound to it, and the dpop_jkt a client may send in an
// authorization request (RFC 9449 section 10).
func (t *DPoPTransport) JKT() string { return t.jkt }

// Proof returns a new proof for a request with method to u, bound to
// accessToken unless it is empty, carrying the latest nonce seen for u's
// origin: for requests this transport does not send, such as a WebSocket
// handshake made by another library.
func (t *DPoPTransport) Proof(method string, u *url.URL, accessToken string) (string, error) {
	if u == nil || u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("%w: a DPoP proof needs an absolute URL", ErrConfig)
	}
	return t.proof(method, u, accessToken, t.nonce(origin(u)))
}

func (t *DPoPTransport) proof(method string, u *url.URL, accessToken, nonce string) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	w := jsonWriter{b: make([]byte, 0, 256)}
	w.str("jti", b64(jti[:]))
	w.str("htm", method)
	w.str("htu", htu(u))
	w.int("iat", now().Unix())
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		w.str("ath", b64(sum[:]))
	}
	if nonce != "" {
		w.str("nonce", nonce)
	}
	payload := w.close()

	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(t.prefix)+enc.EncodedLen(len(payload))+1+enc.EncodedLen(64))
	buf = append(buf, t.prefix...)
	buf = enc.AppendEncode(buf, payload)
	sig, err := t.key.signString(string(buf))
	if err != nil {
		return "", err
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

// htu is u without userinfo, query and fragment, an empty path as "/".
func htu(u *url.URL) string {
	v := url.URL{Scheme: strings.ToLower(u.Scheme), Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	if v.Path == "" {
		v.Path, v.RawPath = "/", ""
	}
	return v.String()
}

// origin names u's origin, for the nonces: scheme and host in lower case,
// a default port dropped.
func origin(u *url.URL) string {
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	switch {
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = host[:len(host)-4]
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = host[:len(host)-3]
	}
	return scheme + "://" + host
}

func (t *DPoPTransport) nonce(origin string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nonces[origin]
}

// remember records the server nonce of resp, if any, and returns it.
func (t *DPoPTransport) remember(origin string, resp *http.Response) string {
	n := resp.Header.Get("DPoP-Nonce")
	if n == "" {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.nonces[origin]; !ok && len(t.nonces) >= maxDPoPOrigins {
		clear(t.nonces)
	}
	t.nonces[origin] = n
	return n
}

// accessToken returns the token of an "Authorization: DPoP <token>"
// header, or "".
func accessToken(h http.Header) string {
	a := h.Get("Authorization")
	if len(a) > 5 && strings.EqualFold(a[:5], "DPoP ") {
		return strings.TrimSpace(a[5:])
	}
	return ""
}

// RoundTrip sends req with a new DPoP proof, and once more with another
// when the server asks for a nonce it did not carry. req itself is not
// modified.
func (t *DPoPTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		closeBody(req)
		return nil, fmt.Errorf("%w: a DPoP proof needs an absolute URL", ErrConfig)
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	o := origin(req.URL)
	token := accessToken(req.Header)
	sent := t.nonce(o)
	r, err := t.prepare(req, token, sent)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	fresh := t.remember(o, resp)
	if fresh == "" || fresh == sent || !replayable(req) || !askedForNonce(resp) {
		return resp, nil
	}
	// The first attempt's body is consumed: a new one, and a new proof.
	r, err = t.prepare(req, token, fresh)
	if err == nil && req.Body != nil && req.Body != http.NoBody {
		r.Body, err = req.GetBody()
	}
	if err != nil {
		return resp, nil // the server's answer is the better error
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxNonceErrorBody))
	resp.Body.Close()
	resp, err = base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	t.remember(o, resp)
	return resp, nil
}

// prepare returns a copy of req with a proof carrying nonce.
func (t *DPoPTransport) prepare(req *http.Request, token, nonce string) (*http.Request, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	p, err := t.proof(method, req.URL, token, nonce)
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("DPoP", p)
	return r, nil
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// askedForNonce reports whether resp is a use_dpop_nonce error: a 401
// with a DPoP challenge naming it (a resource server), or a 400 whose JSON
// error is it (a token endpoint). A 400's body is read, up to 4 KiB, and
// put back.
func askedForNonce(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		for _, c := range resp.Header.Values("WWW-Authenticate") {
			// One header may hold several challenges (Bearer and DPoP).
			if strings.Contains(strings.ToLower(c), "dpop") &&
				(strings.Contains(c, `error="use_dpop_nonce"`) || strings.Contains(c, "error=use_dpop_nonce")) {
				return true
			}
		}
	case http.StatusBadRequest:
		if resp.Body == nil {
			return false
		}
		head, err := io.ReadAll(io.LimitReader(resp.Body, maxNonceErrorBody))
		resp.Body = &rereadBody{Reader: io.MultiReader(bytes.NewReader(head), resp.Body), Closer: resp.Body}
		if err != nil {
			return false
		}
		var e struct {
			Error string `json:"error"`
		}
		return json.Unmarshal(head, &e) == nil && e.Error == "use_dpop_nonce"
	}
	return false
}

// rereadBody is a response body whose start was read and put back.
type rereadBody struct {
	io.Reader
	io.Closer
}

// CloseIdleConnections closes the idle connections of Base, when it has
// that method, as http.Client.CloseIdleConnections expects.
func (t *DPoPTransport) CloseIdleConnections() {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if c, ok := base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
