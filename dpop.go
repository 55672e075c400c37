package jtiguard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// DPoP proof limits and defaults (RFC 9449).
const (
	// DPoPAlgs are the proof algorithms a DPoPVerifier accepts, space
	// separated as the algs parameter of a DPoP challenge and the
	// dpop_signing_alg_values_supported metadata want them.
	DPoPAlgs = ES256 + " " + EdDSA
	// DefaultDPoPWindow is how old a proof's iat may be unless configured.
	DefaultDPoPWindow = 60 * time.Second
	// MaxDPoPWindow is the largest DPoPConfig.Window accepted.
	MaxDPoPWindow = 5 * time.Minute
	// DefaultMaxProofSize caps a proof's length unless configured (4 KiB).
	DefaultMaxProofSize = 4 << 10
	// DefaultDPoPNonceSlot is how often server nonces change unless
	// configured; each is accepted for its slot and the next.
	DefaultDPoPNonceSlot = 5 * time.Minute

	dpopTyp         = "dpop+jwt"
	minProofJTI     = 16
	maxProofJTI     = 128
	minProofSize    = 1 << 10
	maxProofSize    = 16 << 10
	minDPoPWindow   = 5 * time.Second
	minNonceSlot    = 10 * time.Second
	maxNonceSlot    = time.Hour
	nonceMACLen     = 16
	dpopNonceDomain = "jtiguard DPoP nonce v1\x00"
)

// DPoPConfig configures a DPoPVerifier. The zero value is usable when
// every DPoPRequest.URL is absolute.
type DPoPConfig struct {
	// ExternalURL is the origin clients address this server at, such as
	// "https://api.example.com" (scheme, host and port only). Its scheme,
	// host and port replace those of every DPoPRequest.URL, which then
	// only contributes its path. Set it whenever the server runs behind a
	// proxy or load balancer, or builds request URLs from the Host header:
	// the htu check is worth what the URL it compares with is worth.
	ExternalURL string
	// Window is how far in the past a proof's iat may be: default 60 s,
	// from 5 s to 5 min. A proof may be at most the Verifier's Leeway in
	// the future. Each accepted proof's jti is kept in the store for
	// Window plus Leeway: one entry per request, so a longer window costs
	// memory in proportion to the request rate.
	Window time.Duration
	// NonceSecret, when set, turns server nonces on (RFC 9449 sections 8
	// and 9): every proof must then carry a nonce from Nonce, or is refused
	// with ErrUseDPoPNonce. Nonces are an HMAC-SHA256 of a time slot under
	// this secret, so every replica given the same secret issues and
	// accepts the same ones, and nothing is stored. At least 32 random
	// bytes; keep it apart from signing keys.
	NonceSecret []byte
	// NonceSlot is how often the nonce changes: default 5 min, from 10 s to
	// 1 h, in whole seconds. A nonce is accepted during its slot and the
	// next one (and ahead of its slot by the Verifier's Leeway, for
	// replicas whose clocks run ahead), so it lives one to two slots.
	NonceSlot time.Duration
	// MaxProofSize caps a proof's length, checked before any decoding:
	// default 4 KiB, from 1 to 16 KiB. An ES256 or EdDSA proof is about
	// 500 bytes plus its htu; 4 KiB leaves room for URIs up to about 2.5 KB.
	MaxProofSize int
	// Store records the jti of each accepted proof. Default: the Verifier's
	// store, so that replicas sharing it accept each proof once. A store
	// that cannot consume (an IntrospectionStore) is refused: a resource
	// server on introspection gives DPoP a store of its own.
	Store store.Store
}

// DPoPRequest describes the HTTP request a proof came with.
type DPoPRequest struct {
	// Method is the request's method, as received ("GET", "POST"): htm
	// must equal it exactly.
	Method string
	// URL is the request's target URI as the server received it: an
	// absolute URI, or, with DPoPConfig.ExternalURL set, also just the
	// path (an http.Request's RequestURI). Its query and fragment are
	// ignored.
	URL string
	// AccessToken is the access token presented with the request, if any
	// (a resource request). With one, the proof must carry its hash (ath);
	// without one (a token request), a proof carrying ath is refused.
	AccessToken string
}

// DPoPProof is what an accepted proof establishes.
type DPoPProof struct {
	// JKT is the RFC 7638 thumbprint (SHA-256, base64url) of the proof's
	// public key: what a bound token's cnf.jkt must equal.
	JKT string
	// JTI is the proof's jti, as the client chose it.
	JTI string
	// IssuedAt is the proof's iat.
	IssuedAt time.Time
}

