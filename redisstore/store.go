// Package redisstore is a jtiguard Store and SessionStore on Redis 7.0 or
// later, for API servers with several replicas: revocation, one-time use
// and session state hold across all of them.
//
// Every operation is one atomic Lua script. All the state of one subject
// (its tokens' entries, its families, its family index) lives under one
// hash tag, so every operation touches one slot: one round trip per
// verification, per consume, per refresh and per DPoP-bound request (the
// token's state and the proof's jti together, the proof's entry kept in
// the token's bucket), on Redis Cluster too, and per page of a subject's
// sessions (List); logout-all, and ending all sessions but one, are each
// one atomic script that no concurrent login escapes. Keys
// expire with the tokens and families they describe; no sweeper runs.
//
// Local answers. A token this process verified before is answered "live"
// from memory, with no round trip, while a lease holds: Redis's client
// tracking on one connection per primary, confirmed by heartbeats, tells
// it of every write under the prefix, and every operation that kills
// tokens returns only once the lease has passed (Config.Lease, 150 ms by
// default; docs/local.md has the argument).
//
// It fails closed: when Redis cannot answer, every call returns an error
// and the Verifier answers ErrStoreUnavailable (HTTP 503), never a pass.
//
// Data loss. When Redis loses data (restart without persistence, FLUSHALL
// of a node, failover to an empty replica) the store notices through
// per-bucket markers that every operation reads, and rejects every token
// issued before the loss (ErrStateLost): users log in again. When a node
// rolls back (failover to a replica that lagged), a process that had seen
// the lost writes notices that the bucket's write sequence went backwards
// and treats it the same way; a process that never saw them cannot. What
// prevents the rollback is durability: with replicas, every write that
// kills or uses a token is acknowledged only once a replica has it (WAIT),
// so a failover to that replica loses nothing acknowledged. Redis's
// replication is asynchronous: a failover may still promote a replica that
// did not confirm, which is why detection stays on.
//
// Clocks. Tokens carry iat from the issuing process's clock. The store
// measures this process's skew against every primary at New and every
// second after, and fails closed (ErrClockSkew) while it exceeds
// MaxClockSkew; a marker written after a loss refuses tokens of no session
// with an iat up to twice MaxClockSkew ahead of the writer's clock, so no
// token issued before the loss by a process within the bound gets past it,
// whatever the sub-second timing. Families need no clock: each lives only
// under the marker generation it was begun in. Run every process that
// issues or verifies tokens for one store with its clock within
// MaxClockSkew of the servers' (NTP does far better). The argument is in
// docs/faults.md.
//
// Eviction. A maxmemory-policy other than noeviction could drop a
// revocation or a used mark; New refuses such a server (ErrConfig) and the
// store fails closed if the policy changes later. Run Redis with
// persistence (appendonly yes) and noeviction.
package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
)

// Defaults.
const (
	// DefaultMaxClockSkew bounds the skew between this process's clock and
	// the servers' unless configured: the Verifier's default leeway.
	DefaultMaxClockSkew = jtiguard.DefaultLeeway
	// DefaultReplicaTimeout bounds the wait for replicas to confirm a
	// write unless configured.
	DefaultReplicaTimeout = 500 * time.Millisecond
)

// Config configures a Store.
type Config struct {
	// Client is the Redis connection: a *redis.Client, a Sentinel
	// failover client or a *redis.ClusterClient. Required. The Store does
	// not close it. Set ContextTimeoutEnabled in its options so that calls
	// end at the request's deadline rather than at ReadTimeout.
	Client redis.UniversalClient
	// Prefix starts every key; default "jtiguard:". Give each
	// deployment sharing one Redis its own.
	Prefix string
	// CacheSize is the number of "dead token" answers (revoked, used, of an
	// ended family) kept in process, so that a dead token replayed again
	// is refused without a round trip. Only dead answers are cached: a
	// token can die at any moment but never comes back. Default 100,000;
	// negative turns the cache off.
	CacheSize int
	// MaxClockSkew bounds how far this process's clock (Now) may be from
	// each Redis primary's; beyond it every call fails closed with
	// ErrClockSkew. After a data loss, tokens of no session issued within
	// twice this bound are refused, and New, when it starts a bucket's
	// memory (a fresh prefix), waits that long (plus up to a second).
	// Default DefaultMaxClockSkew (5 s); at least 1 ms.
	MaxClockSkew time.Duration
	// Now is this process's clock, the one its Issuer sets iat with;
	// default time.Now.
	Now func() time.Time
	// Replicas is how many replicas must confirm each write that kills,
	// uses or rotates a token (revoke, consume, rotate, begin, end,
	// end-subject) before it is acknowledged (WAIT). Default (0): 1 when
	// every primary has a replica at New, none otherwise. Negative: never
	// wait.
	Replicas int
	// ReplicaTimeout bounds that wait. A write not confirmed in time
	// returns an error (ErrNotReplicated, a 503 for the caller) even though
	// the primary applied it: revocations, rotations and logouts are safe
	// to retry, and a one-time token is then used without its action
	// having run (see jtiguard.Verifier.Consume). Default
	// DefaultReplicaTimeout.
	ReplicaTimeout time.Duration
	// Lease lets this process answer "live" for a token it has checked
	// before without a round trip (a token seen again, the common case of
	// an API), while it provably holds every invalidation that could
	// concern it: Redis's client tracking on one connection per primary,
	// confirmed by a heartbeat every Lease/5. An answer rests on a
	// heartbeat for at most Lease; in exchange, every operation that
	// kills tokens (revoke, logout, logout-all, ending a device, a
	// privilege change, reuse detection, a login over the session cap)
	// returns only once Lease has passed since Redis acknowledged it, on
	// every process sharing the prefix, so that when it returns no process
	// answers from before it. The processes of one deployment agree on the
	// longest lease through a key under the prefix. Default DefaultLease
	// (150 ms); at most MaxLease; negative turns local answers off for
	// this process (it still waits on kills for the others). docs/local.md
	// has the argument.
	Lease time.Duration

	// trackingDial, if set, changes the options of the tracking
	// connections (tests route them through a proxy).
	trackingDial func(*redis.Options)
}

