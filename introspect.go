package jtiguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/dgraph-io/ristretto/v2"
)

// RFC 7662 token introspection, both ends: the Verifier's side of
// IntrospectionEndpoint (http.go), and IntrospectionStore, the state source
// of resource servers that cannot reach the issuer's store.

// active returns the claims of an access token that introspection calls
// active: verified as Verify does (signature, class, issuer, lifetime, exp,
// iat, nbf) except for the audience, which the endpoint reports for the
// asking resource server to check. The store is not read here.
func (v *Verifier) active(ctx context.Context, token string) (*Claims, error) {
	c, err := v.authentic(ctx, token, TypeAccess)
	if err == nil {
		now, soon := v.times()
		if err := v.checkTimes(c, now, soon); err != nil {
			return nil, reject(err)
		}
	}
	return c, err
}

// introspect answers an introspection of token: its claims when it is
// active, an *Error matching ErrInvalidToken when it is not, or the 503
// of a store that cannot answer.
func (v *Verifier) introspect(ctx context.Context, token string) (*Claims, error) {
	start := v.verifyStart()
	c, err := v.active(ctx, token)
	if err == nil {
		t := v.storeStart()
		st, serr := v.cfg.Store.Check(ctx, v.ref(c))
		v.storeDone(ctx, StoreCheck, t, serr)
		err = v.settle(ctx, c, st, serr)
	}
	// The cache is not asked: introspection reads tokens of any audience.
	v.verifyDone(ctx, TypeAccess, start, CacheNone, err)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// The bounds of an IntrospectionStore, documented on the type.
const (
	introspectDefaultTTL = 5 * time.Second
	introspectMaxTTL     = time.Minute
	introspectMaxSize    = 64 << 10 // bytes of one answer
	introspectTimeout    = 5 * time.Second
	introspectCacheSize  = 10_000
)

// IntrospectionConfig configures NewIntrospectionStore.
type IntrospectionConfig struct {
	// ClientID and ClientSecret authenticate the resource server to the
	// endpoint with HTTP Basic (RFC 6749 section 2.3.1: each is
	// form-urlencoded first). Required: RFC 7662 section 2.1 requires the
	// caller to be authorized, so that the endpoint is no oracle for
	// whoever found a token.
	ClientID     string
	ClientSecret string
	// Client makes the requests: give one with your proxy, TLS roots or
	// instrumentation. Default: a client of its own with a 5 s timeout
	// (never http.DefaultClient, which has none). Whatever the client's
	// timeout, a request is abandoned after 5 s, or at the verification's
	// own deadline if sooner. The client is copied, and the copy follows
	// no redirect: a 307 would resend the token to wherever it points.
	Client *http.Client
	// CacheTTL is how long an "active" answer is reused, and so the
	// longest a token revoked on the issuer is still accepted here (see
	// IntrospectionStore). Default 5 s, at most 60 s, and never past the
	// token's exp; negative: an "active" answer is never reused, and every
	// verification of a live token asks ("inactive" answers are still
	// kept).
	CacheTTL time.Duration
	// CacheSize bounds the answers kept, "active" and "inactive" together:
	// default 10,000; negative turns the cache off, and every verification
	// asks.
	CacheSize int
}

// IntrospectionStore is a Store that asks the issuer's token introspection
// endpoint (RFC 7662, such as IntrospectionEndpoint) about each token, for
// resource servers that verify the issuer's tokens (with NewRemoteKeys) but
// cannot reach its store. Give it to NewVerifier as its Store; the
// Verifier still checks signature, issuer, audience and times itself, and
// asks the endpoint only about tokens that pass. Safe for concurrent use;
// Close it after the Verifier.
//
// What it answers: Check posts the token (TokenRef.Token, which Verify
// sets) with token_type_hint=access_token and reads the answer strictly: a
// 200 with Content-Type application/json, at most 64 KiB, holding one JSON
// object with exactly one boolean "active" (no member whose name is a case
// variant of it), and, if the answer is active and names a jti, the
// token's own jti. "active": true is Live; "active": false is Revoked, and
// the Verifier answers ErrRevoked: RFC 7662 gives no reason, and whatever
// it is (revoked, used, session ended or superseded, expired on the
// issuer's clock) the issuer refuses the token. Anything else (the
// endpoint unreachable, timing out, another status such as 401 for wrong
// credentials, a redirect, a malformed answer) is an error: the Verifier
// answers ErrStoreUnavailable (503), never a pass.
//
// What it caches, keyed on the jti (never on the token text), in a
// size-bounded ristretto cache that may drop any entry (a dropped entry
// costs one more request):
//
//   - an "active" answer for CacheTTL (default 5 s, at most 60 s) counted
//     from before the request was sent, and never past the token's exp.
//     The bound: a token revoked on the issuer at time R (when its Revoke
//     returned) is refused by every verification that starts at R +
//     CacheTTL or later, on this resource server's clock; one that starts
//     earlier may still be accepted from an answer given before R. A
//     negative CacheTTL makes every verification ask.
//   - an "inactive" answer until the token's exp (plus the Verifier's
//     leeway), after which the Verifier refuses the token on its own: a
//     token the issuer refused never comes back to life. (The one
//     exception is a token the issuer saw issued in the future, beyond its
//     leeway: issuer replicas whose clocks differ by more than that. It
//     stays refused here until its exp.)
//
// While the endpoint cannot be reached, answers already cached stand
// (active ones for at most CacheTTL) and every other verification fails
// with ErrStoreUnavailable. Concurrent first presentations of one token
// each ask the endpoint.
//
// What it does not do: Consume and Revoke return an error matching
// ErrConfig (the Verifier wraps it in ErrStoreUnavailable): a resource
// server can neither use up a one-time token nor revoke through
// introspection. Consume one-time tokens where the issuer's store is, and
// revoke with the issuer (its RevocationEndpoint). It holds no session
// families (it is no SessionStore), so Sessions refuses it.
type IntrospectionStore struct {
	url    string
	where  string // url without credentials, for messages
	client *http.Client
	id     string // client credentials, form-urlencoded
	secret string
	ttl    time.Duration // for active answers; <= 0: not cached

	mu    sync.RWMutex // Close must not run beside the cache's Get or Set
	cache *ristretto.Cache[string, *cachedAnswer]
}

// cachedAnswer is one answer of the endpoint, as the cache keeps it.
type cachedAnswer struct {
	id    JTI // compared on a hit: the cache hashes keys
	st    store.Status
	until time.Time
}

// NewIntrospectionStore returns a Store that asks the introspection endpoint
// at rawURL (see IntrospectionStore). The URL must be https, or http to a
// loopback address (localhost, 127.0.0.1, ::1): the token and the client
// secret go in the request, and an answer in the clear is one anyone on the
// path can forge.
func NewIntrospectionStore(rawURL string, cfg IntrospectionConfig) (*IntrospectionStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection URL: %v", ErrConfig, err)
	}
	if !secureURL(u) {
		return nil, fmt.Errorf("%w: introspection URL %q: want an absolute https URL (or http to a loopback address)", ErrConfig, u.Redacted())
	}
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, fmt.Errorf("%w: introspection needs the client's ClientID and ClientSecret", ErrConfig)
	}
	switch {
	case cfg.CacheTTL == 0:
		cfg.CacheTTL = introspectDefaultTTL
	case cfg.CacheTTL > introspectMaxTTL:
		return nil, fmt.Errorf("%w: CacheTTL above %v", ErrConfig, introspectMaxTTL)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = introspectCacheSize
	}
	client := &http.Client{Timeout: introspectTimeout}
	if cfg.Client != nil {
		c := *cfg.Client // a copy, to refuse redirects
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	s := &IntrospectionStore{
		url: u.String(), where: u.Redacted(), client: client,
		id: url.QueryEscape(cfg.ClientID), secret: url.QueryEscape(cfg.ClientSecret),
		ttl: cfg.CacheTTL,
	}
	if cfg.CacheSize > 0 {
		s.cache, err = ristretto.NewCache(&ristretto.Config[string, *cachedAnswer]{
			NumCounters:        int64(cfg.CacheSize) * 10,
			MaxCost:            int64(cfg.CacheSize),
			BufferItems:        64,
			IgnoreInternalCost: true, // cost is one per answer
		})
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Close stops the cache's goroutines and empties it; later checks ask the
// endpoint every time.
func (s *IntrospectionStore) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cache != nil {
		s.cache.Close()
		s.cache = nil
	}
}

// errNoIntrospectedState is what Consume and Revoke return.
var errNoIntrospectedState = fmt.Errorf("%w: an IntrospectionStore only checks access tokens: consume one-time tokens with the issuer's store, revoke with the issuer", ErrConfig)

// Check asks the endpoint about t.Token, or answers from the cache (see
// IntrospectionStore). Without t.Token (a TokenRef not from Verify) it
// returns an error matching ErrConfig.
func (s *IntrospectionStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	if t.Token == "" {
		return store.Lost, fmt.Errorf("%w: an IntrospectionStore checks only tokens the Verifier verifies (TokenRef.Token is empty)", ErrConfig)
	}
	start := time.Now() // before the request: the answer is at least this recent
	if st, ok := s.cached(t.ID, start); ok {
		return st, nil
	}
	active, err := s.ask(ctx, t.Token, t.ID)
	switch {
	case err != nil:
		return store.Lost, err
	case !active:
		s.keep(t.ID, store.Revoked, t.ExpiresAt)
		return store.Revoked, nil
	case s.ttl > 0:
		s.keep(t.ID, store.Live, minTime(start.Add(s.ttl), t.ExpiresAt))
	}
	return store.Live, nil
}

// Consume returns an error matching ErrConfig: a one-time token is used
// up where the issuer's store is.
func (s *IntrospectionStore) Consume(context.Context, store.TokenRef, uint64) (store.Status, error) {
	return store.Lost, errNoIntrospectedState
}

// Revoke returns an error matching ErrConfig: revoke with the issuer (its
// RevocationEndpoint), whose store this one only asks about.
func (s *IntrospectionStore) Revoke(context.Context, store.TokenRef) error {
	return errNoIntrospectedState
}

// Ping asks the endpoint about a string that is no token, for readiness
// probes (Verifier.Ping): nil when it answers {"active": false} as
// IntrospectionStore reads answers, with these credentials.
func (s *IntrospectionStore) Ping(ctx context.Context) error {
	active, err := s.ask(ctx, "ping", JTI{})
	if err == nil && active {
		err = s.errf("a string that is no token is called active")
	}
	return err
}

func (s *IntrospectionStore) cached(id JTI, now time.Time) (store.Status, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cache == nil {
		return 0, false
	}
	e, ok := s.cache.Get(string(id[:]))
	if !ok || e.id != id || !now.Before(e.until) {
		return 0, false
	}
	return e.st, true
}

// keep caches st for id until until, if that is still ahead. It waits for
// the cache to take the entry (ristretto's Set is buffered), so that the
// next presentation finds it: a wait only after a request, which costs far
// more.
func (s *IntrospectionStore) keep(id JTI, st store.Status, until time.Time) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ttl := time.Until(until)
	if s.cache == nil || ttl <= 0 {
		return
	}
	if s.cache.SetWithTTL(string(id[:]), &cachedAnswer{id: id, st: st, until: until}, 1, ttl) {
		s.cache.Wait()
	}
}