// DPoPVerifier checks DPoP proofs (RFC 9449 section 4.3) on the server:
// a token endpoint or a resource server. It shares its Verifier's clock,
// leeway, logger, event hook and, by default, store. It is safe for
// concurrent use.
//
// What it checks, in order, reading nothing of the claims before the
// signature holds: size (MaxProofSize); compact encoding (exactly three
// canonical base64url parts, the header at most 512 characters); a
// protected header of exactly typ, alg and jwk, where typ is "dpop+jwt"
// and alg is ES256 or EdDSA; the jwk, a public key of that alg (EC P-256
// or OKP Ed25519) with no private or secret members, no members but the
// key's own and kid, alg (equal to the header's), use ("sig"), key_ops
// (["verify"]) and ext, passing the same key policy as ParseJWK; the
// signature, with that key; claims as strict JSON (jti, htm, htu, iat,
// ath and nonce at most once each, of their type, no case variants); jti
// of 16 to 128 printable ASCII characters; htm equal to the request's
// method; htu, without query or fragment, equal to the request's URI
// after RFC 3986 normalization (scheme and host in lower case, default
// port dropped, percent-encoding normalized, dot segments removed, an
// empty path as "/"); iat at most Window old and Leeway ahead; ath when an
// access token is presented, and only then; the nonce when nonces are on.
// Then the jti is consumed in the store, once, atomically: of any number
// of presentations of one proof, on this process or any sharing the
// store, exactly one is accepted.
//
// Proofs are keyed in the store on SHA-256 of the key's thumbprint and the
// jti, so a client's jti can neither collide with another key's nor be
// chosen to match a token's. The entry is written under the thumbprint as
// its subject (the Redis store's bucket), or, by Verify on a
// store.ProofStore, under its access token's subject, beside the token's
// state; it is kept until iat + Window + Leeway. A store that lost its memory refuses proofs whose iat, less
// Leeway, predates the loss: a proof may have been accepted up to Leeway
// before its iat, by a verifier whose clock lags the client's.
type DPoPVerifier struct {
	v      *Verifier
	cfg    DPoPConfig
	store  store.Store
	joint  store.ProofStore // the Verifier's store, when proofs go to it and it can
	origin string           // normalized ExternalURL, or ""
	slot   int64            // NonceSlot in seconds; 0: nonces off
	nonces atomic.Pointer[nonceSet]
	keys   sync.Map // jwk text -> *Key: clients' keys seen (see key)
	nkeys  atomic.Int32
}

// NewDPoPVerifier returns a DPoPVerifier that shares v's clock, leeway,
// logger, event hook and (unless cfg.Store is set) store.
func NewDPoPVerifier(v *Verifier, cfg DPoPConfig) (*DPoPVerifier, error) {
	if v == nil {
		return nil, fmt.Errorf("%w: a Verifier is required", ErrConfig)
	}
	switch {
	case cfg.Window == 0:
		cfg.Window = DefaultDPoPWindow
	case cfg.Window < minDPoPWindow || cfg.Window > MaxDPoPWindow:
		return nil, fmt.Errorf("%w: DPoP Window must be between %v and %v", ErrConfig, minDPoPWindow, MaxDPoPWindow)
	}
	switch {
	case cfg.MaxProofSize == 0:
		cfg.MaxProofSize = DefaultMaxProofSize
	case cfg.MaxProofSize < minProofSize || cfg.MaxProofSize > maxProofSize:
		return nil, fmt.Errorf("%w: MaxProofSize must be between %d and %d bytes", ErrConfig, minProofSize, maxProofSize)
	}
	d := &DPoPVerifier{v: v}
	switch {
	case cfg.NonceSecret == nil && cfg.NonceSlot != 0:
		return nil, fmt.Errorf("%w: NonceSlot without NonceSecret", ErrConfig)
	case cfg.NonceSecret == nil:
	case len(cfg.NonceSecret) < MinHMACSecret:
		return nil, fmt.Errorf("%w: NonceSecret of %d bytes, need %d", ErrConfig, len(cfg.NonceSecret), MinHMACSecret)
	default:
		cfg.NonceSecret = append([]byte(nil), cfg.NonceSecret...)
		if cfg.NonceSlot == 0 {
			cfg.NonceSlot = DefaultDPoPNonceSlot
		}
		if cfg.NonceSlot < minNonceSlot || cfg.NonceSlot > maxNonceSlot || cfg.NonceSlot%time.Second != 0 {
			return nil, fmt.Errorf("%w: NonceSlot must be whole seconds between %v and %v", ErrConfig, minNonceSlot, maxNonceSlot)
		}
		d.slot = int64(cfg.NonceSlot / time.Second)
	}
	if cfg.ExternalURL != "" {
		u, ok := normalizeURI(cfg.ExternalURL, false)
		if !ok || len(u.path) != 1 {
			return nil, fmt.Errorf("%w: ExternalURL must be an http or https origin (scheme, host, port), not %q", ErrConfig, cfg.ExternalURL)
		}
		d.origin = u.origin
	}
	d.store = cfg.Store
	if d.store == nil {
		d.store = v.cfg.Store
	}
	switch s := d.store.(type) {
	case *IntrospectionStore:
		return nil, fmt.Errorf("%w: an IntrospectionStore cannot record DPoP proofs: set DPoPConfig.Store", ErrConfig)
	case *MemoryStore:
		if err := sameClock("the DPoP MemoryStore's", s.now, v.cfg.Now, v.cfg.Leeway); err != nil {
			return nil, err
		}
	}
	if ps, ok := d.store.(store.ProofStore); ok && sameStore(d.store, v.cfg.Store) {
		d.joint = ps
	}
	d.cfg = cfg
	return d, nil
}

