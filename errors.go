package jtiguard

import (
	"errors"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// sentinel is an error value whose text is safe to show a client and which,
// where golang-jwt has an equivalent, also matches that error with errors.Is.
type sentinel struct {
	msg string
	jwt error
}

func (s *sentinel) Error() string { return "jtiguard: " + s.msg }
func (s *sentinel) Unwrap() error { return s.jwt }

func newSentinel(msg string, jwtErr error) error { return &sentinel{msg: msg, jwt: jwtErr} }

// Token rejections. Every error returned for a token that is not accepted
// matches ErrInvalidToken and exactly one of the more specific sentinels
// below; where golang-jwt has an equivalent error it matches that one too
// (for example errors.Is(err, jwt.ErrTokenExpired) for ErrExpired).
var (
	// ErrInvalidToken matches every rejection of a token (HTTP 401 invalid_token).
	ErrInvalidToken = newSentinel("invalid token", nil)

	// ErrTokenTooLarge: the token exceeds MaxTokenSize; nothing was decoded.
	ErrTokenTooLarge = newSentinel("token too large", jwt.ErrTokenMalformed)
	// ErrMalformed: not a canonical compact JWS with a strict JSON header
	// of alg, kid and typ only, or claims that are not a JSON object.
	ErrMalformed = newSentinel("malformed token", jwt.ErrTokenMalformed)
	// ErrWrongTokenType: typ is missing, unknown, or another class than
	// the one the method accepts.
	ErrWrongTokenType = newSentinel("wrong token type", jwt.ErrTokenMalformed)
	// ErrUnknownKey: no key in the set has the token's kid (or it has none).
	ErrUnknownKey = newSentinel("unknown signing key", jwt.ErrTokenUnverifiable)
	// ErrAlgorithm: the header's alg is not the one the key is pinned to.
	ErrAlgorithm = newSentinel("algorithm not allowed for this key", jwt.ErrTokenSignatureInvalid)
	// ErrSignature: the signature does not verify.
	ErrSignature = newSentinel("invalid signature", jwt.ErrTokenSignatureInvalid)
	// ErrInvalidClaims: a registered claim has the wrong type, appears
	// twice, or has a case variant beside it.
	ErrInvalidClaims = newSentinel("invalid claims", jwt.ErrTokenInvalidClaims)
	// ErrMissingClaim: iss, sub, aud, exp, iat or jti is missing.
	ErrMissingClaim = newSentinel("required claim missing", jwt.ErrTokenRequiredClaimMissing)
	// ErrInvalidJTI: the jti is not of the shape this package issues.
	ErrInvalidJTI = newSentinel("invalid jti", jwt.ErrTokenInvalidId)
	// ErrInvalidIssuer: iss is not the configured issuer.
	ErrInvalidIssuer = newSentinel("invalid issuer", jwt.ErrTokenInvalidIssuer)
	// ErrInvalidAudience: aud does not contain the configured audience.
	ErrInvalidAudience = newSentinel("invalid audience", jwt.ErrTokenInvalidAudience)
	// ErrWrongPurpose: a one-time token presented for another purpose.
	ErrWrongPurpose = newSentinel("token issued for another purpose", jwt.ErrTokenInvalidAudience)
	// ErrExpired: exp has passed.
	ErrExpired = newSentinel("token expired", jwt.ErrTokenExpired)
	// ErrNotYetValid: nbf is beyond the leeway in the future.
	ErrNotYetValid = newSentinel("token not valid yet", jwt.ErrTokenNotValidYet)
	// ErrIssuedInFuture: iat is beyond the leeway in the future.
	ErrIssuedInFuture = newSentinel("token issued in the future", jwt.ErrTokenUsedBeforeIssued)
	// ErrLifetime: exp is not after iat, or exp-iat exceeds MaxLifetime.
	ErrLifetime = newSentinel("token lifetime exceeds the maximum", jwt.ErrTokenInvalidClaims)

	// ErrRevoked: the token's jti was revoked before its expiry.
	ErrRevoked = newSentinel("token revoked", nil)
	// ErrReplayed: a one-time token was presented after its one use.
	ErrReplayed = newSentinel("token already used", nil)
	// ErrSessionEnded: the token's session family has ended (logout,
	// logout-all, absolute or idle expiry) or is unknown.
	ErrSessionEnded = newSentinel("session ended", nil)
	// ErrRefreshReused: a superseded refresh token of the token's family was
	// presented, so the whole family was revoked. Alert on it: either a
	// client lost a response or a refresh token was stolen.
	ErrRefreshReused = newSentinel("refresh token reused: session revoked", nil)
	// ErrSuperseded: the token predates a change of its session (step-up,
	// password, role or scope change) and is no longer accepted.
	ErrSuperseded = newSentinel("token superseded by a change to its session", nil)
	// ErrWrongClient: a refresh token presented by another client than the
	// one it was issued to.
	ErrWrongClient = newSentinel("token issued to another client", nil)
	// ErrForeignSession: the token belongs to a session its verifier's
	// store has never known: the store is not the issuer's. A resource
	// server needs the issuer's store (the same Redis) to check sessions,
	// or introspection; a store of its own cannot vouch for them.
	ErrForeignSession = newSentinel("token's session unknown to this store: verify with the issuer's store", nil)
	// ErrDPoPRequired: the token is bound to a DPoP key (cnf.jkt) but was
	// presented without a proof of it, as a Bearer token or a refresh
	// token sent without a DPoP header (RFC 9449 sections 5 and 7.2), or
	// the route requires DPoP (Requirement.DPoP) and the token is a bearer
	// token.
	ErrDPoPRequired = newSentinel("token must be presented with a DPoP proof of its key", nil)
	// ErrDPoPKeyMismatch: the token is bound to another DPoP key than the
	// one that signed the proof presented with it. Alert on it: the token
	// is in hands without its key.
	ErrDPoPKeyMismatch = newSentinel("token bound to another DPoP key", nil)
	// ErrNotDPoPBound: a bearer token (no cnf.jkt) presented with the DPoP
	// scheme (RFC 9449 section 7.1).
	ErrNotDPoPBound = newSentinel("token is not DPoP-bound", nil)
	// ErrStateLost: the token was issued before the store's memory begins (the
	// store restarted empty or was flushed), so nothing can vouch that it was
	// not revoked or used. The client must obtain a new token.
	ErrStateLost = newSentinel("token predates the revocation store", nil)
)

// DPoP proof rejections (RFC 9449). They are not token rejections: none
// matches ErrInvalidToken, and each matches exactly one of
// ErrInvalidDPoPProof and ErrUseDPoPNonce, so that a server answers with
// the right code. The *Error's Description says which check failed and
// never quotes the proof.
var (
	// ErrInvalidDPoPProof matches every refused DPoP proof but those
	// refused for their nonce (code invalid_dpop_proof: HTTP 401 from a
	// resource server, 400 from a token endpoint).
	ErrInvalidDPoPProof = newSentinel("invalid DPoP proof", nil)
	// ErrDPoPReplayed: the proof's jti was already used with its key. It
	// matches ErrInvalidDPoPProof.
	ErrDPoPReplayed error = &wrapped{msg: "jtiguard: DPoP proof already used", err: ErrInvalidDPoPProof}
	// ErrUseDPoPNonce: server nonces are on and the proof carries none, or
	// one that is stale or was never issued (code use_dpop_nonce). Answer
	// with a fresh DPoPVerifier.Nonce in the DPoP-Nonce header: the client
	// retries with it.
	ErrUseDPoPNonce = newSentinel("DPoP nonce required", nil)
)

// Infrastructure failures (HTTP 503). These never mean a token was accepted.
var (
	// ErrStoreUnavailable: the store could not answer (down, timing out, full).
	// The token is not accepted; the request may be retried later.
	ErrStoreUnavailable = newSentinel("token store unavailable", nil)
	// ErrStoreFull: the store reached its configured capacity and refused to
	// record more state rather than forget state it holds. It matches
	// ErrStoreUnavailable.
	ErrStoreFull error = &wrapped{msg: "jtiguard: token store full", err: ErrStoreUnavailable}
)

// Configuration and key-loading failures.
var (
	// ErrInvalidKey matches every refused key: malformed, of a type that
	// does not match its algorithm, with an unusable or duplicated kid, in a
	// set that would mix symmetric and asymmetric keys, or weak.
	ErrInvalidKey = newSentinel("invalid key", jwt.ErrInvalidKey)
	// ErrWeakKey: a key is too small or otherwise unsafe (HMAC secret under 32
	// bytes, RSA modulus under 2048 bits, public exponent too small, a known
	// weak RSA modulus). It matches ErrInvalidKey.
	ErrWeakKey error = &wrapped{msg: "jtiguard: weak key refused", err: ErrInvalidKey}
	// ErrUnsupportedAlgorithm: a key names an algorithm other than EdDSA,
	// ES256, RS256 and HS256. It matches ErrInvalidKey.
	ErrUnsupportedAlgorithm error = &wrapped{msg: "jtiguard: unsupported algorithm", err: ErrInvalidKey}
	// ErrConfig: a constructor was given an unusable configuration.
	ErrConfig = newSentinel("invalid configuration", nil)
)

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// Error is the error returned by verification and Require. It carries the
// OAuth 2.0 error code and HTTP status a server should answer with (RFC 6750
// section 3.1, RFC 9470) and
// a description that is safe to send to the client: it never contains the
// token or any part of it.
//
// Use errors.Is with the sentinels above to branch on the reason.
type Error struct {
	// Status is the HTTP status: 401 for a rejected token or DPoP proof,
	// 503 when the store could not answer.
	Status int
	// Code is the OAuth error code: "invalid_token",
	// "invalid_dpop_proof", "use_dpop_nonce" or "temporarily_unavailable".
	Code string
	// Description is a short human-readable reason, safe for clients.
	Description string
	// ACRValues and MaxAge are what an insufficient_user_authentication
	// challenge asks for (RFC 9470): space-separated acr values, and the
	// maximum authentication age (zero: none).
	ACRValues string
	MaxAge    time.Duration
	// Scope is what an insufficient_scope challenge asks for.
	Scope string

	kind  error // one of the sentinels
	cause error // an underlying error (store failure), may be nil
	dpop  bool  // the request used the DPoP scheme: answer with a DPoP challenge
}

func (e *Error) Error() string {
	if e.cause != nil {
		return e.kind.Error() + ": " + e.cause.Error()
	}
	return e.kind.Error()
}

// Unwrap exposes the sentinel, ErrInvalidToken for rejections, and the
// underlying cause, for errors.Is and errors.As.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 3)
	errs = append(errs, e.kind)
	if e.Code == codeInvalidToken {
		errs = append(errs, ErrInvalidToken)
	}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// OAuth 2.0 error codes (RFC 6750 section 3.1, RFC 9470 section 3, RFC
// 9449).
const (
	codeInvalidToken      = "invalid_token"
	codeInsufficientScope = "insufficient_scope"
	codeInsufficientAuth  = "insufficient_user_authentication"
	codeUnavailable       = "temporarily_unavailable"
	codeInvalidDPoPProof  = "invalid_dpop_proof"
	codeUseDPoPNonce      = "use_dpop_nonce"
)

// rejections holds one immutable *Error per rejection sentinel, so that the
// rejection path does not allocate.
var rejections = func() map[error]*Error {
	m := make(map[error]*Error)
	for _, k := range []error{
		ErrTokenTooLarge, ErrMalformed, ErrWrongTokenType, ErrUnknownKey, ErrAlgorithm,
		ErrSignature, ErrInvalidClaims, ErrMissingClaim, ErrInvalidJTI, ErrInvalidIssuer,
		ErrInvalidAudience, ErrWrongPurpose, ErrExpired, ErrNotYetValid, ErrIssuedInFuture,
		ErrLifetime, ErrRevoked, ErrReplayed, ErrStateLost, ErrSessionEnded, ErrRefreshReused,
		ErrSuperseded, ErrWrongClient, ErrForeignSession, ErrDPoPRequired, ErrDPoPKeyMismatch,
		ErrNotDPoPBound,
	} {
		m[k] = &Error{Status: http.StatusUnauthorized, Code: codeInvalidToken, Description: k.(*sentinel).msg, kind: k}
	}
	return m
}()

// reject returns the *Error for a rejection sentinel.
func reject(kind error) *Error { return rejections[kind] }

// unavailable wraps a store failure as a 503 error that never reads as a pass.
func unavailable(cause error) *Error {
	kind := ErrStoreUnavailable
	if errors.Is(cause, ErrStoreFull) {
		kind = ErrStoreFull
	}
	return &Error{
		Status:      http.StatusServiceUnavailable,
		Code:        codeUnavailable,
		Description: "token store unavailable",
		kind:        kind,
		cause:       cause,
	}
}
