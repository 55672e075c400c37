// Package jtiguard issues short-lived JWTs and makes stolen, replayed or
// revoked tokens useless.
//
// # Threat model
//
// An attacker can read tokens in transit or at rest on a client (logs, a
// compromised browser extension, a leaked backup), replay them, re-encode
// them, alter them, and sign tokens of their own with any algorithm and any
// embedded key. The attacker cannot read the issuer's private keys or the
// store. jtiguard's answer:
//
//   - Tokens are short-lived (access tokens 5 minutes by default, one hour
//     at most) and identified by a random 128-bit jti.
//   - Verification is strict (RFC 8725): the kid chooses the key, the key
//     pins the algorithm, and nothing in the token can choose a key or an
//     algorithm (alg "none", HMAC with a public key, jwk, jku, x5u, x5c and
//     crit are refused). Encoding is canonical (no padding, no line breaks,
//     no spare bits), claims are strict JSON (no duplicate or case-variant
//     registered claims, numbers as integers), iss, sub, aud, exp, iat and
//     jti are required, exp-iat is capped, the size is capped before any
//     decoding, and every token carries its class in typ: an access token
//     ("at+jwt") never stands in for a one-time token ("once+jwt") or the
//     reverse.
//   - State is keyed on the jti, never on the token text or its signature
//     (which an attacker can re-encode, and for ES256 re-sign as s -> n-s),
//     and held in a Store: a revoked jti is rejected until its token
//     expires, a one-time jti is accepted exactly once, atomically.
//
// # Guarantees
//
//  1. Strict verification, as above; each rejection is an *Error whose
//     reason matches a sentinel (ErrExpired, ErrRevoked, ErrWrongTokenType,
//     ...) and ErrInvalidToken, with HTTP status 401.
//  2. One-time means once: of N concurrent presentations of a one-time
//     token, on one process or across processes sharing a Store, exactly
//     one is accepted.
//  3. Revoked means revoked, on every verifier sharing the Store, from the
//     moment Revoke returns until the token's expiry.
//  4. Fail closed: when the store cannot answer (down, timing out, full, or
//     the request's context is done) verification returns
//     ErrStoreUnavailable with status 503, never a pass. A store that lost
//     its memory (a MemoryStore after a restart, a Redis restarted empty,
//     flushed, or failed over to a replica that lagged) rejects every
//     token issued before the loss (ErrStateLost), without trusting two
//     clocks to agree or one-second timestamps to order events. A
//     revocation is never refused for capacity.
//  5. Rotation: each Sessions.Refresh is one compare-and-set on the
//     session family; presenting a superseded refresh token revokes the
//     family and every access token of it (ErrRefreshReused). A grace
//     window (10 s by default) gives a client that lost a response, or got
//     a 503 and retried, the same successor, so a transient store fault
//     never logs out an honest user; it never extends to older tokens nor
//     across a generation. A token revoked by id mints nothing.
//  6. Across authentication states: Login always starts a new family with
//     a fresh random sid; Renew (MFA step-up, password, role or scope
//     change) moves the family to a new generation and every earlier token
//     is rejected: access tokens with ErrSuperseded, refresh tokens as
//     reuse (ErrRefreshReused, the family revoked); Require checks acr,
//     auth age and scopes, with RFC 9470 challenges. Each class carries only
//     its own claims (a purpose only on one-time and step tokens, a session
//     only on access and refresh tokens).
//  7. Nothing secret in errors, logs, metrics or traces: texts never
//     contain a token; events name the jti, sid and subject.
//
// What replay protection does not cover: a stolen bearer access token is
// usable by the thief until it expires or is revoked. Binding tokens to the
// client's key with DPoP (RFC 9449: DPoPVerifier, TokenEndpoint.DPoP,
// GuardConfig.DPoP, and DPoPTransport for Go clients) is what prevents
// that: a bound token without a fresh proof of its key is refused, and
// each proof is accepted once. Short lifetimes bound the rest.
//
// # Quick start
//
//	key, _ := jtiguard.GenerateKey("2026-11", jtiguard.EdDSA)
//	keys, _ := jtiguard.NewKeySet(key)
//	store, _ := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
//	issuer, _ := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: "https://auth.example.com"})
//	verifier, _ := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
//		Issuer:   "https://auth.example.com",
//		Audience: "https://api.example.com",
//		Store:    store,
//	})
//	defer verifier.Close()
//
//	token, _, _ := issuer.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}})
//	claims, err := verifier.Verify(ctx, token) // claims.Subject == "alice"
//	err = verifier.Revoke(ctx, token)         // rejected from now on, everywhere the store is shared
//
// Keys rotate through the KeySet: Add the next key (it appears in JWKS),
// Rotate to it, and Retire the old one once its tokens have expired.
// Replicas that share a key directory follow it without a restart
// (OpenKeyDir); a verifier of another issuer's tokens follows its JWKS URL
// (NewRemoteKeys). Keys load and save as PEM or JWK (ReadKeyFile,
// WriteKeyFile), named by their RFC 7638 thumbprint.
//
// # Sessions, HTTP and several replicas
//
// Sessions adds login, refresh-token rotation with reuse detection,
// privilege changes (Renew), step tokens and logout on top of the Issuer and
// Verifier. Guard is net/http middleware that rejects by default (bearer
// token from the Authorization header only, or from cookies with a CSRF
// check), and TokenEndpoint, RevocationEndpoint, IntrospectionEndpoint and
// JWKSHandler serve the OAuth endpoints. The MemoryStore protects one
// process; the redisstore module (its own module, so this one never pulls
// go-redis) shares the state among replicas with one round trip per
// verification. A resource server that cannot reach the store follows the
// issuer's JWKS (NewRemoteKeys) and asks its introspection endpoint
// (NewIntrospectionStore). A store implements the contract of the store
// package, and passes the storetest conformance suite.
//
// # Observability
//
// Every event has a stable name (EventKind) and goes to the Logger (the
// security events, such as refresh_reused, replay_refused,
// store_unavailable and state_lost, at Warn; the audit events, login,
// refresh, renew, logout, logout_all, revoke and session_ended, at Info)
// and to OnEvent. An Observer (VerifierConfig.Observer) also receives
// each verification's outcome as a fixed Reason, each store call's latency
// and error, and each key set fetch; without one, the warm path pays one
// branch per hook. The jtiprom (Prometheus) and jtiotel (OpenTelemetry)
// modules make Observers, so this module depends on neither.
// docs/observability.md has the table of events, the metric and span
// names, and the measured cost.
package jtiguard