// sameStore reports whether a and b are one store (an uncomparable store
// is never the same as another).
func sameStore(a, b store.Store) bool {
	return a != nil && b != nil && reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.TypeOf(a).Comparable() && a == b
}

// Proof rejections: each an immutable *Error, so refusing allocates
// nothing. Descriptions are fixed text and never quote the proof.
var (
	errProofTooLarge   = proofRejection("DPoP proof too large")
	errProofMalformed  = proofRejection("DPoP proof is not a compact JWS")
	errProofHeader     = proofRejection("DPoP proof header must hold exactly typ, alg and jwk")
	errProofTyp        = proofRejection("DPoP proof typ is not dpop+jwt")
	errProofAlg        = proofRejection("DPoP proof alg not allowed (" + DPoPAlgs + ")")
	errProofPrivateKey = proofRejection("DPoP proof jwk holds private or secret key members")
	errProofJWK        = proofRejection("DPoP proof jwk is not an acceptable public key")
	errProofKeyAlg     = proofRejection("DPoP proof jwk does not match its alg")
	errProofSignature  = proofRejection("DPoP proof signature invalid")
	errProofClaims     = proofRejection("DPoP proof claims malformed")
	errProofMissing    = proofRejection("DPoP proof lacks jti, htm, htu or iat")
	errProofJTI        = proofRejection("DPoP proof jti must be 16 to 128 printable ASCII characters")
	errProofHTM        = proofRejection("DPoP proof htm does not match the request method")
	errProofHTU        = proofRejection("DPoP proof htu does not match the request URI")
	errProofOld        = proofRejection("DPoP proof iat too old")
	errProofFuture     = proofRejection("DPoP proof iat in the future")
	errProofATH        = proofRejection("DPoP proof ath missing or not the access token's hash")
	errProofStrayATH   = proofRejection("DPoP proof ath given without an access token")
	errProofLost       = proofRejection("DPoP proof predates the replay store's memory")
	errProofReplayed   = &Error{Status: http.StatusUnauthorized, Code: codeInvalidDPoPProof, Description: "DPoP proof already used", kind: ErrDPoPReplayed}
	errNonceMissing    = nonceRejection("DPoP nonce required")
	errNonceStale      = nonceRejection("DPoP nonce stale or unknown")
)

func proofRejection(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: codeInvalidDPoPProof, Description: desc, kind: &wrapped{msg: "jtiguard: " + desc, err: ErrInvalidDPoPProof}}
}

func nonceRejection(desc string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: codeUseDPoPNonce, Description: desc, kind: &wrapped{msg: "jtiguard: " + desc, err: ErrUseDPoPNonce}}
}

// VerifyProof checks proof, the value of a request's DPoP header, against
// req, and consumes its jti. A refused proof yields an *Error with status
// 401 that matches ErrInvalidDPoPProof (code invalid_dpop_proof; a replay
// also matches ErrDPoPReplayed) or, when nonces are on and the proof
// lacks a current one, ErrUseDPoPNonce (code use_dpop_nonce: answer with a
// fresh Nonce in the DPoP-Nonce header). A resource server sends the
// status with a DPoP challenge; a token endpoint answers 400 with the same
// code (RFC 9449 sections 5, 7.1, 8 and 9). A store that cannot answer
// yields status 503 and ErrStoreUnavailable. A request URL that is
// relative while no ExternalURL is configured is an error matching
// ErrConfig.
//
// Only the proof is checked: that an access token is bound to the proof's
// key (its cnf.jkt equals the returned JKT) is the caller's to check, as
// is the token itself. A refused proof consumes nothing. Like
// Verifier.Consume, use is at most once: a call that fails with
// ErrStoreUnavailable may have consumed the proof; the client signs a new
// one for its retry, as it does for every request.
func (d *DPoPVerifier) VerifyProof(ctx context.Context, proof string, req DPoPRequest) (DPoPProof, error) {
	c, jkt, err := d.proofClaims(proof, req)
	if err != nil {
		return DPoPProof{}, err
	}
	// The nonce, never 0 (no nonce), lets a store recognize this call's
	// own write when a lost reply makes its client retry.
	nonce := rand.Uint64() | 1
	t := d.v.storeStart()
	st, err := d.store.Consume(ctx, d.ref(jkt, &c), nonce)
	d.v.storeDone(ctx, StoreConsume, t, err)
	if err != nil {
		d.v.report(ctx, Event{Kind: EventStoreUnavailable, JTI: c.jti, Err: err})
		return DPoPProof{}, unavailable(err)
	}
	if err := d.proofStatus(ctx, &c, st); err != nil {
		return DPoPProof{}, err
	}
	return DPoPProof{JKT: jkt, JTI: c.jti, IssuedAt: time.Unix(c.iat, 0)}, nil
}