// Errors of the store, beside those of Redis itself. Each reaches the
// caller of a Verifier or Sessions method as the cause of an
// ErrStoreUnavailable (503).
var (
	// ErrClockSkew: this process's clock is further from a Redis primary's
	// than MaxClockSkew allows, so loss detection could not be trusted.
	ErrClockSkew = errors.New("redisstore: clock skew beyond MaxClockSkew")
	// ErrNotReplicated: a write was applied on the primary but not
	// confirmed by the required replicas within ReplicaTimeout.
	ErrNotReplicated = errors.New("redisstore: write not confirmed by replicas")
)

// Store is a store.Store, store.SessionStore, store.ProofStore and
// store.DeviceStore on Redis. It is safe for concurrent use.
type Store struct {
	c      redis.UniversalClient
	batch  *batcher
	prefix string
	// tags and signals are each bucket's key prefix (tag) and signal key,
	// built once: a check names them every time.
	tags, signals [buckets]string
	dead          *ristretto.Cache[string, store.Status] // keyed by the 16 jti bytes
	now           func() time.Time
	skew          time.Duration
	replicas      int
	waitFor       time.Duration

	// clusterArg tells the check script it runs on a cluster ("1").
	clusterArg string
	// local answers "live" without a round trip while its lease holds
	// (nil: off); leaseAll is the deployment's longest lease (ns), which
	// every kill waits out.
	local    *local
	leaseAll atomic.Int64
	// leaseRead is when the deployment's lease was last read (Unix ns):
	// one not read for a while may have grown, and kills then wait
	// MaxLease.
	leaseRead atomic.Int64

	// seen holds, per bucket, the latest of its history this process has
	// seen, to notice a rollback.
	seen [buckets]atomic.Pointer[history]
	// health is nil while the servers are fit for use, else why not
	// (clock skew, an evicting policy).
	health atomic.Pointer[error]
	// Repairs found needed on a request's path, done by the repairer:
	// missing markers to write, and per bucket the generation of a
	// rolled-back marker to rewrite (plus one; 0: none). While a bucket's
	// rewrite is pending, every answer about it is Lost.
	missing atomic.Bool
	rolled  [buckets]atomic.Int64
	kick    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
}

var (
	_ store.Store        = (*Store)(nil)
	_ store.SessionStore = (*Store)(nil)
	_ store.ProofStore   = (*Store)(nil)
	_ store.DeviceStore  = (*Store)(nil)
	_ jtiguard.Pinger    = (*Store)(nil)
)

// buckets spread the subjects over the cluster's slots.
const buckets = 256

// healthEvery is how often the servers' clocks and eviction policy are
// checked after New.
const healthEvery = time.Second

