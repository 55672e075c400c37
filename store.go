package jtiguard

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Status is what a store knows of one token.
type Status uint8

const (
	// Live: neither revoked nor used. From Consume: this call used it.
	Live Status = iota
	// Revoked: the token was revoked before its expiry.
	Revoked
	// Used: a one-time token that has been consumed.
	Used
	// Lost: the token was issued before the store's memory begins (a store
	// restarted empty or flushed), so the store cannot vouch for it.
	Lost
)

// TokenRef names one token to a store: its jti and the times that bound its
// life. Stores keep state about it until ExpiresAt, after which the token is
// rejected on its own; the Verifier passes the token's exp plus its clock
// skew allowance, so the state outlives every clock that might accept it.
type TokenRef struct {
	ID        JTI
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Store keeps the state that makes a validly signed token dead: revoked and
// used jti values. The Verifier reads it on every verification, so an
// implementation shared by several processes (Redis) makes revocation and
// one-time use hold across all of them.
//
// Implementations must be safe for concurrent use, and each method must be
// atomic: no interleaving of calls can make two Consume calls for one token
// both see Live. err is for infrastructure failures only (unreachable,
// timed out, full); a verifier treats any err as "cannot vouch" and rejects
// the request with ErrStoreUnavailable, never as a pass. A store that lost
// its data must answer Lost for tokens issued before the loss instead of
// Live.
type Store interface {
	// Check reports the token's status. It changes nothing.
	Check(ctx context.Context, t TokenRef) (Status, error)
	// Consume marks the token used if it is Live and reports Live for the
	// one call that did so; every other call sees Used (or Revoked, or
	// Lost). A call repeated with the same nonce, as a client library
	// retries a command whose reply was lost, recognizes its own earlier
	// write and reports Live again, so a retry never turns an honest
	// first use into a replay.
	Consume(ctx context.Context, t TokenRef, nonce uint64) (Status, error)
	// Revoke marks the token revoked until t.ExpiresAt. When it returns
	// nil, every later Check and Consume for the token reports Revoked.
	Revoke(ctx context.Context, t TokenRef) error
}

// MemoryConfig configures a MemoryStore. The zero value is usable.
type MemoryConfig struct {
	// Capacity bounds the number of entries (revoked or used tokens not yet
	// expired). At capacity the store refuses to record more, returning
	// ErrStoreFull, rather than forget live state. Default 1,000,000
	// (about 64 MB).
	Capacity int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

const (
	memShards      = 64
	defaultMemCap  = 1_000_000
	sweepInterval  = 5 // seconds between sweeps of a shard triggered by writes
	fullSweepEvery = 1 // seconds between whole-store sweeps when at capacity
)

// MemoryStore is the exact in-process Store, the default for a single
// process. State lives in sharded maps keyed by the 16-byte jti (no pointers,
// so the garbage collector never scans it), and each entry is dropped once
// its token's expiry has passed. Memory is bounded by Capacity, and a full
// store fails closed.
//
// Its memory begins when it is created: tokens issued before then are Lost,
// because a process that restarts forgets what it had revoked. Create it
// before issuing tokens, and keep tokens short-lived.
type MemoryStore struct {
	shards   [memShards]memShard
	count    atomic.Int64
	capacity int64
	now      func() time.Time
	epoch    int64 // unix seconds; tokens issued before are Lost
	lastFull atomic.Uint32
}

// clock converts t to seconds since the store's epoch, clamped to uint32
// (136 years).
func (s *MemoryStore) clock(t time.Time) uint32 {
	return uint32(min(max(t.Unix()-s.epoch, 0), math.MaxUint32))
}

// memEntry is 16 bytes, so a map slot with its 16-byte key is 32.
type memEntry struct {
	nonce  uint64
	exp    uint32 // seconds since the store's epoch
	status Status
}

type memShard struct {
	mu        sync.RWMutex
	m         map[JTI]memEntry
	peak      int
	nextSweep uint32
	_         [32]byte // keep shards on separate cache lines
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore(cfg MemoryConfig) (*MemoryStore, error) {
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("%w: negative Capacity", ErrConfig)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = defaultMemCap
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &MemoryStore{capacity: int64(cfg.Capacity), now: cfg.Now, epoch: cfg.Now().Unix()}
	for i := range s.shards {
		s.shards[i].m = make(map[JTI]memEntry)
	}
	return s, nil
}

func (s *MemoryStore) shard(id JTI) *memShard { return &s.shards[id[0]%memShards] }

// Check implements Store.
func (s *MemoryStore) Check(ctx context.Context, t TokenRef) (Status, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if t.IssuedAt.Unix() < s.epoch {
		return Lost, nil
	}
	sh := s.shard(t.ID)
	sh.mu.RLock()
	e, ok := sh.m[t.ID]
	sh.mu.RUnlock()
	if !ok || e.exp <= s.clock(s.now()) {
		return Live, nil
	}
	return e.status, nil
}

// Consume implements Store.
func (s *MemoryStore) Consume(ctx context.Context, t TokenRef, nonce uint64) (Status, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if t.IssuedAt.Unix() < s.epoch {
		return Lost, nil
	}
	return s.write(t, Used, nonce)
}

// Revoke implements Store.
func (s *MemoryStore) Revoke(ctx context.Context, t TokenRef) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := s.write(t, Revoked, 0)
	return err
}

// write records status for t. For Used it is an insert-if-absent that
// reports Live to the caller whose insert (or whose nonce) holds; for
// Revoked it overwrites.
func (s *MemoryStore) write(t TokenRef, status Status, nonce uint64) (Status, error) {
	now, exp := s.clock(s.now()), s.clock(t.ExpiresAt)
	if exp <= now {
		// Expired tokens are rejected on their own; nothing to remember.
		if status == Used {
			return Used, nil
		}
		return Live, nil
	}
	sh := s.shard(t.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now >= sh.nextSweep {
		s.sweepLocked(sh, now)
		sh.nextSweep = now + sweepInterval
	}
	e, ok := sh.m[t.ID]
	if ok && e.exp > now {
		switch {
		case status == Used && e.status == Used && e.nonce == nonce && nonce != 0:
			return Live, nil // our own earlier write, retried
		case status == Used:
			return e.status, nil
		case e.status == Revoked:
			return Live, nil // already revoked
		}
		e.status, e.nonce = Revoked, 0
		e.exp = max(e.exp, exp)
		sh.m[t.ID] = e
		return Live, nil
	}
	if !ok {
		if s.count.Load() >= s.capacity && !s.makeRoom(sh, now) {
			return 0, ErrStoreFull
		}
		s.count.Add(1)
	}
	sh.m[t.ID] = memEntry{exp: exp, nonce: nonce, status: status}
	if n := len(sh.m); n > sh.peak {
		sh.peak = n
	}
	return Live, nil
}

// makeRoom sweeps expired entries when the store is at capacity: the held
// shard first, then, at most once per second, every shard.
func (s *MemoryStore) makeRoom(held *memShard, now uint32) bool {
	s.sweepLocked(held, now)
	if s.count.Load() < s.capacity {
		return true
	}
	last := s.lastFull.Load()
	if now-last < fullSweepEvery || !s.lastFull.CompareAndSwap(last, now) {
		return false
	}
	for i := range s.shards {
		if sh := &s.shards[i]; sh != held {
			sh.mu.Lock()
			s.sweepLocked(sh, now)
			sh.mu.Unlock()
		}
	}
	return s.count.Load() < s.capacity
}

// sweepLocked drops expired entries from sh, and rebuilds the map once it
// holds under a quarter of its peak, since Go maps never shrink.
func (s *MemoryStore) sweepLocked(sh *memShard, now uint32) {
	dropped := 0
	for id, e := range sh.m {
		if e.exp <= now {
			delete(sh.m, id)
			dropped++
		}
	}
	s.count.Add(int64(-dropped))
	if n := len(sh.m); sh.peak > 1024 && n < sh.peak/4 {
		m := make(map[JTI]memEntry, n)
		for id, e := range sh.m {
			m[id] = e
		}
		sh.m, sh.peak = m, n
	}
}

// Sweep drops every expired entry now and returns the number of entries
// left. The store also sweeps by itself as it is written to; call Sweep
// from a ticker if it may sit idle after a burst and the memory matters.
func (s *MemoryStore) Sweep() int {
	now := s.clock(s.now())
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.sweepLocked(sh, now)
		sh.nextSweep = now + sweepInterval
		sh.mu.Unlock()
	}
	return s.Len()
}

// Len returns the number of entries held, expired ones not yet swept
// included.
func (s *MemoryStore) Len() int { return int(s.count.Load()) }