// proofClaims checks proof against req and the clock, touching no store,
// and returns its claims and its key's thumbprint.
func (d *DPoPVerifier) proofClaims(proof string, req DPoPRequest) (proofClaims, string, error) {
	if len(proof) > d.cfg.MaxProofSize {
		return proofClaims{}, "", errProofTooLarge
	}
	j, err := parseJWS(proof)
	if err != nil {
		return proofClaims{}, "", errProofMalformed
	}
	alg, jwkText, e := parseProofHeader(j.header)
	if e != nil {
		return proofClaims{}, "", e
	}
	key, e := d.key(alg, jwkText)
	if e != nil {
		return proofClaims{}, "", e
	}
	if key.verifySignature(j.signingInput, j.sig) != nil {
		return proofClaims{}, "", errProofSignature
	}
	c, e := parseProofClaims(j.payload)
	if e != nil {
		return proofClaims{}, "", e
	}
	if err := d.check(&c, req, d.v.cfg.Now()); err != nil {
		return proofClaims{}, "", err
	}
	// NewKey named the key by its RFC 7638 thumbprint.
	return c, key.kid, nil
}

// maxProofKeys bounds the cache of clients' keys: past it the cache starts
// over (a flood of keys costs their parsing, nothing else).
const maxProofKeys = 4096

// key returns a proof's jwk as a key pinned to alg, from the keys of
// clients seen before when it can: a client signs its proofs with one key,
// and reading, checking and hashing it is much of a proof's cost beside
// the signature. The cache is keyed on the jwk's exact text and holds only
// keys that passed every check; a key's alg is compared on each hit.
func (d *DPoPVerifier) key(alg, jwkText string) (*Key, *Error) {
	if k, ok := d.keys.Load(jwkText); ok {
		if k := k.(*Key); k.alg == alg {
			return k, nil
		}
	}
	k, e := proofKey(alg, jwkText)
	if e != nil {
		return nil, e
	}
	if d.nkeys.Add(1) > maxProofKeys {
		d.keys.Clear()
		d.nkeys.Store(1)
	}
	d.keys.Store(jwkText, k)
	return k, nil
}

// proofStatus turns the store's answer about a proof into the error, if
// any: nil only for Live.
func (d *DPoPVerifier) proofStatus(ctx context.Context, c *proofClaims, st store.Status) error {
	switch {
	case st == store.Used:
		d.v.report(ctx, Event{Kind: EventDPoPReplayRefused, JTI: c.jti})
		return errProofReplayed
	case st == store.Lost:
		d.v.report(ctx, Event{Kind: EventStateLost, JTI: c.jti})
		return errProofLost
	case st != store.Live:
		return errProofLost // Lost, or a status no proof can have: fail closed
	}
	return nil
}

// ref names a proof to the store: its ID is a hash of the key's thumbprint
// and the jti, so jtis are per key and cannot be chosen to equal a token's;
// the subject is the thumbprint, which puts all of one key's proofs in one
// bucket of a shared store. IssuedAt is iat less the leeway: the earliest
// moment a verifier (whose clock may lag the client's by the leeway) can
// have accepted the proof, which is what a store that lost its memory
// compares with its loss. The entry is kept until no verifier's clock
// within the leeway would still accept the proof.
func (d *DPoPVerifier) ref(jkt string, c *proofClaims) store.TokenRef {
	var buf [64 + maxProofJTI]byte
	n := copy(buf[:], jkt) // 43 characters: the concatenation is unambiguous
	n += copy(buf[n:], c.jti)
	sum := sha256.Sum256(buf[:n])
	iat := time.Unix(c.iat, 0)
	leeway := d.v.cfg.Leeway
	return store.TokenRef{
		ID:        JTI(sum[:16]),
		Subject:   jkt,
		IssuedAt:  iat.Add(-leeway),
		ExpiresAt: iat.Add(d.cfg.Window + leeway),
	}
}

// check checks the claims against the request and the clock, the nonce
// last: a proof refused for anything else would be refused again with a
// nonce, so the client learns of the real fault first.
func (d *DPoPVerifier) check(c *proofClaims, req DPoPRequest, now time.Time) error {
	if len(c.jti) < minProofJTI || len(c.jti) > maxProofJTI {
		return errProofJTI
	}
	for i := range len(c.jti) {
		if ch := c.jti[i]; ch <= ' ' || ch > '~' {
			return errProofJTI
		}
	}
	if c.htm != req.Method {
		return errProofHTM
	}
	if err := d.checkHTU(c.htu, req.URL); err != nil {
		return err
	}
	iat := time.Unix(c.iat, 0)
	if now.Sub(iat) > d.cfg.Window {
		return errProofOld
	}
	if iat.After(now.Add(d.v.cfg.Leeway)) {
		return errProofFuture
	}
	switch {
	case req.AccessToken != "" && !athMatches(c.ath, req.AccessToken):
		return errProofATH
	case req.AccessToken == "" && c.seen&pAth != 0:
		return errProofStrayATH
	}
	if d.slot != 0 {
		switch {
		case c.seen&pNonce == 0:
			return errNonceMissing
		case !d.validNonce(c.nonce, now):
			return errNonceStale
		}
	}
	return nil
}