// New connects a Store: it checks every primary's clock and eviction
// policy, loads the scripts, and writes the loss markers that are missing.
// When it wrote any (the first use of the prefix, or after a loss), it
// waits until tokens issued from then on are vouched for: up to
// MaxClockSkew and a second.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: redisstore needs a Client", jtiguard.ErrConfig)
	}
	switch {
	case cfg.Prefix == "":
		cfg.Prefix = "jtiguard:"
	case strings.ContainsAny(cfg.Prefix, "{}"):
		return nil, fmt.Errorf("%w: Prefix must not contain braces (hash tags)", jtiguard.ErrConfig)
	}
	switch {
	case cfg.MaxClockSkew == 0:
		cfg.MaxClockSkew = DefaultMaxClockSkew
	case cfg.MaxClockSkew < time.Millisecond:
		return nil, fmt.Errorf("%w: MaxClockSkew must be at least 1ms", jtiguard.ErrConfig)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplicaTimeout <= 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	s := &Store{c: cfg.Client, prefix: cfg.Prefix, now: cfg.Now, skew: cfg.MaxClockSkew, waitFor: cfg.ReplicaTimeout, stop: make(chan struct{}), kick: make(chan struct{}, 1)}
	for b := range buckets {
		s.tags[b] = s.tag(byte(b))
		s.signals[b] = s.tags[b] + ":m"
	}
	if _, ok := s.c.(*redis.ClusterClient); !ok {
		if _, ok := s.c.(*redis.Client); !ok {
			return nil, fmt.Errorf("%w: redisstore needs a *redis.Client or *redis.ClusterClient, not %T", jtiguard.ErrConfig, cfg.Client)
		}
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 100_000
	}
	if cfg.CacheSize > 0 {
		dead, err := ristretto.NewCache(&ristretto.Config[string, store.Status]{
			NumCounters:        int64(cfg.CacheSize) * 10,
			MaxCost:            int64(cfg.CacheSize),
			BufferItems:        64,
			IgnoreInternalCost: true,
			// The key is 128 random bits: its halves are the hashes.
			KeyToHash: func(k string) (uint64, uint64) { return le64(k[:8]), le64(k[8:]) },
		})
		if err != nil {
			return nil, err
		}
		s.dead = dead
	}
	switch {
	case cfg.Lease == 0:
		cfg.Lease = DefaultLease
	case cfg.Lease > MaxLease:
		return nil, fmt.Errorf("%w: Lease above %v", jtiguard.ErrConfig, MaxLease)
	}
	if _, ok := s.c.(*redis.ClusterClient); ok {
		s.clusterArg = "1"
	}
	s.batch = newBatcher(cfg.Client)
	if err := s.open(ctx, cfg.Replicas); err != nil {
		s.Close()
		return nil, err
	}
	err := s.refreshLease(ctx)
	if err == nil && cfg.Lease > 0 {
		err = s.startLocal(ctx, cfg.Lease, max(cfg.CacheSize, 1024), cfg.trackingDial)
	}
	if err != nil {
		s.Close()
		return nil, wrap("reading the deployment's lease", err)
	}
	s.wg.Go(s.watch)
	s.wg.Go(s.repairer)
	return s, nil
}

func le64(b string) uint64 {
	var v uint64
	for i := range 8 {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// open checks the servers, loads the scripts, decides on replication and
// writes missing markers, waiting for them to take effect.
func (s *Store) open(ctx context.Context, replicas int) error {
	if err := s.checkServers(ctx); err != nil {
		return err
	}
	var without atomic.Bool // a primary without replicas
	err := s.forEachPrimary(ctx, func(ctx context.Context, c *redis.Client) error {
		for _, sc := range scripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return wrap("loading scripts", err)
			}
		}
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return wrap("reading replication info", err)
		}
		if n, _ := strconv.Atoi(infoField(info, "connected_slaves")); n == 0 {
			without.Store(true)
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case replicas < 0:
		s.replicas = 0
	case replicas > 0:
		s.replicas = replicas
	case !without.Load():
		s.replicas = 1
	}
	until, err := s.mark(ctx)
	if err != nil || until == 0 {
		return err
	}
	// Tokens issued from the next whole second of this clock on have an
	// iat at or past every marker written.
	d := time.UnixMilli(until).Add(time.Second - 1).Truncate(time.Second).Sub(s.now())
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forEachPrimary runs fn on every primary, concurrently on Cluster.
func (s *Store) forEachPrimary(ctx context.Context, fn func(context.Context, *redis.Client) error) error {
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, fn)
	}
	return fn(ctx, s.c.(*redis.Client))
}

// checkServers measures this process's clock against every primary's and
// reads each one's eviction policy, and records the verdict in health.
func (s *Store) checkServers(ctx context.Context) error {
	err := s.forEachPrimary(ctx, func(ctx context.Context, c *redis.Client) error {
		off, err := s.offset(ctx, c)
		if err != nil {
			return err
		}
		if off.Abs() > s.skew {
			return fmt.Errorf("%w: this clock is %v from %s's (bound %v)", ErrClockSkew, off.Round(time.Millisecond), c.Options().Addr, s.skew)
		}
		info, err := c.Info(ctx, "memory").Result()
		if err != nil {
			return wrap("reading the eviction policy", err)
		}
		if p := infoField(info, "maxmemory_policy"); p != "noeviction" {
			return fmt.Errorf("%w: redisstore: %s has maxmemory-policy %q, which can evict revocations: use noeviction", jtiguard.ErrConfig, c.Options().Addr, p)
		}
		return nil
	})
	if errors.Is(err, ErrClockSkew) || errors.Is(err, jtiguard.ErrConfig) {
		s.health.Store(&err)
		return err
	}
	if err == nil {
		s.health.Store(nil)
	}
	return err // a server that does not answer is each call's to report
}