// errf prefixes an error with the endpoint, without credentials.
func (s *IntrospectionStore) errf(format string, args ...any) error {
	return fmt.Errorf("jtiguard: introspection %s: "+format, append([]any{s.where}, args...)...)
}

// ask posts token to the endpoint and reads whether it is active; id, if
// not zero, is the token's jti, which an active answer must not
// contradict.
func (s *IntrospectionStore) ask(ctx context.Context, token string, id JTI) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, introspectTimeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, strings.NewReader(form.Encode()))
	if err != nil {
		return false, s.errf("%w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(s.id, s.secret)
	resp, err := s.client.Do(req)
	if err != nil {
		// The client's *url.Error names the URL without its password; the
		// token is in the body, never in an error.
		return false, fmt.Errorf("jtiguard: introspection: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, s.errf("status %d, want 200", resp.StatusCode)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return false, s.errf("Content-Type %q, want application/json", ct)
	}
	if resp.ContentLength > introspectMaxSize {
		return false, s.errf("%d bytes, more than %d KiB", resp.ContentLength, introspectMaxSize>>10)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, introspectMaxSize+1))
	if err != nil {
		return false, s.errf("%w", err)
	}
	if len(body) > introspectMaxSize {
		return false, s.errf("more than %d KiB", introspectMaxSize>>10)
	}
	active, err := parseIntrospection(string(body), id)
	if err != nil {
		return false, s.errf("%w", err)
	}
	return active, nil
}

var (
	errIntrospectionJSON  = errors.New("malformed answer: want a JSON object with one boolean \"active\"")
	errIntrospectionOther = errors.New("the answer is about another token (its jti differs)")
)

// parseIntrospection reads an RFC 7662 section 2.2 answer strictly: one
// JSON object with exactly one "active" member, true or false, and no
// member whose name differs from it only in case; other members must be
// valid JSON and are ignored, but for a "jti", which an active answer
// about id must not contradict.
func parseIntrospection(body string, id JTI) (bool, error) {
	r := jsonReader{s: body}
	if r.open() != nil {
		return false, errIntrospectionJSON
	}
	var active, seen, seenJTI bool
	var jti string
	for {
		name, ok, err := r.next()
		if err != nil {
			return false, errIntrospectionJSON
		}
		if !ok {
			break
		}
		switch {
		case name == "active" && !seen:
			seen = true
			switch r.peek() {
			case 't':
				active, err = true, r.literal("true")
			case 'f':
				err = r.literal("false")
			default:
				err = errJSON
			}
		case strings.EqualFold(name, "active"):
			err = errJSON // a second one, or a case variant
		case name == "jti":
			if seenJTI {
				return false, errIntrospectionJSON
			}
			seenJTI = true
			jti, err = r.str()
		default:
			_, err = r.raw()
		}
		if err != nil {
			return false, errIntrospectionJSON
		}
	}
	if r.end() != nil || !seen {
		return false, errIntrospectionJSON
	}
	if active && seenJTI && !id.IsZero() && jti != id.String() {
		return false, errIntrospectionOther
	}
	return active, nil
}
