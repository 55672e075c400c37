package jtiguard

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryConfig configures a MemoryStore. The zero value is usable.
type MemoryConfig struct {
	// Capacity bounds the number of entries: revoked or used tokens and
	// session families not yet expired. At capacity the store refuses to
	// record more, returning ErrStoreFull, rather than forget live state.
	// Default 1,000,000.
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

// MemoryStore is the exact in-process Store and SessionStore, the default
// for a single process. State lives in sharded maps keyed by the 16-byte
// jti or sid (the jti map holds no pointers, so the garbage collector never
// scans it), and each entry is dropped once its expiry has passed. Memory
// is bounded by Capacity, and a full store fails closed.
//
// Its memory begins when it is created: tokens issued before then are Lost,
// because a process that restarts forgets what it had revoked and which
// families it had. Create it before issuing tokens.
type MemoryStore struct {
	shards   [memShards]memShard
	count    atomic.Int64
	capacity int64
	now      func() time.Time
	epoch    int64 // unix seconds; tokens issued before are Lost
	lastFull atomic.Uint32

	subMu    sync.Mutex
	subjects map[string]map[JTI]struct{} // subject -> its families, for EndSubject
}

// memEntry is 16 bytes, so a map slot with its 16-byte key is 32.
type memEntry struct {
	nonce  uint64
	exp    uint32 // seconds since the store's epoch
	status Status
}

// memFamily is a Family with its rotation state; times are seconds since
// the store's epoch.
type memFamily struct {
	subject       string
	gen           uint64
	current, prev JTI
	nonce         uint64 // of the last rotation
	at            uint32 // last rotation
	idle          uint32 // idle timeout in seconds
	exp           uint32 // absolute end
	reused        bool
}

// end is when the family stops being live: its absolute end or its idle
// timeout after the last rotation, whichever comes first.
func (f *memFamily) end() uint32 { return min(f.exp, satAdd(f.at, f.idle)) }

type memShard struct {
	mu        sync.RWMutex
	m         map[JTI]memEntry
	fam       map[JTI]memFamily
	peak      int
	nextSweep uint32
	_         [24]byte // keep shards on separate cache lines
}

// grew records the shard's peak size after an insert, so a sweep knows when
// to rebuild its maps. The caller holds sh.
func (sh *memShard) grew() {
	if n := len(sh.m) + len(sh.fam); n > sh.peak {
		sh.peak = n
	}
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
	s := &MemoryStore{capacity: int64(cfg.Capacity), now: cfg.Now, epoch: cfg.Now().Unix(), subjects: map[string]map[JTI]struct{}{}}
	for i := range s.shards {
		s.shards[i].m = make(map[JTI]memEntry)
		s.shards[i].fam = make(map[JTI]memFamily)
	}
	return s, nil
}

// clock converts t to seconds since the store's epoch, clamped to uint32
// (136 years).
func (s *MemoryStore) clock(t time.Time) uint32 {
	return uint32(min(max(t.Unix()-s.epoch, 0), math.MaxUint32))
}

func (s *MemoryStore) unclock(v uint32) time.Time { return time.Unix(s.epoch+int64(v), 0) }

func satAdd(a, b uint32) uint32 { return uint32(min(uint64(a)+uint64(b), math.MaxUint32)) }

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
	if !ok && t.Session.IsZero() {
		return Live, nil // the common case needs no clock read
	}
	now := s.clock(s.now())
	if ok && e.exp > now {
		return e.status, nil
	}
	return s.familyStatus(t, now), nil
}

// familyStatus reports Live for a token without a family, or the status of
// its family.
func (s *MemoryStore) familyStatus(t TokenRef, now uint32) Status {
	if t.Session.IsZero() {
		return Live
	}
	sh := s.shard(t.Session)
	sh.mu.RLock()
	f, ok := sh.fam[t.Session]
	sh.mu.RUnlock()
	switch {
	case !ok || f.end() <= now:
		return Ended
	case f.reused:
		return Reused
	case f.gen != t.Generation:
		return Superseded
	}
	return Live
}

// Consume implements Store.
func (s *MemoryStore) Consume(ctx context.Context, t TokenRef, nonce uint64) (Status, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if t.IssuedAt.Unix() < s.epoch {
		return Lost, nil
	}
	// A family that ended first makes the token dead; one that ends after
	// the consume is ordered after it.
	if st := s.familyStatus(t, s.clock(s.now())); st != Live {
		return st, nil
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
	s.maybeSweep(sh, now)
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
	if !ok && !s.reserve(sh, now) {
		return 0, ErrStoreFull
	}
	sh.m[t.ID] = memEntry{exp: exp, nonce: nonce, status: status}
	sh.grew()
	return Live, nil
}

// reserve counts one more entry, making room by sweeping when at capacity.
// The caller holds sh.
func (s *MemoryStore) reserve(sh *memShard, now uint32) bool {
	if s.count.Load() >= s.capacity && !s.makeRoom(sh, now) {
		return false
	}
	s.count.Add(1)
	return true
}

// Begin implements SessionStore.
func (s *MemoryStore) Begin(ctx context.Context, f Family) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock(s.now())
	mf := memFamily{
		subject: f.Subject,
		gen:     f.Generation,
		current: f.Refresh,
		at:      now,
		idle:    uint32(min(max(f.IdleTimeout/time.Second, 1), math.MaxUint32)),
		exp:     s.clock(f.ExpiresAt),
	}
	if mf.exp <= now {
		return fmt.Errorf("%w: family already expired", ErrConfig)
	}
	sh := s.shard(f.ID)
	sh.mu.Lock()
	s.maybeSweep(sh, now)
	if _, dup := sh.fam[f.ID]; dup {
		sh.mu.Unlock()
		return fmt.Errorf("%w: family exists", ErrConfig)
	}
	if !s.reserve(sh, now) {
		sh.mu.Unlock()
		return ErrStoreFull
	}
	sh.fam[f.ID] = mf
	sh.grew()
	sh.mu.Unlock()

	s.subMu.Lock()
	fams := s.subjects[f.Subject]
	if fams == nil {
		fams = map[JTI]struct{}{}
		s.subjects[f.Subject] = fams
	}
	fams[f.ID] = struct{}{}
	s.subMu.Unlock()
	return nil
}