// offset estimates this clock minus the server's: the midpoint of our two
// readings around its TIME, from the fastest of three exchanges, so that a
// loaded machine's slow replies shift the estimate by little (at most half
// the fastest round trip).
func (s *Store) offset(ctx context.Context, c *redis.Client) (time.Duration, error) {
	var best, rtt time.Duration
	for i := range 3 {
		t0 := s.now()
		server, err := c.Time(ctx).Result()
		t1 := s.now()
		if err != nil {
			return 0, wrap("reading server time", err)
		}
		if d := t1.Sub(t0); i == 0 || d < rtt {
			best, rtt = t0.Add(d/2).Sub(server), d
		}
	}
	return best, nil
}

// watch re-checks the servers every healthEvery until Close.
func (s *Store) watch() {
	t := time.NewTicker(healthEvery)
	defer t.Stop()
	var kick chan struct{} // a sign the lease key was lost: announce at once
	if s.local != nil {
		kick = s.local.kick
	}
	for {
		select {
		case <-s.stop:
			return
		case <-kick:
			ctx, cancel := context.WithTimeout(context.Background(), healthEvery)
			_ = s.refreshLease(ctx)
			cancel()
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), healthEvery)
			_ = s.checkServers(ctx)
			cancel()
			// Its own deadline: a slow primary must not starve it.
			ctx, cancel = context.WithTimeout(context.Background(), healthEvery)
			_ = s.refreshLease(ctx)
			cancel()
		}
	}
}

// Ping implements jtiguard.Pinger: nil when every primary answers and the
// store is fit for use (clock skew within bounds, no evicting policy).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.fit(); err != nil {
		return err
	}
	return s.forEachPrimary(ctx, func(ctx context.Context, c *redis.Client) error {
		return wrap("ping", c.Ping(ctx).Err())
	})
}

// fit returns why the store cannot be used now, if it cannot.
func (s *Store) fit() error {
	if err := s.health.Load(); err != nil {
		return *err
	}
	return nil
}

func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// mark writes every missing marker, in one pipeline, and returns the
// latest m it wrote (Unix ms; 0 if none). A marker's m lies twice
// MaxClockSkew ahead of this clock: every process is within MaxClockSkew of
// every server it uses, so a token issued before now by any of them has
// an iat before m (docs/faults.md). Markers need no WAIT: a marker lost in
// a failover is a missing marker, which fails closed.
func (s *Store) mark(ctx context.Context) (int64, error) {
	m := s.now().Add(2 * s.skew).UnixMilli()
	pipe := s.c.Pipeline()
	cmds := make([]*redis.Cmd, buckets)
	for b := range buckets {
		cmds[b] = markScript.EvalSha(ctx, pipe, s.markerKeys(byte(b)), m, "", s.gmin(byte(b)))
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var until int64
	for b, cmd := range cmds {
		res, err := cmd.Result()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			// The server lost its scripts with its data: EVAL loads it.
			res, err = markScript.Run(ctx, s.c, s.markerKeys(byte(b)), m, "", s.gmin(byte(b))).Result()
		}
		if err != nil {
			return 0, wrap("writing loss markers", err)
		}
		if vals, _ := res.([]any); len(vals) == 2 && vals[0] == int64(1) {
			until = max(until, m) // its g is above any seen: the next reply adopts it
		}
	}
	return until, nil
}

// gmin is the least generation a marker of bucket b written now must have:
// above any this process has seen, and no less than this clock's Unix
// milliseconds, so that a marker written after a loss by a process that
// never saw the old one still comes after it for everyone who did (a
// process whose clock lags may take a newer marker for an older one: that
// costs one more rewrite, never a pass).
func (s *Store) gmin(b byte) int64 {
	least := s.now().UnixMilli()
	if v := s.seen[b].Load(); v != nil {
		least = max(least, v.g+1)
	}
	return least
}

// Close stops the Store's goroutines and releases its cache. It does not
// close the Client. The Store must not be used after.
func (s *Store) Close() {
	close(s.stop)
	s.wg.Wait()
	if s.batch != nil {
		s.batch.close()
	}
	if s.dead != nil {
		s.dead.Close()
	}
	if s.local != nil {
		s.local.close()
	}
}

var errClosed = errors.New("redisstore: store closed")

// bucket is the bucket of subject: FNV-1a, the same in every process.
func bucket(subject string) byte {
	h := uint32(2166136261)
	for i := range len(subject) {
		h = (h ^ uint32(subject[i])) * 16777619
	}
	return byte(h ^ h>>8 ^ h>>16 ^ h>>24)
}

