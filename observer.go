package jtiguard

import (
	"context"
	"errors"
	"time"
)

// Observer receives what a Verifier (and the Sessions, Guard, endpoints
// and DPoPVerifier built on it) and a RemoteKeys do, for metrics, traces
// and audit: each verification's outcome, each store call's latency and
// error, each event, each key set fetch. It is a struct of optional hooks
// in the manner of net/http/httptrace.ClientTrace, not an interface: a nil
// field costs one predictable branch and no clock reading, and a field
// added later breaks no adapter. The jtiotel (OpenTelemetry) and jtiprom
// (Prometheus) modules return ready-made Observers, so this module depends
// on neither.
//
// Every hook runs on the goroutine of the call it reports (a request's,
// or RemoteKeys' fetching goroutine), after the fact, with that call's
// context, so a hook can read the request's trace span from ctx; it must
// be safe for concurrent use, should be fast, and must not call back into
// the Verifier. A hook never sees a token: only jti, sid, subject, client
// and the low-cardinality Reason of an outcome.
//
// Hooks report after the fact, with a start time and a duration, rather
// than around the call: that keeps the nil case free of clock readings and
// context allocations on the warm path. A tracing adapter therefore makes
// each span when its hook runs, with the recorded start (the store calls
// of a verification become siblings of its span, under the request's,
// not its children).
type Observer struct {
	// Verified is called once per verification of a presented token:
	// Verifier.Verify and Consume (and the Guard's and the endpoints'
	// calls of them), DPoPVerifier.Verify, Sessions.Refresh, Renew and
	// CompleteStep, and each introspection the IntrospectionEndpoint
	// answers. The outcome covers the whole verification, the store's
	// answer (and for a refresh, the rotation) included.
	Verified func(context.Context, Verification)
	// Store is called after each call the library makes to its store.
	Store func(context.Context, StoreCall)
	// Event is called with each Event, after it is logged and passed to
	// VerifierConfig.OnEvent (or RemoteKeysConfig.OnEvent).
	Event func(context.Context, Event)
	// KeysFetched is called after each fetch of a RemoteKeys' key set,
	// the first one (in NewRemoteKeys) included. Set it on
	// RemoteKeysConfig.Observer; a Verifier never fetches keys.
	KeysFetched func(context.Context, KeysFetch)
}

// JoinObservers returns an Observer that calls each hook of every non-nil
// observer in obs, in order: to feed metrics and traces both. Hooks nil in
// every observer stay nil, and cost nothing.
func JoinObservers(obs ...*Observer) *Observer {
	var j Observer
	for _, o := range obs {
		if o == nil {
			continue
		}
		j.Verified = join(j.Verified, o.Verified)
		j.Store = join(j.Store, o.Store)
		j.Event = join(j.Event, o.Event)
		j.KeysFetched = join(j.KeysFetched, o.KeysFetched)
	}
	return &j
}

func join[T any](a, b func(context.Context, T)) func(context.Context, T) {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func(ctx context.Context, t T) {
		a(ctx, t)
		b(ctx, t)
	}
}

// Verification is the outcome of verifying one presented token.
type Verification struct {
	// Class is the class the verification accepts (TypeAccess for Verify,
	// DPoPVerifier.Verify, Renew and introspection; TypeOneTime for
	// Consume; TypeRefresh for Refresh; TypeStep for CompleteStep),
	// whatever the token presented claims to be.
	Class TokenType
	// Reason is Reason(Err): "ok", or the sentinel that refused the token.
	Reason string
	// Err is the error returned, nil on success. It never holds a token.
	Err error
	// Cache says whether the verified-token cache answered (CacheHit),
	// was asked in vain (CacheMiss) or was not asked (CacheNone: off, or
	// a single-use class, which is never cached).
	Cache CacheResult
	// Start is when the verification began; Duration how long it took,
	// by the monotonic clock, not VerifierConfig.Now. Start's wall time is
	// the process's start plus the monotonic time elapsed since (one clock
	// reading instead of two): it ignores steps of the wall clock since
	// then.
	Start    time.Time
	Duration time.Duration
}

// CacheResult is what the verified-token cache did for one verification.
type CacheResult uint8

// The cache results.
const (
	CacheNone CacheResult = iota // not asked: the cache is off, or the class is never cached
	CacheMiss                    // asked, and the token's signature was checked
	CacheHit                     // the token was found: no decoding, no signature check
)