// checkHTU compares the proof's htu with the request's URI, both
// normalized.
func (d *DPoPVerifier) checkHTU(htu, reqURL string) error {
	got, ok := normalizeURI(htu, false)
	if !ok {
		return errProofHTU
	}
	origin := d.origin
	var path string
	if strings.HasPrefix(reqURL, "/") {
		if origin == "" {
			return fmt.Errorf("%w: DPoPRequest.URL is not absolute and no DPoPConfig.ExternalURL is set", ErrConfig)
		}
		if path, ok = normalizePath(reqURL, true); !ok {
			return errProofHTU
		}
	} else {
		want, ok := normalizeURI(reqURL, true)
		if !ok {
			return errProofHTU
		}
		if origin == "" {
			origin = want.origin
		}
		path = want.path
	}
	if got.origin != origin || got.path != path {
		return errProofHTU
	}
	return nil
}

// athMatches reports whether ath is base64url(SHA-256(token)).
func athMatches(ath, token string) bool {
	sum := sha256.Sum256([]byte(token))
	var want [43]byte
	base64.RawURLEncoding.Encode(want[:], sum[:])
	return len(ath) == len(want) && subtle.ConstantTimeCompare([]byte(ath), want[:]) == 1
}

// parseProofHeader reads a proof's protected header: exactly typ, alg and
// jwk, each once. It returns the alg and the jwk object's text.
func parseProofHeader(s string) (alg, jwkText string, e *Error) {
	r := jsonReader{s: s}
	if r.open() != nil {
		return "", "", errProofHeader
	}
	var typ string
	seen := 0
	for {
		name, ok, err := r.next()
		if err != nil {
			return "", "", errProofHeader
		}
		if !ok {
			break
		}
		var bit int
		switch name {
		case "typ":
			typ, err = r.str()
			bit = 1
		case "alg":
			alg, err = r.str()
			bit = 2
		case "jwk":
			if r.peek() != '{' {
				return "", "", errProofHeader
			}
			jwkText, err = r.raw()
			bit = 4
		default:
			// kid, jku, x5u, x5c, crit, b64 and the rest: a proof's key
			// is its jwk and nothing else.
			return "", "", errProofHeader
		}
		if err != nil || seen&bit != 0 {
			return "", "", errProofHeader
		}
		seen |= bit
	}
	if r.end() != nil || seen != 7 {
		return "", "", errProofHeader
	}
	if typ != dpopTyp {
		return "", "", errProofTyp
	}
	if alg != ES256 && alg != EdDSA {
		return "", "", errProofAlg
	}
	return alg, jwkText, nil
}

// proofJWKNames are the members a proof's jwk may have, beside ext.
var proofJWKNames = [...]string{"kty", "kid", "alg", "use", "key_ops", "crv", "x", "y", "n", "e", "d", "p", "q", "dp", "dq", "qi", "k"}

// proofKey reads a proof's jwk strictly and returns it as a verify-only
// key pinned to alg, named by its thumbprint.
func proofKey(alg, s string) (*Key, *Error) {
	var j jwk
	r := jsonReader{s: s}
	if r.open() != nil {
		return nil, errProofJWK
	}
	seen := 0
	for {
		name, ok, err := r.next()
		if err != nil {
			return nil, errProofJWK
		}
		if !ok {
			break
		}
		bit := -1
		switch name {
		case "ext": // WebCrypto's exportKey adds it
			bit = len(proofJWKNames)
			if err = r.literal("true"); err != nil {
				err = r.literal("false")
			}
		case "key_ops":
			bit = 4
			j.KeyOps, err = r.strs()
		default:
			for i, n := range proofJWKNames {
				if n == name {
					bit = i
				}
			}
			if bit < 0 {
				return nil, errProofJWK // x5c, x5u, oth, case variants, ...
			}
			*j.member(name), err = r.str()
		}
		if err != nil || seen&(1<<bit) != 0 {
			return nil, errProofJWK
		}
		seen |= 1 << bit
	}
	if r.end() != nil {
		return nil, errProofJWK
	}
	if j.private() || j.K != "" {
		return nil, errProofPrivateKey
	}
	if j.Alg != "" && j.Alg != alg {
		return nil, errProofKeyAlg
	}
	if j.Use != "" && j.Use != "sig" {
		return nil, errProofJWK
	}
	for _, op := range j.KeyOps {
		if op != "verify" {
			return nil, errProofJWK
		}
	}
	if j.foreign() {
		return nil, errProofJWK
	}
	var material any
	var err error
	switch {
	case alg == ES256 && j.Kty == "EC" && j.Crv == "P-256":
		material, err = j.ecdsa()
	case alg == EdDSA && j.Kty == "OKP" && j.Crv == "Ed25519":
		material, err = j.ed25519()
	default:
		return nil, errProofKeyAlg
	}
	if err != nil {
		return nil, errProofJWK
	}
	k, err := NewKey("", alg, material)
	if err != nil {
		return nil, errProofJWK
	}
	return k, nil
}