// markerKeys are the keys of bucket b's marker script: the marker and
// the key every marker write also writes (see markScript).
func (s *Store) markerKeys(b byte) []string {
	tag := s.tag(b)
	return []string{tag + ":e", tag + ":m"}
}

// tag is the key prefix of bucket b: its hash tag makes it one slot.
func (s *Store) tag(b byte) string {
	if t := s.tags[b]; t != "" {
		return t
	}
	return s.prefix + "{b" + hex.EncodeToString([]byte{b}) + "}"
}

// tokenKeys returns the keys a token's scripts take: its jti entry, its
// bucket's marker and, for a token of a session, its family (room left for
// one more, the signal a check adds).
func (s *Store) tokenKeys(t store.TokenRef) (b byte, keys []string) {
	b = bucket(t.Subject)
	tag := s.tag(b)
	keys = append(make([]string, 0, 4), tag+":j:"+t.ID.String(), tag+":e")
	if !t.Session.IsZero() {
		keys = append(keys, tag+":f:"+t.Session.String())
	}
	return b, keys
}

// remember caches a dead answer for t until the token expires.
func (s *Store) remember(t store.TokenRef, st store.Status) {
	if s.dead == nil || st == store.Live {
		return
	}
	if ttl := time.Until(t.ExpiresAt); ttl > 0 {
		s.dead.SetWithTTL(string(t.ID[:]), st, 1, ttl)
	}
}

func (s *Store) cached(t store.TokenRef) (store.Status, bool) {
	if s.dead == nil {
		return 0, false
	}
	return s.dead.Get(string(t.ID[:]))
}

// Check implements store.Store: one round trip (shared with concurrent
// checks), or none for a token already known dead, or known live under
// the lease (Config.Lease).
func (s *Store) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	b := bucket(t.Subject)
	if s.local.live(t, b) && s.rolled[b].Load() == 0 && s.health.Load() == nil {
		return store.Live, nil
	}
	if st, ok := s.cached(t); ok {
		return st, nil
	}
	if err := s.fit(); err != nil {
		return 0, err
	}
	_, keys := s.tokenKeys(t)
	keys = append(keys, s.signals[b])
	before := s.seen[b].Load()
	sn := s.local.snap(t, b)
	vals, err := s.batch.check(ctx, keys, []any{before.seenQ(), "", strconv.FormatUint(t.Generation, 10), strconv.FormatInt(t.IssuedAt.Unix(), 10), s.clusterArg})
	if err != nil {
		return 0, wrap("check", err)
	}
	first, lost, err := s.settle(b, before, vals)
	st, err := status(first, lost, err)
	if err != nil {
		return 0, wrap("check", err)
	}
	s.remember(t, st)
	if st == store.Live && !lost {
		// How long the answer may be kept: -1 until the token expires, 0
		// not at all (nothing read says otherwise).
		ttl := time.Duration(0)
		if len(vals) > headLen {
			if ms, ok := vals[headLen].(int64); ok && (ms > 0 || ms == -1 && t.Session.IsZero()) {
				ttl = time.Duration(ms) * time.Millisecond
			}
		}
		var node string
		if len(vals) > headLen+1 {
			node, _ = vals[headLen+1].(string)
		}
		if ttl != 0 {
			s.local.put(t, b, sn, ttl, node)
		}
	}
	return st, nil
}

// keep is how long the store keeps a token's entry: past its expiry (the
// Verifier's ref adds the leeway) by MaxClockSkew more, since Redis expires
// it by its own clock, which may be that far ahead of the verifiers'.
func (s *Store) keep(t store.TokenRef) int64 { return t.ExpiresAt.Add(s.skew).UnixMilli() }

// Consume implements store.Store: one round trip.
func (s *Store) Consume(ctx context.Context, t store.TokenRef, nonce uint64) (store.Status, error) {
	if st, ok := s.cached(t); ok {
		return st, nil
	}
	if err := s.fit(); err != nil {
		return 0, err
	}
	b, keys := s.tokenKeys(t)
	_, first, lost, err := s.do(ctx, b, consumeScript, keys, strconv.FormatUint(t.Generation, 10), strconv.FormatInt(t.IssuedAt.Unix(), 10),
		strconv.FormatUint(nonce, 10), s.keep(t))
	st, err := status(first, lost, err)
	if err != nil {
		return 0, wrap("consume", err)
	}
	if st == store.Live {
		s.remember(t, store.Used) // later presentations are replays
	} else {
		s.remember(t, st)
	}
	return st, nil
}

