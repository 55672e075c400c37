// Package redisstore is a jtiguard Store and SessionStore on Redis 6.2 or
// later (tested with 7.0), for API servers with several replicas: revocation,
// one-time use and session state hold across all of them.
//
// Every mutation is one atomic Lua script. Keys are laid out with hash tags
// so that everything one verification reads (the jti's entry and its
// family, or its bucket's epoch marker) lives in one slot: one round trip
// per verification, per consume and per refresh, on Redis Cluster too.
// Keys expire with the tokens and families they describe; no sweeper runs.
//
// It fails closed: when Redis cannot answer, every call returns an error
// and the Verifier answers ErrStoreUnavailable (HTTP 503), never a pass.
// When Redis loses its data (restart without persistence, FLUSHALL,
// failover to an empty replica) the store notices, through epoch markers
// that every verification of a session-less token reads and the family
// that every session token needs, and rejects every token issued before the
// loss: users log in again. Run Redis with persistence (appendonly yes) to
// make that rare.
package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
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
}

// Store is a jtiguard.Store and jtiguard.SessionStore on Redis. It is safe
// for concurrent use.
type Store struct {
	c      redis.UniversalClient
	batch  *batcher
	prefix string
	dead   *ristretto.Cache[string, jtiguard.Status] // keyed by the 16 jti bytes
}

var (
	_ jtiguard.Store        = (*Store)(nil)
	_ jtiguard.SessionStore = (*Store)(nil)
)

// buckets spread the session-less jti entries and their epoch markers over
// the cluster's slots.
const buckets = 256

