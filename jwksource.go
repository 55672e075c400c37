package jtiguard

import (
	"context"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The bounds of a RemoteKeys, documented on the type.
const (
	remoteMaxSize        = 1 << 20 // bytes of one key set document
	remoteFetchTimeout   = 10 * time.Second
	remoteMinRefresh     = time.Minute // floor on max-age; also the retry after a failure
	remoteDefaultRefresh = 5 * time.Minute
	remoteMaxRefresh     = time.Hour
	remoteStaleLimit     = 24 * time.Hour
	remoteKIDInterval    = 10 * time.Second // between two fetches an unknown kid may start
	remoteKIDWait        = time.Second      // the longest a token with an unknown kid waits
)

// RemoteKeysConfig configures NewRemoteKeys.
type RemoteKeysConfig struct {
	// Client makes the requests: give one with your proxy, TLS roots or
	// instrumentation. Default: a client of its own with a 10 s timeout
	// (never http.DefaultClient, which has none). Whatever the client's
	// timeout, a fetch is abandoned after 10 s. The client is copied, and
	// the copy also refuses redirects to URLs NewRemoteKeys would refuse.
	Client *http.Client
	// MaxRefresh is the longest time between two fetches, whatever the
	// document's Cache-Control says: while fetches succeed, the longest a
	// verifier keeps accepting tokens of a key the issuer has withdrawn
	// from its key set. Default one hour; at least one minute.
	MaxRefresh time.Duration
	// StaleLimit is how long the last good keys are still used, once they
	// were due for a refresh, while every fetch fails. Past it they are
	// dropped and every token is refused until a fetch succeeds (see
	// RemoteKeys for why). Default 24 hours.
	StaleLimit time.Duration
	// Logger receives an EventKeysFetchFailed or EventKeysExpired record at
	// warning level for each failed fetch and when keys are dropped, and
	// an info record, with the kids, each time the keys change. Default
	// slog.Default().
	Logger *slog.Logger
	// OnEvent, if set, is called with EventKeysFetchFailed (at each failed
	// fetch after the first, which NewRemoteKeys returns instead) and
	// EventKeysExpired, for alerting. It runs on the fetching goroutine.
	OnEvent func(context.Context, Event)
	// Observer, if set, receives each fetch (KeysFetched: its duration,
	// outcome and key count, the first fetch included) and each Event
	// (Event), for metrics and traces. Its other hooks are not used: give
	// the Verifier its own. NewRemoteKeys reads the hooks once.
	Observer *Observer
}

// RemoteKeys keeps a KeySet equal to an issuer's published JSON Web Key Set
// (RFC 7517), fetched over HTTPS, for resource servers that verify the
// tokens of an authorization server they do not share keys with. Give
// Keys() to NewVerifier. Safe for concurrent use.
//
// Every document passes ParseJWKS's policy, as local keys do: a weak key,
// a private key, two keys with one kid, HMAC secrets beside asymmetric
// keys, or an empty set fail the whole document. So does any response but
// a 200 with Content-Type application/json or application/jwk-set+json
// (an error page, a proxy's login page), any body over 1 MiB, and a
// redirect to http other than loopback. A fetch that fails in any of these ways changes nothing: the set
// keeps its last good keys, and the failure is reported as an
// EventKeysFetchFailed. Keys that did not change between two documents
// stay the same *Key, so the Verifier keeps their cached tokens; a key
// that left the document, or whose kid now names other material, is
// retired as by KeySet.Retire: its tokens, cached ones included, are
// refused from that fetch on.
//
// When it fetches:
//
//   - on a schedule: the document's Cache-Control max-age (less its Age
//     header, as a cache in between reports it) clamped to [1 min,
//     MaxRefresh]; 5 min (or MaxRefresh if lower) without one; no-cache
//     and no-store count as max-age=0. The floor protects the issuer from
//     a document that asks to be refetched at every request. After a
//     failed fetch, it tries again after 1 min.
//   - on a token whose kid the set lacks, so a key the issuer publishes
//     and signs with at once is picked up without waiting: at most one
//     such fetch every 10 s, counted from the start of the last fetch of
//     any kind, and tokens that arrive while a fetch is under way share
//     it. A token with an unknown kid waits for that fetch for at most
//     1 s, then is refused with ErrUnknownKey; when no fetch may start it
//     is refused at once. A flood of tokens with made-up kids therefore
//     costs the issuer at most one request per 10 s per process, and
//     delays each of them by at most 1 s, and never past the request's
//     own deadline.
//
// When the issuer cannot be reached: the last good keys are used until
// StaleLimit (default 24 h) after the time they were due for a refresh;
// then they are dropped, an EventKeysExpired is reported, and every token
// is refused with ErrUnknownKey until a fetch succeeds: this fails
// closed. Keys that could not be refreshed for a day are keys no one can
// vouch for: the issuer may have withdrawn one because it leaked, and a
// verifier that trusted its last copy for as long as it cannot reach the
// issuer would hand whoever can cut that route (DNS, a firewall, an
// outage they cause) a leaked key that never expires. A day rides out an
// ordinary outage of the issuer's key endpoint with people alerted (each
// failed attempt is an event), while no token the Verifier accepts lives
// longer than an hour. A longer StaleLimit trades that safety for
// availability.
//
// What it does not do: it does not send conditional requests (ETag), does
// not read the Expires header, and does not refresh after Close, when the
// set keeps its last keys for good. Changes made to the set with Add,
// Rotate or Retire last until the next document.
type RemoteKeys struct {
	url        string
	where      string // url without credentials, for messages
	client     *http.Client
	maxRefresh time.Duration
	staleLimit time.Duration
	log        *slog.Logger
	onEvent    func(context.Context, Event)
	observe    func(context.Context, Event)
	fetched    func(context.Context, KeysFetch)
	keys       *KeySet

	ctx     context.Context // ends with Close
	cancel  context.CancelFunc
	wake    chan struct{} // a fetch ended: look at the schedule again
	done    chan struct{} // the scheduler returned
	flights sync.WaitGroup

	mu      sync.Mutex // guards what follows, and orders changes to keys
	flight  *flight    // the fetch under way, if any
	started time.Time  // when the last fetch started
	next    time.Time  // when the next scheduled fetch is due
	expires time.Time  // when the last good keys are dropped
	expired bool       // they have been
	lastErr error      // the last fetch's error
	closed  bool
}

// flight is one fetch, which every token waiting for it shares.
type flight struct {
	done chan struct{}
}

// NewRemoteKeys fetches the key set at rawURL and returns a RemoteKeys
// that keeps it up to date until Close (see RemoteKeys). The first fetch
// must succeed, within ctx; ctx bounds that fetch only. The URL must be
// https, or http to a loopback address (localhost, 127.0.0.1, ::1): keys
// fetched in the clear are keys anyone on the path can replace with their
// own.
func NewRemoteKeys(ctx context.Context, rawURL string, cfg RemoteKeysConfig) (*RemoteKeys, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: key set URL: %v", ErrConfig, err)
	}
	if !secureURL(u) {
		return nil, fmt.Errorf("%w: key set URL %q: want an absolute https URL (or http to a loopback address)", ErrConfig, u.Redacted())
	}
	switch {
	case cfg.MaxRefresh == 0:
		cfg.MaxRefresh = remoteMaxRefresh
	case cfg.MaxRefresh < remoteMinRefresh:
		return nil, fmt.Errorf("%w: MaxRefresh below %v", ErrConfig, remoteMinRefresh)
	}
	switch {
	case cfg.StaleLimit == 0:
		cfg.StaleLimit = remoteStaleLimit
	case cfg.StaleLimit < 0:
		return nil, fmt.Errorf("%w: negative StaleLimit", ErrConfig)
	}
	client := &http.Client{Timeout: remoteFetchTimeout}
	if cfg.Client != nil {
		c := *cfg.Client // a copy, to refuse redirects in the clear
		client = &c
	}
	client.CheckRedirect = secureRedirect(client.CheckRedirect)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	keys, err := NewKeySet()
	if err != nil {
		return nil, err
	}
	r := &RemoteKeys{
		url: u.String(), where: u.Redacted(), client: client,
		maxRefresh: cfg.MaxRefresh, staleLimit: cfg.StaleLimit,
		log: cfg.Logger, onEvent: cfg.OnEvent, keys: keys,
		observe: hooksOf(cfg.Observer).event,
		wake:    make(chan struct{}, 1), done: make(chan struct{}),
	}
	if cfg.Observer != nil {
		r.fetched = cfg.Observer.KeysFetched
	}
	r.started = time.Now()
	if err := r.refresh(ctx); err != nil {
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	keys.unknownKID = r.unknownKID
	go r.schedule()
	return r, nil
}

// secureURL reports whether u is absolute and either https or http to a
// loopback address.
func secureURL(u *url.URL) bool {
	if u.Host == "" || u.Opaque != "" {
		return false
	}
	if u.Scheme == "https" {
		return true
	}
	if u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// secureRedirect wraps a client's redirect policy (nil: the default, at
// most 10) so that it also refuses a redirect to a URL secureURL refuses:
// an https URL must not lead to keys fetched in the clear.
func secureRedirect(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if !secureURL(req.URL) {
			return fmt.Errorf("redirect to %q refused: want https (or http to a loopback address)", req.URL.Redacted())
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
}

// Keys returns the set kept equal to the issuer's document: give it to
// NewVerifier. It holds no signer.
func (r *RemoteKeys) Keys() *KeySet { return r.keys }

// Close stops the fetches, ends one under way, and waits for them. The set
// keeps its last keys and is no longer refreshed, nor dropped.
func (r *RemoteKeys) Close() {
	r.mu.Lock()
	first := !r.closed
	r.closed = true
	r.mu.Unlock()
	if first {
		r.cancel()
	}
	<-r.done
	r.flights.Wait()
}

// unknownKID is the set's hook for a kid it lacks: start a fetch if the
// rate allows, or join the one under way, and wait for it a bounded time,
// never past the request's own deadline (ctx).
func (r *RemoteKeys) unknownKID(ctx context.Context, kid string) (*Key, bool) {
	if checkKID(kid) != nil {
		return nil, false // no document can name such a key
	}
	r.mu.Lock()
	f := r.flight
	if f == nil && time.Since(r.started) >= remoteKIDInterval {
		f = r.startLocked()
	}
	r.mu.Unlock()
	if f == nil {
		return nil, false
	}
	t := time.NewTimer(remoteKIDWait)
	select {
	case <-f.done:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	return r.keys.Key(kid)
}

// startLocked starts a fetch, or returns the one under way; nil after
// Close. r.mu must be held.
func (r *RemoteKeys) startLocked() *flight {
	if r.flight != nil || r.closed {
		return r.flight
	}
	f := &flight{done: make(chan struct{})}
	r.flight, r.started = f, time.Now()
	r.flights.Go(func() {
		err := r.refresh(r.ctx)
		r.mu.Lock()
		r.flight = nil
		r.mu.Unlock()
		close(f.done)
		if err != nil && r.ctx.Err() == nil {
			reportEvent(r.ctx, r.log, r.onEvent, r.observe, Event{Kind: EventKeysFetchFailed, Err: err})
		}
		select {
		case r.wake <- struct{}{}:
		default:
		}
	})
	return f
}

// schedule runs the scheduled fetches and drops the keys past the stale
// limit, until Close.
func (r *RemoteKeys) schedule() {
	defer close(r.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for r.ctx.Err() == nil {
		r.mu.Lock()
		now := time.Now()
		dropped, cause := false, r.lastErr
		if !r.expired && !now.Before(r.expires) {
			r.expired = true
			dropped = r.keys.clear()
		}
		var f *flight
		if !now.Before(r.next) {
			f = r.startLocked()
		}
		wait := r.next.Sub(now)
		if !r.expired {
			wait = min(wait, r.expires.Sub(now))
		}
		r.mu.Unlock()
		if dropped {
			reportEvent(r.ctx, r.log, r.onEvent, r.observe, Event{Kind: EventKeysExpired, Err: cause})
		}
		if f != nil {
			select {
			case <-f.done:
				continue
			case <-r.ctx.Done():
				return
			}
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-r.wake:
		case <-r.ctx.Done():
			return
		}
	}
}

// refresh fetches the document and, if it passes, makes the set equal to
// it; either way it sets the schedule.
func (r *RemoteKeys) refresh(ctx context.Context) error {
	start := time.Now()
	keys, interval, err := r.fetch(ctx)
	changed, n, err := r.settle(keys, interval, err)
	if r.fetched != nil {
		r.fetched(ctx, KeysFetch{URL: r.where, Start: start, Duration: time.Since(start), Keys: n, Changed: changed, Err: err})
	}
	return err
}

// settle installs the keys a fetch returned, unless it failed, and sets
// the schedule; it reports whether the set changed and how many keys it
// holds.
func (r *RemoteKeys) settle(keys []*Key, interval time.Duration, err error) (changed bool, n int, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if err == nil {
		changed, err = r.install(keys)
	}
	n = len(r.keys.ring.Load().order)
	r.lastErr = err
	if err != nil {
		r.next = now.Add(remoteMinRefresh)
		return false, n, err
	}
	r.next = now.Add(interval)
	r.expires = r.next.Add(r.staleLimit)
	r.expired = false
	return changed, n, nil
}

// install makes the set equal to keys, keeping the *Key of each key that
// did not change. r.mu must be held: a set being dropped must not be
// refilled halfway.
func (r *RemoteKeys) install(keys []*Key) (changed bool, err error) {
	cur := r.keys.ring.Load()
	for i, k := range keys {
		if old, ok := cur.byKID[k.kid]; ok && sameKey(old, k) {
			keys[i] = old
		}
	}
	changed, err = r.keys.replace(keys, nil)
	if err != nil {
		return false, fmt.Errorf("jtiguard: key set %s: %w", r.where, err)
	}
	if changed {
		kids := make([]string, len(keys))
		for i, k := range keys {
			kids[i] = k.kid
		}
		r.log.Info("jtiguard: keys loaded", slog.String("url", r.where), slog.Any("kids", kids))
	}
	return changed, nil
}

// sameKey reports whether b is a's verify-only key, unchanged.
func sameKey(a, b *Key) bool {
	if a.kid != b.kid || a.alg != b.alg || a.CanSign() || b.CanSign() {
		return false
	}
	switch av := a.verify.(type) {
	case []byte:
		bv, ok := b.verify.([]byte)
		return ok && subtle.ConstantTimeCompare(av, bv) == 1
	case interface{ Equal(crypto.PublicKey) bool }:
		return av.Equal(b.verify)
	}
	return false
}

// errRemote prefixes a fetch failure with the URL, without credentials.
func (r *RemoteKeys) errRemote(format string, args ...any) error {
	return fmt.Errorf("jtiguard: key set %s: "+format, append([]any{r.where}, args...)...)
}

// fetch gets and parses the document, and reads how long it stays fresh.
func (r *RemoteKeys) fetch(ctx context.Context) ([]*Key, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, remoteFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return nil, 0, r.errRemote("%w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		// The client's *url.Error names the URL without its password.
		return nil, 0, fmt.Errorf("jtiguard: key set: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, r.errRemote("status %d, want 200", resp.StatusCode)
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && mt != "application/jwk-set+json") {
		return nil, 0, r.errRemote("Content-Type %q, want application/json or application/jwk-set+json", ct)
	}
	if resp.ContentLength > remoteMaxSize {
		return nil, 0, r.errRemote("%d bytes, more than %d KiB", resp.ContentLength, remoteMaxSize>>10)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, remoteMaxSize+1))
	if err != nil {
		return nil, 0, r.errRemote("%w", err)
	}
	if len(body) > remoteMaxSize {
		return nil, 0, r.errRemote("more than %d KiB", remoteMaxSize>>10)
	}
	set, err := ParseJWKS(body)
	if err != nil {
		return nil, 0, r.errRemote("%w", err)
	}
	return set.ring.Load().order, r.freshFor(resp.Header), nil
}

// freshFor is how long a response stays fresh: max-age less Age, clamped
// to [remoteMinRefresh, r.maxRefresh], or the default without max-age.
func (r *RemoteKeys) freshFor(h http.Header) time.Duration {
	maxAge, ok := cacheMaxAge(h.Values("Cache-Control"))
	if !ok {
		return min(remoteDefaultRefresh, r.maxRefresh)
	}
	if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
		maxAge -= age
	}
	if maxAge > int64(r.maxRefresh/time.Second) {
		return r.maxRefresh
	}
	return max(time.Duration(maxAge)*time.Second, remoteMinRefresh)
}

// cacheMaxAge reads max-age from Cache-Control values (RFC 9111 section
// 5.2): no-cache and no-store count as 0, the smallest of several max-age
// wins, and a value too large to read counts as very large.
func cacheMaxAge(values []string) (int64, bool) {
	var maxAge int64
	found := false
	for _, v := range values {
		for d := range strings.SplitSeq(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			var n int64
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-cache", "no-store":
			case "max-age":
				val = strings.Trim(strings.TrimSpace(val), `"`)
				if val == "" || strings.Trim(val, "0123456789") != "" {
					continue // delta-seconds is 1*DIGIT
				}
				var err error
				if n, err = strconv.ParseInt(val, 10, 64); err != nil {
					n = 1 << 62 // out of range: very large
				}
			default:
				continue
			}
			if !found || n < maxAge {
				maxAge, found = n, true
			}
		}
	}
	return maxAge, found
}