// proofClaims are a proof's claims; seen has a bit per claim present.
type proofClaims struct {
	jti, htm, htu, ath, nonce string
	iat                       int64
	seen                      int
}

// The proof's registered claims, each with its bit.
const (
	pJti = 1 << iota
	pHtm
	pHtu
	pIat
	pAth
	pNonce
)

var proofClaimNames = [...]string{"jti", "htm", "htu", "iat", "ath", "nonce"}

// parseProofClaims reads a proof's claims strictly: each registered claim
// at most once, of its type (iat an integer), and no other member whose
// name differs from one only in case. Other members are validated as JSON
// and ignored.
func parseProofClaims(s string) (proofClaims, *Error) {
	var c proofClaims
	r := jsonReader{s: s}
	if r.open() != nil {
		return c, errProofClaims
	}
	for {
		name, ok, err := r.next()
		if err != nil {
			return c, errProofClaims
		}
		if !ok {
			break
		}
		var bit int
		switch name {
		case "jti":
			c.jti, err = r.str()
			bit = pJti
		case "htm":
			c.htm, err = r.str()
			bit = pHtm
		case "htu":
			c.htu, err = r.str()
			bit = pHtu
		case "iat":
			c.iat, err = r.uint()
			bit = pIat
		case "ath":
			c.ath, err = r.str()
			bit = pAth
		case "nonce":
			c.nonce, err = r.str()
			bit = pNonce
		default:
			for _, n := range proofClaimNames {
				if strings.EqualFold(name, n) {
					return c, errProofClaims
				}
			}
			_, err = r.raw()
		}
		if err != nil || c.seen&bit != 0 {
			return c, errProofClaims
		}
		c.seen |= bit
	}
	if r.end() != nil {
		return c, errProofClaims
	}
	if c.seen&(pJti|pHtm|pHtu|pIat) != pJti|pHtm|pHtu|pIat {
		return c, errProofMissing
	}
	return c, nil
}

// uri is a normalized absolute http(s) URI: origin is scheme://host[:port],
// path starts with "/".
type uri struct{ origin, path string }

// normalizeURI normalizes an absolute http or https URI for the htu
// comparison (RFC 9449 section 4.3; RFC 3986 sections 6.2.2 and 6.2.3):
// scheme and host in lower case, an empty or default port removed,
// percent-encoding normalized and dot segments removed from the path, an
// empty path as "/". Userinfo is refused; a query or fragment is dropped
// when dropQuery is set (the request's own URI) and refused otherwise (an
// htu has none).
func normalizeURI(s string, dropQuery bool) (uri, bool) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return uri{}, false
	}
	scheme := s[:i]
	var defaultPort string
	switch {
	case strings.EqualFold(scheme, "https"):
		scheme, defaultPort = "https", "443"
	case strings.EqualFold(scheme, "http"):
		scheme, defaultPort = "http", "80"
	default:
		return uri{}, false
	}
	rest := s[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host, port := rest[:end], ""
	if strings.HasPrefix(host, "[") {
		b := strings.IndexByte(host, ']')
		if b < 0 {
			return uri{}, false
		}
		if after := host[b+1:]; after != "" {
			if after[0] != ':' {
				return uri{}, false
			}
			port = after[1:]
		}
		host = host[:b+1]
		for k := 1; k < len(host)-1; k++ {
			if c := host[k]; !isHex(c) && c != ':' && c != '.' {
				return uri{}, false
			}
		}
	} else {
		if c := strings.LastIndexByte(host, ':'); c >= 0 {
			host, port = host[:c], host[c+1:]
		}
		for k := range len(host) {
			if c := host[k]; !isUnreserved(c) {
				return uri{}, false // userinfo ('@'), spaces, percent-encoding, non-ASCII
			}
		}
	}
	if len(host) == 0 || len(host) == 2 && host[0] == '[' {
		return uri{}, false
	}
	if port != "" {
		n := 0
		for k := range len(port) {
			if c := port[k]; c < '0' || c > '9' || k >= 5 {
				return uri{}, false
			}
			n = n*10 + int(port[k]-'0')
		}
		if n > 65535 {
			return uri{}, false
		}
		if port = strconv.Itoa(n); port == defaultPort {
			port = ""
		}
	}
	path, ok := normalizePath(rest[end:], dropQuery)
	if !ok {
		return uri{}, false
	}
	origin := scheme + "://" + strings.ToLower(host)
	if port != "" {
		origin += ":" + port
	}
	return uri{origin: origin, path: path}, true
}