// New connects a Store: it loads the scripts on every primary and writes
// the epoch markers that are missing, so that tokens issued from now on are
// vouched for.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: redisstore needs a Client", jtiguard.ErrConfig)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "jtiguard:"
	}
	s := &Store{c: cfg.Client, prefix: cfg.Prefix, batch: newBatcher(cfg.Client)}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 100_000
	}
	if cfg.CacheSize > 0 {
		dead, err := ristretto.NewCache(&ristretto.Config[string, jtiguard.Status]{
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
	if err := s.load(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func le64(b string) uint64 {
	var v uint64
	for i := range 8 {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// load loads the scripts on every primary and writes missing markers.
func (s *Store) load(ctx context.Context) error {
	loadOn := func(ctx context.Context, c *redis.Client) error {
		for _, sc := range scripts {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return wrap("loading scripts", err)
			}
		}
		return nil
	}
	var err error
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, loadOn)
	} else if c, ok := s.c.(*redis.Client); ok {
		err = loadOn(ctx, c)
	}
	if err != nil {
		return err
	}
	return s.writeMarkers(ctx, 0)
}

// writeMarkers writes every missing epoch marker with the server's time
// plus delay seconds: at creation no delay, so tokens issued from now on
// are vouched for; after a loss one second, so that no token issued in the
// second the loss was found is.
func (s *Store) writeMarkers(ctx context.Context, delay int64) error {
	now, err := s.c.Time(ctx).Result()
	if err != nil {
		return wrap("reading server time", err)
	}
	pipe := s.c.Pipeline()
	for b := range buckets {
		pipe.SetNX(ctx, s.markerKey(byte(b)), strconv.FormatInt(now.Unix()+delay, 10), 0)
	}
	_, err = pipe.Exec(ctx)
	return wrap("writing epoch markers", err)
}

// lost is called when a script found a bucket's marker missing: the data
// was lost, and the other buckets' markers with it (all of them, or one
// node's in a cluster). Writing them all now dates the loss for every
// bucket at once; otherwise a token issued after the loss would be refused
// in each bucket until that bucket's first check. Tokens issued between the
// loss and this moment are refused: failing closed.
func (s *Store) lost(ctx context.Context) {
	_ = s.writeMarkers(ctx, 1) // best effort: the next detection retries
}

// Close stops the Store's batching goroutines and releases its cache. It
// does not close the Client. The Store must not be used after.
func (s *Store) Close() {
	s.batch.close()
	if s.dead != nil {
		s.dead.Close()
	}
}

var errClosed = errors.New("redisstore: store closed")

func (s *Store) markerKey(b byte) string {
	return s.prefix + "{b" + hex.EncodeToString([]byte{b}) + "}:e"
}

// keys returns the jti key of t and the key that vouches for it: its
// family, or its bucket's marker. Both share a hash tag, hence a slot.
func (s *Store) keys(t jtiguard.TokenRef) (jti, other, mode, arg string) {
	id := t.ID.String()
	if !t.Session.IsZero() {
		tag := s.prefix + "{" + t.Session.String() + "}"
		return tag + ":j:" + id, tag + ":f", "s", strconv.FormatUint(t.Generation, 10)
	}
	tag := s.prefix + "{b" + hex.EncodeToString(t.ID[:1]) + "}"
	return tag + ":j:" + id, tag + ":e", "b", strconv.FormatInt(t.IssuedAt.Unix(), 10)
}

func (s *Store) familyKey(sid jtiguard.JTI) string {
	return s.prefix + "{" + sid.String() + "}:f"
}

func (s *Store) subjectKey(subject string) string {
	return s.prefix + "{s:" + hex.EncodeToString([]byte(subject)) + "}:fams"
}

// remember caches a dead answer for t until the token expires.
func (s *Store) remember(t jtiguard.TokenRef, st jtiguard.Status) {
	if s.dead == nil || st == jtiguard.Live {
		return
	}
	if ttl := time.Until(t.ExpiresAt); ttl > 0 {
		s.dead.SetWithTTL(string(t.ID[:]), st, 1, ttl)
	}
}

func (s *Store) cached(t jtiguard.TokenRef) (jtiguard.Status, bool) {
	if s.dead == nil {
		return 0, false
	}
	return s.dead.Get(string(t.ID[:]))
}

// Check implements jtiguard.Store: one round trip (shared with concurrent
// checks), or none for a token already known dead.
func (s *Store) Check(ctx context.Context, t jtiguard.TokenRef) (jtiguard.Status, error) {
	if st, ok := s.cached(t); ok {
		return st, nil
	}
	jti, other, mode, arg := s.keys(t)
	n, err := s.batch.check(ctx, [2]string{jti, other}, [2]any{mode, arg})
	if err != nil {
		return 0, wrap("check", err)
	}
	st := jtiguard.Status(n)
	if st == jtiguard.Lost {
		s.lost(ctx)
	}
	s.remember(t, st)
	return st, nil
}

// Consume implements jtiguard.Store: one round trip.
func (s *Store) Consume(ctx context.Context, t jtiguard.TokenRef, nonce uint64) (jtiguard.Status, error) {
	if st, ok := s.cached(t); ok {
		return st, nil
	}
	jti, other, mode, arg := s.keys(t)
	n, err := consumeScript.Run(ctx, s.c, []string{jti, other}, mode, arg, strconv.FormatUint(nonce, 10), t.ExpiresAt.UnixMilli()).Int()
	if err != nil {
		return 0, wrap("consume", err)
	}
	st := jtiguard.Status(n)
	if st == jtiguard.Lost {
		s.lost(ctx)
	}
	if st == jtiguard.Live {
		s.remember(t, jtiguard.Used) // later presentations are replays
	} else {
		s.remember(t, st)
	}
	return st, nil
}

// Revoke implements jtiguard.Store: one round trip.
func (s *Store) Revoke(ctx context.Context, t jtiguard.TokenRef) error {
	jti, _, _, _ := s.keys(t)
	if err := revokeScript.Run(ctx, s.c, []string{jti}, t.ExpiresAt.UnixMilli()).Err(); err != nil {
		return wrap("revoke", err)
	}
	s.remember(t, jtiguard.Revoked)
	return nil
}

// Begin implements jtiguard.SessionStore: the subject index, then the
// family (two slots, so two round trips; a family without its index entry
// is never left behind, only the reverse, which costs nothing).
func (s *Store) Begin(ctx context.Context, f jtiguard.Family) error {
	end := f.ExpiresAt.UnixMilli()
	if err := indexScript.Run(ctx, s.c, []string{s.subjectKey(f.Subject)}, f.ID.String(), end).Err(); err != nil {
		return wrap("begin", err)
	}
	err := beginScript.Run(ctx, s.c, []string{s.familyKey(f.ID)},
		strconv.FormatUint(f.Generation, 10), f.Refresh.String(), f.IdleTimeout.Milliseconds(), end).Err()
	return wrap("begin", err)
}

// Rotate implements jtiguard.SessionStore: one round trip.
func (s *Store) Rotate(ctx context.Context, r jtiguard.Rotation) (jtiguard.Rotated, error) {
	newGen := "0"
	if r.NewGeneration {
		newGen = "1"
	}
	var presented string
	if !r.Presented.IsZero() {
		presented = r.Presented.String()
	}
	vals, err := rotateScript.Run(ctx, s.c, []string{s.familyKey(r.Session)},
		strconv.FormatUint(r.Generation, 10), presented, r.Next.String(), newGen,
		strconv.FormatUint(r.Nonce, 10), r.Grace.Milliseconds()).Slice()
	if err != nil {
		return jtiguard.Rotated{}, wrap("rotate", err)
	}
	return parseRotated(vals)
}

func parseRotated(vals []any) (jtiguard.Rotated, error) {
	if len(vals) != 6 {
		return jtiguard.Rotated{}, fmt.Errorf("redisstore: rotate: unexpected reply of %d values", len(vals))
	}
	ints := make([]int64, 6)
	for _, i := range []int{0, 2, 3, 4, 5} {
		n, ok := vals[i].(int64)
		if !ok {
			return jtiguard.Rotated{}, fmt.Errorf("redisstore: rotate: unexpected reply %v", vals)
		}
		ints[i] = n
	}
	r := jtiguard.Rotated{
		Status:     jtiguard.Status(ints[0]),
		Generation: uint64(ints[2]),
		At:         time.UnixMilli(ints[3]),
		ExpiresAt:  time.UnixMilli(ints[4]),
		Repeat:     ints[5] == 1,
	}
	if cur, _ := vals[1].(string); cur != "" {
		id, err := jtiguard.ParseJTI(cur)
		if err != nil {
			return jtiguard.Rotated{}, fmt.Errorf("redisstore: rotate: stored refresh jti: %w", err)
		}
		r.Next = id
	}
	return r, nil
}

// End implements jtiguard.SessionStore: one round trip.
func (s *Store) End(ctx context.Context, sid jtiguard.JTI) error {
	return wrap("end", s.c.Del(ctx, s.familyKey(sid)).Err())
}

// EndSubject implements jtiguard.SessionStore: one round trip to read the
// subject's families and one pipeline to end them.
func (s *Store) EndSubject(ctx context.Context, subject string) (int, error) {
	key := s.subjectKey(subject)
	sids, err := s.c.SMembers(ctx, key).Result()
	if err != nil {
		return 0, wrap("end subject", err)
	}
	pipe := s.c.Pipeline()
	dels := make([]*redis.IntCmd, 0, len(sids))
	for _, sid := range sids {
		id, err := jtiguard.ParseJTI(sid)
		if err != nil {
			continue // not ours; the set is only an index
		}
		dels = append(dels, pipe.Del(ctx, s.familyKey(id)))
	}
	if len(dels) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, wrap("end subject", err)
		}
	}
	n := 0
	for _, d := range dels {
		n += int(d.Val())
	}
	// Only now drop the index: had a deletion failed, a retry still finds
	// every family.
	if len(sids) > 0 {
		if err := s.c.SRem(ctx, key, sids).Err(); err != nil {
			return n, wrap("end subject", err)
		}
	}
	return n, nil
}

// wrap adds context to a Redis error; a server out of memory (maxmemory
// with noeviction) is reported as jtiguard.ErrStoreFull.
func wrap(op string, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	if strings.HasPrefix(err.Error(), "OOM ") {
		return fmt.Errorf("redisstore: %s: %w (%w)", op, jtiguard.ErrStoreFull, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}
