package jtiguard

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// Verification limits.
const (
	// DefaultMaxTokenSize caps the token length unless configured (8 KiB).
	DefaultMaxTokenSize = 8 << 10
	// DefaultLeeway is the clock-skew allowance on iat and nbf.
	DefaultLeeway = 5 * time.Second
	// MaxLeeway is the largest clock-skew allowance accepted.
	MaxLeeway = 30 * time.Second
	// DefaultCacheSize is the number of verified tokens cached.
	DefaultCacheSize = 10_000
)

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Issuer is the only accepted iss. Required.
	Issuer string
	// Audience is this resource server's identifier; a token is accepted
	// only if its aud contains it. Required.
	Audience string
	// Store holds revoked and used jti values. Default: a new MemoryStore,
	// which protects one process only; share one Store (or use Redis) when
	// several verifiers must agree.
	Store store.Store
	// Leeway allows for clock skew on iat and nbf (never on exp): default
	// 5s, at most 30s.
	Leeway time.Duration
	// MaxLifetime caps exp-iat of accepted tokens: default and maximum
	// MaxTTL (one hour).
	MaxLifetime time.Duration
	// MaxTokenSize caps the token length, checked before any decoding:
	// default 8 KiB.
	MaxTokenSize int
	// CacheSize is the number of verified access tokens kept so that a token
	// presented again skips signature verification; default 10,000, and a
	// negative value turns the cache off. Expiry, revocation and every
	// other check still run on each presentation.
	CacheSize int
	// Now is the clock; default the system clock (time.Now, read at the
	// cost of one clock reading, not two).
	Now func() time.Time
	// Logger receives every Event, identified by jti, sid and subject,
	// never by token: the security events (reuse detected, replay refused,
	// store unavailable, state lost, ...) at warning level, the audit
	// events (login, refresh, renew, logout, logout_all, revoke) at info
	// level (see EventKind.Level; give a Logger at Warn to keep only the
	// former). Default slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is called with each Event, security and audit, for
	// alerting and audit trails: switch on its Kind, or compare
	// Kind.Level() with slog.LevelWarn to pick the security events. It
	// runs on the request's goroutine: keep it fast.
	OnEvent func(context.Context, Event)
	// Observer, if set, receives each verification's outcome, each store
	// call's latency and error, and each Event, for metrics and traces
	// (the jtiotel and jtiprom modules make one). Sessions, Guards,
	// endpoints and DPoPVerifiers built on the Verifier report through
	// it. NewVerifier reads its hooks once; a nil hook costs one branch
	// per verification and no clock reading.
	Observer *Observer
	// ACRLevels orders authentication context classes from weakest to
	// strongest (for example "pwd", "mfa", "hwk"), so that a Requirement
	// for one level is met by any level above it. Without it, a required
	// ACR must match exactly.
	ACRLevels []string
}

// Verifier checks tokens strictly (RFC 8725) and then against the Store. It
// is safe for concurrent use. Call Close when done to stop the cache's
// goroutines.
//
// What it checks, in order: size; compact encoding (exactly three canonical
// base64url parts); a protected header of exactly alg, kid and typ, where
// kid chooses the key, the key pins the algorithm and typ must be the
// class the method accepts; the signature; claims as strict JSON (no
// duplicate or case-variant registered names, numbers as integers); iss,
// sub, aud, exp, iat, jti present and valid, exp-iat within MaxLifetime,
// iat and nbf not beyond Leeway in the future; then the Store, in one read:
// revoked, used, its session family ended, revoked for reuse or at another
// generation, or issued before the store's memory begins.
type Verifier struct {
	// leewaySec is the leeway in whole seconds, or -1 if it has a
	// fraction: times adds it to a Unix second without a time.Add.
	leewaySec int64
	clock     *wallClock // for observers' timings, and Now by default
	ownClock  bool       // Now is clock.Now: times reads it without a time.Time
	keys      *KeySet
	cfg       VerifierConfig
	cache     *tokenCache
	log       *slog.Logger
	obs       observerHooks
}