// CheckAndConsume implements store.ProofStore: one round trip, one
// script over the token's bucket (the proof's entry is kept there), which
// checks the token and, only if it is Live, consumes the proof; none for a
// token already known dead.
func (s *Store) CheckAndConsume(ctx context.Context, token, proof store.TokenRef, nonce uint64) (tokenStatus, proofStatus store.Status, err error) {
	if token.Subject != proof.Subject {
		return 0, 0, fmt.Errorf("%w: redisstore: a proof's Subject must be its token's", jtiguard.ErrConfig)
	}
	if st, ok := s.cached(token); ok {
		return st, st, nil
	}
	if err := s.fit(); err != nil {
		return 0, 0, err
	}
	b, keys := s.tokenKeys(token)
	keys = append([]string{keys[0], keys[1], s.tag(b) + ":j:" + proof.ID.String()}, keys[2:]...)
	vals, first, lost, err := s.do(ctx, b, checkConsumeScript, keys, strconv.FormatUint(token.Generation, 10),
		strconv.FormatInt(token.IssuedAt.Unix(), 10), strconv.FormatInt(proof.IssuedAt.Unix(), 10),
		strconv.FormatUint(nonce, 10), s.keep(proof))
	st, err := status(first, lost, err)
	if err != nil {
		return 0, 0, wrap("check and consume", err)
	}
	if st != store.Live {
		s.remember(token, st)
		return st, st, nil
	}
	var p any
	if len(vals) == headLen+1 {
		p = vals[headLen]
	}
	n, ok := p.(int64)
	pst, err := status(n, false, nil)
	if err != nil || !ok {
		return 0, 0, fmt.Errorf("redisstore: check and consume: unexpected reply %v", vals)
	}
	if pst == store.Live {
		s.remember(proof, store.Used) // later presentations are replays
	} else {
		s.remember(proof, pst)
	}
	return store.Live, pst, nil
}

// Revoke implements store.Store: one round trip. It is never refused
// for memory (the script may exceed maxmemory): a revocation is bounded by
// its token's lifetime. The revoked answer is cached when a check reads
// it, not here, so that a revocation takes effect on this process exactly
// where it does on the others.
func (s *Store) Revoke(ctx context.Context, t store.TokenRef) error {
	if err := s.fit(); err != nil {
		return err
	}
	b, keys := s.tokenKeys(t)
	_, _, _, err := s.do(ctx, b, revokeScript, keys[:2], s.keep(t)) // lost or not, the revocation is recorded
	if err == nil {
		err = s.settleKill(ctx, time.Now())
	}
	return wrap("revoke", err)
}

// Begin implements store.SessionStore: one round trip, which records
// the family and its subject index entry together and, with f.Limit, ends
// the subject's oldest live families beyond it in the same script. It
// costs O(1) in the subject's families without a limit, and O(f.Limit)
// when the subject is at it.
func (s *Store) Begin(ctx context.Context, f store.Family) error {
	if err := s.fit(); err != nil {
		return err
	}
	b := bucket(f.Subject)
	tag := s.tag(b)
	for try := 0; ; try++ {
		vals, first, lost, err := s.do(ctx, b, beginScript, []string{tag + ":f:" + f.ID.String(), s.indexKey(tag, f.Subject), tag + ":e"},
			strconv.FormatUint(f.Generation, 10), f.Refresh.String(), f.IdleTimeout.Milliseconds(), f.ExpiresAt.UnixMilli(),
			f.Subject, tag, f.ID.String(), created(f), max(f.Limit, 0), f.ClientID, f.ACR, f.Device.Label, f.Device.IP)
		st, err := status(first, lost, err)
		switch {
		case err != nil:
			return wrap("begin", err)
		case st == store.Live:
			// Families ended for the limit: their tokens are dead. A
			// retried begin (its first reply lost) cannot tell whether its
			// first attempt ended any: it waits too.
			if f.Limit > 0 && (len(vals) == headLen || vals[headLen] != int64(0)) {
				return wrap("begin", s.settleKill(ctx, time.Now()))
			}
			return nil
		case try > 0:
			return fmt.Errorf("redisstore: begin: the bucket's state was lost; try again: %w", jtiguard.ErrStoreUnavailable)
		}
		// The bucket lost its data or rolled back: once its marker is
		// written anew, a family begun now is vouched for.
		s.repair(ctx, int(b))
	}
}

func (s *Store) indexKey(tag, subject string) string {
	return tag + ":s:" + hex.EncodeToString([]byte(subject))
}