var cacheNames = [...]string{CacheNone: "none", CacheMiss: "miss", CacheHit: "hit"}

// String returns "none", "miss" or "hit".
func (c CacheResult) String() string {
	if int(c) < len(cacheNames) {
		return cacheNames[c]
	}
	return "none"
}

// Label returns the class as a metric label or span attribute: "access",
// "one_time", "refresh" or "step" ("invalid" for anything else). Unlike
// String (the header's typ), it has no '+'.
func (t TokenType) Label() string {
	switch t {
	case TypeAccess:
		return "access"
	case TypeOneTime:
		return "one_time"
	case TypeRefresh:
		return "refresh"
	case TypeStep:
		return "step"
	}
	return "invalid"
}

// StoreOp names a store operation in a StoreCall. The names are stable.
type StoreOp string

// The store operations, one per method of the store contract (package
// store).
const (
	StoreCheck        StoreOp = "check"         // Store.Check
	StoreConsume      StoreOp = "consume"       // Store.Consume
	StoreCheckConsume StoreOp = "check_consume" // ProofStore.CheckAndConsume
	StoreRevoke       StoreOp = "revoke"        // Store.Revoke
	StoreBegin        StoreOp = "begin"         // SessionStore.Begin
	StoreRotate       StoreOp = "rotate"        // SessionStore.Rotate
	StoreEnd          StoreOp = "end"           // SessionStore.End
	StoreEndSubject   StoreOp = "end_subject"   // SessionStore.EndSubject
	StoreList         StoreOp = "list"          // DeviceStore.List
	StoreEndOthers    StoreOp = "end_others"    // DeviceStore.EndOthers
)

// StoreCall is one call to the store. Err is the store's error (an
// infrastructure failure: unreachable, timed out, full), nil when it
// answered, whatever it answered: a revoked or used token is a successful
// call, and shows in the Verification's Reason.
type StoreCall struct {
	Op StoreOp
	// Start and Duration are measured as Verification's are.
	Start    time.Time
	Duration time.Duration
	Err      error
}

// KeysFetch is one fetch of a RemoteKeys' key set.
type KeysFetch struct {
	// URL is the key set's URL, without credentials.
	URL      string
	Start    time.Time
	Duration time.Duration
	// Keys is the number of keys in the set after the fetch: the new
	// document's on success, the last good one's on failure.
	Keys int
	// Changed is true when the set changed (a key added, retired or
	// replaced).
	Changed bool
	// Err says why the fetch failed or the document was refused; nil on
	// success. The set then keeps its last good keys.
	Err error
}

// The reasons Reason returns besides the sentinels' own.
const (
	ReasonOK    = "ok"    // no error
	ReasonOther = "other" // an error of none of the kinds below (a context's, a signing failure)
)

// reasons names every sentinel, most specific first: ErrStoreFull matches
// ErrStoreUnavailable, ErrDPoPReplayed matches ErrInvalidDPoPProof, and
// each proof rejection matches ErrInvalidDPoPProof or ErrUseDPoPNonce.
var reasons = [...]struct {
	err    error
	reason string
}{
	{ErrTokenTooLarge, "token_too_large"},
	{ErrMalformed, "malformed"},
	{ErrWrongTokenType, "wrong_token_type"},
	{ErrUnknownKey, "unknown_key"},
	{ErrAlgorithm, "algorithm"},
	{ErrSignature, "signature"},
	{ErrInvalidClaims, "invalid_claims"},
	{ErrMissingClaim, "missing_claim"},
	{ErrInvalidJTI, "invalid_jti"},
	{ErrInvalidIssuer, "invalid_issuer"},
	{ErrInvalidAudience, "invalid_audience"},
	{ErrWrongPurpose, "wrong_purpose"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrIssuedInFuture, "issued_in_future"},
	{ErrLifetime, "lifetime"},
	{ErrRevoked, "revoked"},
	{ErrReplayed, "replayed"},
	{ErrStateLost, "state_lost"},
	{ErrSessionEnded, "session_ended"},
	{ErrRefreshReused, "refresh_reused"},
	{ErrSuperseded, "superseded"},
	{ErrWrongClient, "wrong_client"},
	{ErrForeignSession, "foreign_session"},
	{ErrDPoPRequired, "dpop_required"},
	{ErrDPoPKeyMismatch, "dpop_key_mismatch"},
	{ErrNotDPoPBound, "not_dpop_bound"},
	{ErrDPoPReplayed, "dpop_replayed"},
	{ErrInvalidDPoPProof, "invalid_dpop_proof"},
	{ErrUseDPoPNonce, "use_dpop_nonce"},
	{ErrInsufficientAuth, "insufficient_user_authentication"},
	{ErrInsufficientScope, "insufficient_scope"},
	{ErrStoreFull, "store_full"},
	{ErrStoreUnavailable, "store_unavailable"},
	{ErrInvalidRequest, "invalid_request"},
	{ErrInvalidClient, "invalid_client"},
	{ErrInvalidGrant, "invalid_grant"},
	{ErrUnauthorizedClient, "unauthorized_client"},
	{ErrUnsupportedGrantType, "unsupported_grant_type"},
	{ErrInvalidScope, "invalid_scope"},
	{ErrInvalidToken, "invalid_token"}, // a rejection of none of the above
	{ErrConfig, "config"},
	{ErrInvalidKey, "invalid_key"},
}