// normalizePath normalizes the path of s (which is empty or starts with
// "/", "?" or "#"), refusing a query or fragment unless dropQuery is set.
// Every character must be printable ASCII; a "%" must start a percent
// encoding, whose hex digits are put in upper case, or which is decoded
// when it encodes an unreserved character.
func normalizePath(s string, dropQuery bool) (string, bool) {
	if q := strings.IndexAny(s, "?#"); q >= 0 {
		if !dropQuery {
			return "", false
		}
		s = s[:q]
	}
	if s == "" {
		return "/", true
	}
	clean := true
	for k := 0; k < len(s); k++ {
		switch c := s[k]; {
		case c <= ' ' || c > '~':
			return "", false
		case c == '%':
			if k+2 >= len(s) || !isHex(s[k+1]) || !isHex(s[k+2]) {
				return "", false
			}
			clean = false
		}
	}
	if !clean {
		b := make([]byte, 0, len(s))
		for k := 0; k < len(s); k++ {
			if s[k] != '%' {
				b = append(b, s[k])
				continue
			}
			v := unhex(s[k+1])<<4 | unhex(s[k+2])
			if isUnreserved(v) {
				b = append(b, v)
			} else {
				b = append(b, '%', upperHex[v>>4], upperHex[v&0xf])
			}
			k += 2
		}
		s = string(b)
	}
	return removeDotSegments(s), true
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// isUnreserved reports whether c is an RFC 3986 unreserved character.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 section 5.2.4 for an absolute path.
func removeDotSegments(in string) string {
	if !strings.Contains(in, "/.") {
		return in // no segment starts with a dot
	}
	out := make([]byte, 0, len(in))
	pop := func() {
		if k := strings.LastIndexByte(string(out), '/'); k >= 0 {
			out = out[:k]
		} else {
			out = out[:0]
		}
	}
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			pop()
		case in == "/..":
			in = "/"
			pop()
		case in == "." || in == "..":
			in = ""
		default:
			k := strings.IndexByte(in[1:], '/') + 1
			if k == 0 {
				k = len(in)
			}
			out = append(out, in[:k]...)
			in = in[k:]
		}
	}
	if len(out) == 0 {
		return "/"
	}
	return string(out)
}

// nonceSet holds the nonces of the slots around slot: n[0] for slot-1,
// n[1] for slot, n[2] for slot+1.
type nonceSet struct {
	slot int64
	n    [3]string
}

// Nonce returns the server nonce to send in a DPoP-Nonce header now, or ""
// when nonces are off. Every replica with the same NonceSecret returns the
// same nonce within a slot; it is not a secret and may be sent with every
// response, so clients rarely meet use_dpop_nonce.
func (d *DPoPVerifier) Nonce() string {
	if d.slot == 0 {
		return ""
	}
	return d.nonceSet(d.v.cfg.Now()).n[1]
}

func (d *DPoPVerifier) slotOf(t time.Time) int64 {
	u := t.Unix()
	s := u / d.slot
	if u < 0 && u%d.slot != 0 {
		s--
	}
	return s
}

// nonceSet returns the nonces around now's slot, computed once per slot.
func (d *DPoPVerifier) nonceSet(now time.Time) *nonceSet {
	s := d.slotOf(now)
	if ns := d.nonces.Load(); ns != nil && ns.slot == s {
		return ns
	}
	ns := &nonceSet{slot: s}
	for i := range ns.n {
		ns.n[i] = d.nonceFor(s - 1 + int64(i))
	}
	d.nonces.Store(ns)
	return ns
}

// nonceFor is the nonce of slot: a MAC of it, 128 bits, base64url.
func (d *DPoPVerifier) nonceFor(slot int64) string {
	m := hmac.New(sha256.New, d.cfg.NonceSecret)
	var b [len(dpopNonceDomain) + 8]byte
	copy(b[:], dpopNonceDomain)
	binary.BigEndian.PutUint64(b[len(dpopNonceDomain):], uint64(slot))
	m.Write(b[:])
	return b64(m.Sum(nil)[:nonceMACLen])
}

// validNonce reports whether nonce is the nonce of now's slot or the one
// before, or of the next slot once now is within the leeway of it.
func (d *DPoPVerifier) validNonce(nonce string, now time.Time) bool {
	ns := d.nonceSet(now)
	eq := func(n string) bool {
		return len(nonce) == len(n) && subtle.ConstantTimeCompare([]byte(nonce), []byte(n)) == 1
	}
	return eq(ns.n[1]) || eq(ns.n[0]) || (d.slotOf(now.Add(d.v.cfg.Leeway)) > ns.slot && eq(ns.n[2]))
}