// Rotate implements store.SessionStore: one round trip.
func (s *Store) Rotate(ctx context.Context, r store.Rotation) (store.Rotated, error) {
	if err := s.fit(); err != nil {
		return store.Rotated{}, err
	}
	newGen := "0"
	if r.NewGeneration {
		newGen = "1"
	}
	var presented string
	if !r.Presented.IsZero() {
		presented = r.Presented.String()
	}
	b := bucket(r.Subject)
	tag := s.tag(b)
	vals, first, lost, err := s.do(ctx, b, rotateScript, []string{tag + ":f:" + r.Session.String(), tag + ":j:" + presented, tag + ":e"},
		strconv.FormatUint(r.Generation, 10), presented, r.Next.String(), newGen,
		strconv.FormatUint(r.Nonce, 10), r.Grace.Milliseconds(), r.Subject, r.ACR)
	st, err := status(first, lost, err)
	if err == nil && (st == store.Reused || (st == store.Live && r.NewGeneration)) {
		// The family was revoked, or its tokens superseded.
		err = s.settleKill(ctx, time.Now())
	}
	if err != nil || st != store.Live {
		return store.Rotated{Status: st}, wrap("rotate", err)
	}
	if len(vals) != headLen+5 {
		return store.Rotated{}, fmt.Errorf("redisstore: rotate: unexpected reply %v", vals)
	}
	return parseRotated(vals[headLen:])
}

func parseRotated(vals []any) (store.Rotated, error) {
	var ints [4]int64
	for i, v := range vals[1:] {
		n, ok := v.(int64)
		if !ok {
			return store.Rotated{}, fmt.Errorf("redisstore: rotate: unexpected reply %v", vals)
		}
		ints[i] = n
	}
	r := store.Rotated{
		Status:     store.Live,
		Generation: uint64(ints[0]),
		At:         time.UnixMilli(ints[1]),
		ExpiresAt:  time.UnixMilli(ints[2]),
		Repeat:     ints[3] == 1,
	}
	cur, _ := vals[0].(string)
	id, err := jtiguard.ParseJTI(cur)
	if err != nil {
		return store.Rotated{}, fmt.Errorf("redisstore: rotate: stored refresh jti: %w", err)
	}
	r.Next = id
	return r, nil
}

// End implements store.SessionStore: one round trip.
func (s *Store) End(ctx context.Context, subject string, sid jtiguard.JTI) error {
	if err := s.fit(); err != nil {
		return err
	}
	b := bucket(subject)
	tag := s.tag(b)
	_, _, _, err := s.do(ctx, b, endScript, []string{tag + ":f:" + sid.String(), s.indexKey(tag, subject), tag + ":e"}, sid.String(), subject)
	if err == nil {
		err = s.settleKill(ctx, time.Now())
	}
	return wrap("end", err)
}

// EndSubject implements store.SessionStore: one round trip, one atomic
// script, so a family either was begun before it (and is ended) or after.
func (s *Store) EndSubject(ctx context.Context, subject string) (int, error) {
	if err := s.fit(); err != nil {
		return 0, err
	}
	b := bucket(subject)
	tag := s.tag(b)
	_, n, _, err := s.do(ctx, b, endSubjectScript, []string{s.indexKey(tag, subject), tag + ":e"}, subject, tag)
	if err == nil {
		err = s.settleKill(ctx, time.Now())
	}
	if err != nil {
		return 0, wrap("end subject", err)
	}
	return int(n), nil
}

// history is what a process last saw of a bucket's history: the marker's
// generation, the write sequence and that write's stamp.
type history struct {
	g, q int64
	h    string
}

// seenQ is the q to send with a script (0: nothing seen).
func (v *history) seenQ() int64 {
	if v == nil {
		return 0
	}
	return v.q
}

// headLen is the length of every script reply's head: first value, q read,
// g, the stamp at the q the caller had seen, q after, the stamp at q after.
const headLen = 6

// do runs a writing script on bucket b, with this process's view of the
// bucket's history and a fresh stamp in front of args, and settles the
// reply's head.
func (s *Store) do(ctx context.Context, b byte, sc *redis.Script, keys []string, args ...any) (vals []any, first int64, lost bool, err error) {
	before := s.seen[b].Load()
	res, err := s.write(ctx, sc, keys, append([]any{before.seenQ(), strconv.FormatUint(rand.Uint64(), 36)}, args...)...)
	if err != nil {
		return nil, 0, false, err
	}
	vals, _ = res.([]any)
	first, lost, err = s.settle(b, before, vals)
	return vals, first, lost, err
}