// NewVerifier returns a Verifier for tokens signed by keys.
func NewVerifier(keys *KeySet, cfg VerifierConfig) (*Verifier, error) {
	if keys == nil {
		return nil, fmt.Errorf("%w: a key set is required", ErrConfig)
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, fmt.Errorf("%w: Issuer and Audience are required", ErrConfig)
	}
	clock := newWallClock()
	ownClock := cfg.Now == nil
	if ownClock {
		cfg.Now = clock.Now
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("%w: Leeway must be between 0 and %v", ErrConfig, MaxLeeway)
	}
	switch {
	case cfg.MaxLifetime == 0:
		cfg.MaxLifetime = MaxTTL
	case cfg.MaxLifetime < time.Second || cfg.MaxLifetime > MaxTTL:
		return nil, fmt.Errorf("%w: MaxLifetime must be between 1s and %v", ErrConfig, MaxTTL)
	}
	switch {
	case cfg.MaxTokenSize == 0:
		cfg.MaxTokenSize = DefaultMaxTokenSize
	case cfg.MaxTokenSize < 256:
		return nil, fmt.Errorf("%w: MaxTokenSize below 256 bytes", ErrConfig)
	}
	if cfg.Store == nil {
		s, err := NewMemoryStore(MemoryConfig{Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		cfg.Store = s
	}
	if ms, ok := cfg.Store.(*MemoryStore); ok {
		// One clock: a fake clock given to the Verifier but not to its
		// store would refuse every token as issued before the store.
		if err := sameClock("the MemoryStore's", ms.now, cfg.Now, cfg.Leeway); err != nil {
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	v := &Verifier{keys: keys, cfg: cfg, log: cfg.Logger, obs: hooksOf(cfg.Observer), leewaySec: -1, clock: clock, ownClock: ownClock}
	if cfg.Leeway%time.Second == 0 {
		v.leewaySec = int64(cfg.Leeway / time.Second)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheSize > 0 {
		v.cache = newTokenCache(cfg.CacheSize, keys)
	}
	return v, nil
}

// sameClock refuses two clocks of one deployment that read further apart
// than leeway: the usual cause is a fake clock given to one part and not
// another, which otherwise shows up later as tokens refused for no visible
// reason.
func sameClock(what string, a, b func() time.Time, leeway time.Duration) error {
	if d := a().Sub(b()); d.Abs() > leeway {
		return fmt.Errorf("%w: %s clock reads %v from the Verifier's: give both the same Now", ErrConfig, what, d.Round(time.Second))
	}
	return nil
}

// Close stops the verified-token cache. The Verifier must not be used after.
func (v *Verifier) Close() {
	if v.cache != nil {
		v.cache.close()
	}
}

// Store returns the store the Verifier checks.
func (v *Verifier) Store() store.Store { return v.cfg.Store }

// Pinger is a Store that can tell whether it can answer now, for readiness
// probes. The Redis store is one; the MemoryStore needs none.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Ping reports whether the Verifier's store can answer now: nil, or an
// *Error with status 503 matching ErrStoreUnavailable and the store's
// reason. A store that is not a Pinger is always ready. Serve it on a
// readiness endpoint: a replica whose store cannot answer refuses every
// token, so it should leave the load balancer's rotation.
func (v *Verifier) Ping(ctx context.Context) error {
	p, ok := v.cfg.Store.(Pinger)
	if !ok {
		return nil
	}
	if err := p.Ping(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// Verify checks an access token and returns its claims. A rejected token
// yields an *Error with status 401 that matches ErrInvalidToken and the
// specific reason (ErrExpired, ErrRevoked, ErrSessionEnded, ErrSuperseded,
// ErrRefreshReused, ...); a store that cannot answer yields status 503 and
// ErrStoreUnavailable. Only an access token (typ at+jwt) is ever accepted.
// A token of a session family is accepted only while the family is live
// and at the token's generation. A DPoP-bound token (cnf.jkt) is refused
// with ErrDPoPRequired (RFC 9449 section 7.2): it is worth nothing without
// its key's proof, which DPoPVerifier.Verify checks.
//
// The claims are returned by value, so a caller can change them without
// touching what other requests see; their slices and Extra map are shared
// and must be treated as read-only.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	start := v.verifyStart()
	c, cache, err := v.verified(ctx, token, TypeAccess)
	switch {
	case err != nil:
	case c.JKT != "":
		// Refused before the store is asked: a thief replaying a bound
		// token costs no round trip.
		v.report(ctx, eventFor(EventDPoPBindingRefused, c))
		err = reject(ErrDPoPRequired)
	default:
		err = v.check(ctx, c, token)
	}
	v.verifyDone(ctx, TypeAccess, start, cache, err)
	if err != nil {
		return Claims{}, err
	}
	return *c, nil
}

// access is Verify for bound tokens too (the caller checks the binding),
// with what the cache did, for a caller that reports the verification.
func (v *Verifier) access(ctx context.Context, token string) (*Claims, CacheResult, error) {
	c, cache, err := v.verified(ctx, token, TypeAccess)
	if err != nil {
		return nil, cache, err
	}
	if err := v.check(ctx, c, token); err != nil {
		return nil, cache, err
	}
	return c, cache, nil
}

// check asks the store about the access token whose claims are c.
func (v *Verifier) check(ctx context.Context, c *Claims, token string) error {
	ref := v.ref(c)
	ref.Token = token // for a store that asks the issuer (IntrospectionStore)
	t := v.storeStart()
	st, err := v.cfg.Store.Check(ctx, ref)
	v.storeDone(ctx, StoreCheck, t, err)
	return v.settle(ctx, c, st, err)
}

// Consume checks a one-time token issued for purpose and marks it used,
// atomically: of any number of concurrent or later presentations of one
// token, on this process or on any sharing the Store, exactly one succeeds;
// the others get ErrReplayed. Only a one-time token (typ once+jwt) is ever
// accepted.
//
// Use is at most once: a call that fails with ErrStoreUnavailable may have
// used the token (its answer was lost), and a retry then gets ErrReplayed.
// An action that must survive that should record the token's jti with its
// effect, atomically, and answer a retry from the record.
func (v *Verifier) Consume(ctx context.Context, token, purpose string) (Claims, error) {
	return v.consume(ctx, token, TypeOneTime, purpose)
}

// consume is Consume for the single-use classes: one-time and step tokens.
func (v *Verifier) consume(ctx context.Context, token string, class TokenType, purpose string) (Claims, error) {
	start := v.verifyStart()
	c, cache, err := v.verified(ctx, token, class)
	if err == nil {
		err = v.use(ctx, c, purpose)
	}
	v.verifyDone(ctx, class, start, cache, err)
	if err != nil {
		return Claims{}, err
	}
	return *c, nil
}

// use consumes the single-use token whose verified claims are c.
func (v *Verifier) use(ctx context.Context, c *Claims, purpose string) error {
	if c.Purpose == "" || c.Purpose != purpose {
		return reject(ErrWrongPurpose)
	}
	nonce := rand.Uint64() | 1 // never 0, which means "no nonce"
	t := v.storeStart()
	st, err := v.cfg.Store.Consume(ctx, v.ref(c), nonce)
	v.storeDone(ctx, StoreConsume, t, err)
	if err == nil && st == store.Used {
		v.report(ctx, eventFor(EventReplayRefused, c))
	}
	return v.settle(ctx, c, st, err)
}

// statusErrs maps what a store reports to the rejection it causes.
var statusErrs = map[store.Status]error{
	store.Revoked:    ErrRevoked,
	store.Used:       ErrReplayed,
	store.Lost:       ErrStateLost,
	store.Ended:      ErrSessionEnded,
	store.Reused:     ErrRefreshReused,
	store.Superseded: ErrSuperseded,
	store.Foreign:    ErrForeignSession,
}

// settle turns the store's answer about c into the error, if any: nil only
// for Live, and never a pass on a store error or on a status it does not
// know.
func (v *Verifier) settle(ctx context.Context, c *Claims, st store.Status, err error) error {
	switch {
	case err != nil:
		e := eventFor(EventStoreUnavailable, c)
		e.Err = err
		v.report(ctx, e)
		return unavailable(err)
	case st == store.Live:
		return nil
	case st == store.Lost:
		v.report(ctx, eventFor(EventStateLost, c))
	}
	if kind, ok := statusErrs[st]; ok {
		return reject(kind)
	}
	return reject(ErrStateLost)
}

// ref names c to the store, keeping state until no verifier clock within
// the leeway could still accept the token.
func (v *Verifier) ref(c *Claims) store.TokenRef {
	keep := c.keep
	if keep.IsZero() {
		keep = c.ExpiresAt.Add(v.cfg.Leeway)
	}
	return store.TokenRef{ID: c.ID, Subject: c.Subject, IssuedAt: c.IssuedAt, ExpiresAt: keep, Session: c.sid, Generation: c.Generation}
}

// verified returns the claims of a token of class want whose signature and
// claims hold now, and what the cache did. The returned claims may be
// shared with the cache.
func (v *Verifier) verified(ctx context.Context, token string, want TokenType) (*Claims, CacheResult, error) {
	if len(token) > v.cfg.MaxTokenSize {
		return nil, CacheNone, reject(ErrTokenTooLarge)
	}
	now, soon := v.times()
	// Only access tokens are presented repeatedly; the other classes are
	// used once, so caching them would only cost.
	cache := v.cache
	if want != TypeAccess {
		cache = nil
	}
	result := CacheNone
	if cache != nil {
		if c := cache.get(token, want); c != nil {
			if err := v.checkTimes(c, now, soon); err != nil {
				return nil, CacheHit, reject(err)
			}
			return c, CacheHit, nil
		}
		result = CacheMiss
	}
	c, key, err := v.parse(ctx, token, want)
	if err == nil {
		err = v.checkClaims(c)
	}
	if err == nil {
		err = v.checkTimes(c, now, soon)
	}
	if err != nil {
		return nil, result, reject(err)
	}
	if cache != nil {
		c.keep = c.ExpiresAt.Add(v.cfg.Leeway) // once, not on every hit
	}
	cache.put(token, c, key)
	return c, result, nil
}

// parse decodes and authenticates a token of class want (any class when
// want is 0); nothing of the claims is read before the signature holds.
func (v *Verifier) parse(ctx context.Context, token string, want TokenType) (*Claims, *Key, error) {
	j, err := parseJWS(token)
	if err != nil {
		return nil, nil, err
	}
	h, err := parseHeader(j.header)
	if err != nil {
		return nil, nil, err
	}
	if h.typ == 0 || (want != 0 && h.typ != want) {
		return nil, nil, ErrWrongTokenType
	}
	// A kid the set lacks may make a RemoteKeys fetch its document again,
	// waiting at most a second.
	key, ok := v.keys.lookup(ctx, h.kid)
	if !ok {
		return nil, nil, ErrUnknownKey
	}
	if err := authenticate(j, h, key); err != nil {
		return nil, nil, err
	}
	c := &Claims{Type: h.typ, KeyID: h.kid}
	seen, err := parseClaims(j.payload, c)
	if err != nil {
		return nil, nil, err
	}
	const required = cIss | cSub | cAud | cExp | cIat | cJti
	if seen&required != required || (seen&cSid != 0) != (seen&cGen != 0) {
		return nil, nil, ErrMissingClaim
	}
	if err := classClaims(c.Type, seen); err != nil {
		return nil, nil, err
	}
	return c, key, nil
}

// classClaims refuses claims that do not belong to a token of class t, so
// that one class's claims re-signed under another typ are not accepted: a
// purpose only on the single-use classes (and there required), a session
// and a DPoP binding (cnf) only on access and refresh tokens (a session
// required on refresh tokens).
func classClaims(t TokenType, seen int) error {
	singleUse := t == TypeOneTime || t == TypeStep
	switch {
	case singleUse && seen&cPurpose == 0, t == TypeRefresh && seen&cSid == 0:
		return ErrMissingClaim
	case !singleUse && seen&cPurpose != 0, singleUse && seen&(cSid|cCnf) != 0:
		return ErrInvalidClaims
	}
	return nil
}

// audience is what aud must contain for class t: the resource server for
// access and one-time tokens, the issuer itself for refresh and step tokens.
func (v *Verifier) audience(t TokenType) string {
	if t == TypeRefresh || t == TypeStep {
		return v.cfg.Issuer
	}
	return v.cfg.Audience
}

// maxLifetime caps exp-iat for class t.
func (v *Verifier) maxLifetime(t TokenType) time.Duration {
	if t == TypeRefresh {
		return MaxSessionLifetime
	}
	return v.cfg.MaxLifetime
}

// checkClaims checks what does not change with time.
func (v *Verifier) checkClaims(c *Claims) error {
	if err := v.checkIssued(c); err != nil {
		return err
	}
	if !slices.Contains(c.Audience, v.audience(c.Type)) {
		return ErrInvalidAudience
	}
	return nil
}

// checkIssued checks what does not change with time, but the audience:
// that the token is one this Verifier's issuer minted, whichever resource
// server it is for.
func (v *Verifier) checkIssued(c *Claims) error {
	if c.Issuer != v.cfg.Issuer {
		return ErrInvalidIssuer
	}
	if c.Subject == "" {
		return ErrMissingClaim
	}
	if life := c.ExpiresAt.Sub(c.IssuedAt); life <= 0 || life > v.maxLifetime(c.Type) {
		return ErrLifetime
	}
	return nil
}

// checkTimes checks exp against now and iat and nbf against soon, now
// plus the leeway (see times). exp gets no leeway: the
// store forgets a revoked token Leeway after exp, and a token must be dead
// on its own by then.
//
// It compares Unix seconds: the claims' times are whole seconds, so now is
// at or past exp exactly when its whole second is, and iat or nbf is
// beyond now plus the leeway exactly when it is beyond the latest whole
// second now plus the leeway reaches (the leeway's fraction rounded down).
func (v *Verifier) checkTimes(c *Claims, now, soon int64) error {
	if now >= c.ExpiresAt.Unix() {
		return ErrExpired
	}
	if c.IssuedAt.Unix() > soon {
		return ErrIssuedInFuture
	}
	if c.NotBefore.Unix() > soon { // a zero NotBefore is long past
		return ErrNotYetValid
	}
	return nil
}

// times returns the current Unix second and the last second an iat or
// nbf may name (now plus the leeway). With the Verifier's own clock and a
// leeway of whole seconds, that is one clock reading and no time.Time.
func (v *Verifier) times() (now, soon int64) {
	if v.ownClock && v.leewaySec >= 0 {
		now = v.clock.unix()
		return now, now + v.leewaySec
	}
	t := v.cfg.Now()
	return t.Unix(), t.Add(v.cfg.Leeway).Unix()
}