// Verify checks a DPoP-bound access token presented with proof (RFC 9449
// section 7.1): the token as Verifier.Verify does (signature, claims,
// store), then the proof as VerifyProof does, for req with req.AccessToken
// set to token (so the proof's ath must be the token's hash), then that
// the token is bound to the proof's key (its cnf.jkt equals the proof's
// thumbprint). A bearer token (no cnf.jkt) is refused with
// ErrNotDPoPBound, a token bound to another key with ErrDPoPKeyMismatch
// (and an EventDPoPBindingRefused): both invalid_token. Proof errors are
// VerifyProof's.
//
// The token is checked first, so a token that fails uses up no proof; a
// proof that fails after it leaves the token as it was. When the proofs
// go to the Verifier's store and it is a store.ProofStore (MemoryStore,
// the Redis store), the token's state and the proof's jti are one store
// operation, CheckAndConsume, with the proof's entry kept under the
// token's subject (one round trip on Redis, on Cluster too); the proof is
// then consumed only once its token is found live and bound to its key.
// Otherwise they are two store operations, Check and Consume: one round
// trip each on Redis.
func (d *DPoPVerifier) Verify(ctx context.Context, token, proof string, req DPoPRequest) (Claims, error) {
	start := d.v.verifyStart()
	var (
		c     Claims
		cache CacheResult
		err   error
	)
	if d.joint != nil {
		c, cache, err = d.verifyJoint(ctx, token, proof, req)
	} else {
		c, cache, err = d.verifySplit(ctx, token, proof, req)
	}
	d.v.verifyDone(ctx, TypeAccess, start, cache, err)
	return c, err
}

// verifySplit is Verify with two store operations: the token's Check and
// the proof's Consume.
func (d *DPoPVerifier) verifySplit(ctx context.Context, token, proof string, req DPoPRequest) (Claims, CacheResult, error) {
	c, cache, err := d.v.access(ctx, token)
	if err != nil {
		return Claims{}, cache, err
	}
	if c.JKT == "" {
		return Claims{}, cache, reject(ErrNotDPoPBound)
	}
	req.AccessToken = token
	p, err := d.VerifyProof(ctx, proof, req)
	if err != nil {
		return Claims{}, cache, err
	}
	if p.JKT != c.JKT {
		d.v.report(ctx, eventFor(EventDPoPBindingRefused, c))
		return Claims{}, cache, reject(ErrDPoPKeyMismatch)
	}
	return *c, cache, nil
}

// verifyJoint is Verify on a store.ProofStore: the token's state and the
// proof's jti in one store operation. A request refused before the store
// is reached (a bad proof, a proof of another key) reads the token's state
// first, so that it is refused for the same reason as with two operations.
func (d *DPoPVerifier) verifyJoint(ctx context.Context, token, proof string, req DPoPRequest) (Claims, CacheResult, error) {
	c, cache, err := d.v.verified(ctx, token, TypeAccess)
	if err != nil {
		return Claims{}, cache, err
	}
	if c.JKT == "" {
		return Claims{}, cache, reject(ErrNotDPoPBound)
	}
	req.AccessToken = token
	ref := d.v.ref(c)
	ref.Token = token
	pc, jkt, perr := d.proofClaims(proof, req)
	if perr != nil || jkt != c.JKT {
		t := d.v.storeStart()
		st, err := d.v.cfg.Store.Check(ctx, ref)
		d.v.storeDone(ctx, StoreCheck, t, err)
		if err := d.v.settle(ctx, c, st, err); err != nil {
			return Claims{}, cache, err
		}
		if perr != nil {
			return Claims{}, cache, perr
		}
		d.v.report(ctx, eventFor(EventDPoPBindingRefused, c))
		return Claims{}, cache, reject(ErrDPoPKeyMismatch)
	}
	// The proof's entry is kept with the token's state, under its subject:
	// its ID is still the hash of the thumbprint and the jti.
	pref := d.ref(jkt, &pc)
	pref.Subject = ref.Subject
	t := d.v.storeStart()
	st, pst, err := d.joint.CheckAndConsume(ctx, ref, pref, rand.Uint64()|1)
	d.v.storeDone(ctx, StoreCheckConsume, t, err)
	if err := d.v.settle(ctx, c, st, err); err != nil {
		return Claims{}, cache, err
	}
	if err := d.proofStatus(ctx, &pc, pst); err != nil {
		return Claims{}, cache, err
	}
	return *c, cache, nil
}

// errProofHeaders: a request must carry exactly one DPoP header (RFC 9449
// section 4.3).
var (
	errProofHeaders = proofRejection("exactly one DPoP header required")
)

// requestProof returns the request's one DPoP header, or "" and nil when
// it has none.
func requestProof(r *http.Request) (string, error) {
	vs := r.Header.Values("DPoP")
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		if vs[0] == "" {
			return "", errProofMalformed
		}
		return vs[0], nil
	}
	return "", errProofHeaders
}

// requestURI is what a proof's htu is checked against for r: its target
// as received, which VerifyProof reads after ExternalURL (query ignored).
func requestURI(r *http.Request) string {
	if r.RequestURI != "" {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}