// reasonOf maps each sentinel to its reason, for the *Error fast path.
var reasonOf = func() map[error]string {
	m := make(map[error]string, len(reasons))
	for _, r := range reasons {
		m[r.err] = r.reason
	}
	return m
}()

// Reason returns a short, stable name for why err refused a token, fit
// for a metric label: "ok" for nil; for an error matching a sentinel, the
// sentinel's name in snake case without its prefix ("expired" for
// ErrExpired, "revoked", "refresh_reused", "state_lost", ...; see Reasons
// for the list), the most specific one when several match (a full store
// is "store_full", though it matches ErrStoreUnavailable too; every 503 is
// "store_unavailable" or "store_full"); "other" for anything else. It
// never returns text taken from err, so its values are a fixed set.
func Reason(err error) string {
	if err == nil {
		return ReasonOK
	}
	if e, ok := err.(*Error); ok {
		if r, ok := reasonOf[e.kind]; ok {
			return r
		}
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ReasonOther
}

// Reasons returns every value Reason can return, "ok" first and "other"
// last: to create a metric's series up front, or to check a dashboard.
func Reasons() []string {
	out := make([]string, 0, len(reasons)+2)
	out = append(out, ReasonOK)
	for _, r := range reasons {
		out = append(out, r.reason)
	}
	return append(out, ReasonOther)
}

// observerHooks are the hooks of a Verifier's Observer, copied at
// NewVerifier so that each check reads one field.
type observerHooks struct {
	verified func(context.Context, Verification)
	store    func(context.Context, StoreCall)
	event    func(context.Context, Event)
}

func hooksOf(o *Observer) observerHooks {
	if o == nil {
		return observerHooks{}
	}
	return observerHooks{verified: o.Verified, store: o.Store, event: o.Event}
}

// verifyStart returns the start of a verification: a clock reading when
// an observer wants one, the zero time otherwise.
func (v *Verifier) verifyStart() time.Time {
	if v.obs.verified == nil {
		return time.Time{}
	}
	return v.clock.Now()
}

// verifyDone reports a verification that began at start, if an observer
// wants it.
func (v *Verifier) verifyDone(ctx context.Context, class TokenType, start time.Time, cache CacheResult, err error) {
	if v.obs.verified != nil {
		v.emitVerified(ctx, class, start, cache, err)
	}
}

func (v *Verifier) emitVerified(ctx context.Context, class TokenType, start time.Time, cache CacheResult, err error) {
	v.obs.verified(ctx, Verification{Class: class, Reason: Reason(err), Err: err, Cache: cache, Start: start, Duration: time.Since(start)})
}

// storeStart returns the start of a store call: a clock reading when an
// observer wants one, the zero time otherwise.
func (v *Verifier) storeStart() time.Time {
	if v.obs.store == nil {
		return time.Time{}
	}
	return v.clock.Now()
}

// storeDone reports a store call op that began at start, if an observer
// wants it.
func (v *Verifier) storeDone(ctx context.Context, op StoreOp, start time.Time, err error) {
	if v.obs.store != nil {
		v.obs.store(ctx, StoreCall{Op: op, Start: start, Duration: time.Since(start), Err: err})
	}
}