// settle reads the head of a script's reply for bucket b, where before is
// what this process had seen of b when it sent the script, and returns its
// first value (a status, or a count). lost reports that the answer cannot
// be trusted: the marker is missing (data lost), or the bucket's history
// is not the one seen before (a rollback: its generation or sequence went
// back, or the write at the sequence seen is another one). The marker is
// then written anew, in the background, so that every token and family
// from before is refused.
func (s *Store) settle(b byte, before *history, vals []any) (first int64, lost bool, err error) {
	if len(vals) < headLen {
		return 0, false, fmt.Errorf("unexpected reply %v", vals)
	}
	first, ok1 := vals[0].(int64)
	qr, ok2 := vals[1].(int64)
	g, ok3 := vals[2].(int64)
	hs, ok4 := vals[3].(string)
	qa, ok5 := vals[4].(int64)
	ha, ok6 := vals[5].(string)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return 0, false, fmt.Errorf("unexpected reply %v", vals)
	}
	if g < 0 { // the marker is missing
		s.missing.Store(true)
		s.poke()
		return first, true, nil
	}
	if before != nil && (g < before.g || (g == before.g && (qr < before.q || (hs != "" && hs != before.h)))) {
		// Writes this process saw acknowledged are gone: the bucket's
		// marker must be rewritten (unless another process already did:
		// g moved on), and until it is, nothing about it is trusted.
		s.rolled[b].CompareAndSwap(0, g+1)
		s.poke()
		return first, true, nil
	}
	if s.rolled[b].Load() != 0 {
		return first, true, nil
	}
	s.saw(b, &history{g: g, q: qa, h: ha})
	return first, false, nil
}

// status turns a script's settled answer into a Status.
func status(first int64, lost bool, err error) (store.Status, error) {
	switch {
	case err != nil:
		return 0, err
	case lost:
		return store.Lost, nil
	case first < 0 || first > math.MaxUint8:
		return 0, fmt.Errorf("unexpected status %d", first)
	}
	return store.Status(first), nil
}

// saw records v as seen of bucket b, keeping the latest.
func (s *Store) saw(b byte, v *history) {
	for {
		old := s.seen[b].Load()
		if old != nil && (old.g > v.g || (old.g == v.g && old.q >= v.q)) {
			return
		}
		if s.seen[b].CompareAndSwap(old, v) {
			return
		}
	}
}

// poke wakes the repairer.
func (s *Store) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// repairer does the repairs found needed on requests' paths, until Close:
// a request has its answer (Lost) at once, and a repair that fails is
// tried again a moment later, so none is ever dropped.
func (s *Store) repairer() {
	retry := time.NewTicker(100 * time.Millisecond)
	defer retry.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.kick:
		case <-retry.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.repair(ctx, -1)
		cancel()
	}
}

// repair writes the missing markers, if any are known missing, and
// rewrites the markers of buckets that rolled back: every bucket's, or
// only b's when b >= 0.
func (s *Store) repair(ctx context.Context, b int) {
	if s.missing.Swap(false) {
		if _, err := s.mark(ctx); err != nil {
			s.missing.Store(true)
		}
	}
	for i := range buckets {
		if b >= 0 && i != b {
			continue
		}
		g := s.rolled[i].Load()
		if g == 0 {
			continue
		}
		// Conditional on the rolled-back generation: of several processes
		// that found the rollback, one rewrites. Confirmed by replicas like
		// any write, so that a rewrite is not itself lost unnoticed.
		m := s.now().Add(2 * s.skew).UnixMilli()
		if _, err := s.write(ctx, markScript, s.markerKeys(byte(i)), m, strconv.FormatInt(g-1, 10), max(g, s.gmin(byte(i)))); err == nil {
			s.rolled[i].CompareAndSwap(g, 0)
		}
	}
}

// run runs a script without waiting for replicas.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) (any, error) {
	return sc.Run(ctx, s.c, keys, args...).Result()
}

// write runs a script that changes state and, when the store waits for
// replicas, confirms it with WAIT on the same connection, in the same
// round trip.
func (s *Store) write(ctx context.Context, sc *redis.Script, keys []string, args ...any) (any, error) {
	if s.replicas == 0 {
		return s.run(ctx, sc, keys, args...)
	}
	node, ok := s.c.(*redis.Client)
	if !ok {
		var err error
		if node, err = s.c.(*redis.ClusterClient).MasterForKey(ctx, keys[0]); err != nil {
			return nil, err
		}
	}
	for try := 0; ; try++ {
		pipe := node.Pipeline()
		res := sc.EvalSha(ctx, pipe, keys, args...)
		wait := pipe.Do(ctx, "WAIT", s.replicas, s.waitFor.Milliseconds())
		_, _ = pipe.Exec(ctx) // errors are per command
		if err := res.Err(); err != nil {
			if try == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
				if err := sc.Load(ctx, node).Err(); err != nil {
					return nil, err
				}
				continue
			}
			return nil, err
		}
		if n, err := wait.Int64(); err != nil || n < int64(s.replicas) {
			return nil, fmt.Errorf("%w: %d of %d replicas within %v (%v)", ErrNotReplicated, n, s.replicas, s.waitFor, err)
		}
		return res.Val(), nil
	}
}

// wrap adds context to a Redis error; a server out of memory (maxmemory
// with noeviction) is reported as jtiguard.ErrStoreFull.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if strings.HasPrefix(err.Error(), "OOM ") {
		return fmt.Errorf("redisstore: %s: %w (%w)", op, jtiguard.ErrStoreFull, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}