// Rotate implements SessionStore.
func (s *MemoryStore) Rotate(ctx context.Context, r Rotation) (Rotated, error) {
	if err := ctx.Err(); err != nil {
		return Rotated{}, err
	}
	now := s.clock(s.now())
	sh := s.shard(r.Session)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f, ok := sh.fam[r.Session]
	if !ok || f.end() <= now {
		return Rotated{Status: Ended}, nil
	}
	answer := func(st Status, repeat bool) (Rotated, error) {
		return Rotated{Status: st, Next: f.current, Generation: f.gen, At: s.unclock(f.at), ExpiresAt: s.unclock(f.exp), Repeat: repeat}, nil
	}
	if f.reused {
		return answer(Reused, false)
	}
	if r.NewGeneration {
		switch {
		case f.gen == r.Generation:
			f.gen++
			f.prev, f.current, f.nonce, f.at = JTI{}, r.Next, r.Nonce, now
			sh.fam[r.Session] = f
			return answer(Live, false)
		case f.gen == r.Generation+1 && f.nonce == r.Nonce && r.Nonce != 0:
			return answer(Live, true) // this call, retried
		}
		return answer(Superseded, false)
	}
	switch {
	case f.gen == r.Generation && f.current == r.Presented:
		f.prev, f.current, f.nonce, f.at = r.Presented, r.Next, r.Nonce, now
		sh.fam[r.Session] = f
		return answer(Live, false)
	case f.gen == r.Generation && f.prev == r.Presented && !f.prev.IsZero() &&
		((f.nonce == r.Nonce && r.Nonce != 0) || (r.Grace > 0 && now-f.at <= uint32(r.Grace/time.Second))):
		return answer(Live, true) // retried call, or a lost response within grace
	}
	f.reused = true
	sh.fam[r.Session] = f
	return answer(Reused, false)
}

// End implements SessionStore.
func (s *MemoryStore) End(ctx context.Context, sid JTI) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sh := s.shard(sid)
	sh.mu.Lock()
	f, ok := sh.fam[sid]
	if ok {
		delete(sh.fam, sid)
		s.count.Add(-1)
	}
	sh.mu.Unlock()
	if ok {
		s.unindex(f.subject, sid)
	}
	return nil
}

// EndSubject implements SessionStore.
func (s *MemoryStore) EndSubject(ctx context.Context, subject string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.subMu.Lock()
	fams := s.subjects[subject]
	delete(s.subjects, subject)
	s.subMu.Unlock()
	n := 0
	for sid := range fams {
		sh := s.shard(sid)
		sh.mu.Lock()
		if f, ok := sh.fam[sid]; ok && f.subject == subject {
			delete(sh.fam, sid)
			s.count.Add(-1)
			n++
		}
		sh.mu.Unlock()
	}
	return n, nil
}

func (s *MemoryStore) unindex(subject string, sid JTI) {
	s.subMu.Lock()
	if fams := s.subjects[subject]; fams != nil {
		delete(fams, sid)
		if len(fams) == 0 {
			delete(s.subjects, subject)
		}
	}
	s.subMu.Unlock()
}

// maybeSweep sweeps sh if its sweep is due. The caller holds sh.
func (s *MemoryStore) maybeSweep(sh *memShard, now uint32) {
	if now >= sh.nextSweep {
		s.sweepLocked(sh, now)
		sh.nextSweep = now + sweepInterval
	}
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

// sweepLocked drops expired entries and families from sh, and rebuilds its
// maps once they hold under a quarter of their peak, since Go maps never
// shrink. The caller holds sh.
func (s *MemoryStore) sweepLocked(sh *memShard, now uint32) {
	dropped := 0
	for id, e := range sh.m {
		if e.exp <= now {
			delete(sh.m, id)
			dropped++
		}
	}
	var ended []memFamilyRef
	for sid, f := range sh.fam {
		if f.end() <= now {
			delete(sh.fam, sid)
			ended = append(ended, memFamilyRef{sid, f.subject})
			dropped++
		}
	}
	s.count.Add(int64(-dropped))
	if n := len(sh.m) + len(sh.fam); sh.peak > 64 && n < sh.peak/4 {
		m := make(map[JTI]memEntry, len(sh.m))
		for id, e := range sh.m {
			m[id] = e
		}
		fam := make(map[JTI]memFamily, len(sh.fam))
		for id, f := range sh.fam {
			fam[id] = f
		}
		sh.m, sh.fam, sh.peak = m, fam, n
	}
	for _, f := range ended {
		s.unindex(f.subject, f.sid) // lock order: shard, then subMu
	}
}

type memFamilyRef struct {
	sid     JTI
	subject string
}

// Sweep drops every expired entry and family now and returns the number
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

// Len returns the number of entries and families held, expired ones not
// yet swept included.
func (s *MemoryStore) Len() int { return int(s.count.Load()) }
