package jtiguard

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// MemoryConfig configures a MemoryStore. The zero value is usable.
type MemoryConfig struct {
	// Capacity bounds the number of entries: revoked or used tokens and
	// session families not yet expired. At capacity the store refuses to
	// record more, returning ErrStoreFull, rather than forget live state.
	// Default 1,000,000.
	Capacity int
	// Now is the clock; default the system clock (time.Now, read at the
	// cost of one clock reading, not two).
	Now func() time.Time
}

const (
	memShards     = 64
	defaultMemCap = 1_000_000
	sweepInterval = 5 // seconds between sweeps of a shard triggered by writes
)

// MemoryStore is the exact in-process store.Store, store.SessionStore,
// store.ProofStore and store.DeviceStore, the default for a single process. State lives in sharded hash tables keyed by the
// 16-byte jti or sid (the jti table holds no pointers, so the garbage
// collector never scans it), and each entry is dropped once its expiry has
// passed. Check takes no lock and writes no shared memory, so verifications
// on many cores do not slow each other down; writes take their shard's
// lock. Memory is bounded by Capacity, and a full store fails closed;
// revocations are recorded even at capacity, since each is bounded by its
// token's lifetime.
//
// Its memory begins when it is created: tokens of no session issued before
// then are Lost, and tokens of a session are Ended, because a process that
// restarts forgets what it had revoked and which families it had. Create
// it before issuing tokens.
type MemoryStore struct {
	// Read by Check, set at creation (began: once), so that the cache
	// line readers share is one no writer writes.
	now      func() time.Time
	epoch    int64 // unix seconds: the origin of the stored uint32 times; tokens of no session issued before are Lost
	capacity int64
	began    atomic.Bool // a family was ever begun: unknown ones are not Foreign

	shards [memShards]memShard
	count  atomic.Int64

	// sweepMu admits one whole-store sweep at a time; lastFull (under
	// it) is one past the second of the last one, which is done at most
	// once a second. A sweeper holds no other lock while it takes each
	// shard's in turn, so sweeps never deadlock with writers.
	sweepMu  sync.Mutex
	lastFull uint32

	// subMu guards the subject index; every change to a subject's set of
	// families (Begin, End, EndSubject, EndOthers, the limit) is made
	// under it, so the index and the families agree (but for families
	// swept away: see ended).
	subMu    sync.Mutex
	subjects map[string]*memIndex // subject -> its families, oldest first

	// ended lists families swept away whose index entries are still to go:
	// a sweep holds a shard's lock, and the index's lock comes first, so
	// the entries go at the next Begin, EndSubject or Sweep. endedMu is
	// taken last and alone.
	endedMu sync.Mutex
	ended   []memFamilyRef
}

type memFamilyRef struct {
	sid     JTI
	subject string
}

// memEntry is 16 bytes, so a map slot with its 16-byte key is 32.
type memEntry struct {
	nonce  uint64
	exp    uint32 // seconds since the store's epoch
	status store.Status
}

// memFamily is a Family with its rotation state; times are seconds since
// the store's epoch. Once stored in a famTable it is never modified: a
// writer stores a changed copy.
type memFamily struct {
	subject       string
	gen           uint64
	current, prev JTI
	nonce         uint64 // of the last rotation
	at            uint32 // last rotation
	idle          uint32 // idle timeout in seconds
	exp           uint32 // absolute end
	reused        bool
	rotated       bool     // at is a rotation's, not the begin's
	meta          *memMeta // what List shows; never modified (a step-up stores a copy)
}

// memMeta is what a family keeps for DeviceStore.List.
type memMeta struct {
	created             int64 // Unix ms
	client, acr         string
	deviceLabel, device string // label, IP prefix
}

// clone returns a copy of f, to store.
func (f memFamily) clone() *memFamily { return &f }

// end is when the family stops being live: its absolute end or its idle
// timeout after the last rotation, whichever comes first.
func (f *memFamily) end() uint32 { return min(f.exp, satAdd(f.at, f.idle)) }

// memShard is one shard: its tables, which readers search without a lock
// (memtable.go), and the lock its writers take. The padding keeps what
// readers load (the tables' addresses, written only when a table is
// rebuilt) off the cache lines writers write, whatever the alignment.
type memShard struct {
	m   jtiTable
	fam famTable
	_   [64]byte

	mu        sync.Mutex // held by every writer of the shard
	peak      int
	nextSweep uint32
	_         [64]byte
}

// grew records the shard's peak size after an insert, so a sweep knows when
// to rebuild its tables. The caller holds sh.
func (sh *memShard) grew() {
	if n := sh.m.len() + sh.fam.len(); n > sh.peak {
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
		cfg.Now = newWallClock().Now
	}
	s := &MemoryStore{capacity: int64(cfg.Capacity), now: cfg.Now, epoch: birth(cfg.Now()).Unix(), subjects: map[string]*memIndex{}}
	for i := range s.shards {
		s.shards[i].m.init()
		s.shards[i].fam.init()
	}
	return s, nil
}

// processStart is when this process began, as near as a package can tell.
var processStart = time.Now()

// birth returns the second at which a store created at now begins its
// memory: tokens issued (iat, whole seconds) before it are Lost. Token
// times have one-second precision, so a token issued in the second of the
// store's creation could be a predecessor's: a process that crashed and
// was restarted within that second. Only a process younger than a second
// can have such a predecessor; its stores wait (in real time, at most a
// second) for the next second to begin and start their memory there.
func birth(now time.Time) time.Time {
	born := now.Truncate(time.Second)
	if time.Since(processStart) < time.Second && !now.Equal(born) {
		born = born.Add(time.Second)
		time.Sleep(born.Sub(now))
	}
	return born
}

// clock converts t to seconds since the store's epoch, clamped to uint32
// (136 years).
func (s *MemoryStore) clock(t time.Time) uint32 {
	return uint32(min(max(t.Unix()-s.epoch, 0), math.MaxUint32))
}

func (s *MemoryStore) unclock(v uint32) time.Time { return time.Unix(s.epoch+int64(v), 0) }

func satAdd(a, b uint32) uint32 { return uint32(min(uint64(a)+uint64(b), math.MaxUint32)) }

func (s *MemoryStore) shard(id JTI) *memShard { return &s.shards[id[0]%memShards] }

// Check implements store.Store. It takes no lock, writes no shared memory
// and allocates nothing.
func (s *MemoryStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.predates(t) {
		return store.Lost, nil
	}
	e, ok := s.shard(t.ID).m.get(t.ID)
	if !ok && t.Session.IsZero() {
		return store.Live, nil // the common case needs no clock read
	}
	now := s.clock(s.now())
	if ok && e.exp > now {
		return e.status, nil
	}
	return s.familyStatus(t, now), nil
}

// predates reports whether t is a token of no session issued before the
// store's memory begins. A token of a session needs no such check: its
// family is unknown to the store.
func (s *MemoryStore) predates(t store.TokenRef) bool {
	return t.Session.IsZero() && t.IssuedAt.Unix() < s.epoch
}

// familyStatus reports Live for a token without a family, or the status of
// its family. Like Check, it takes no lock.
func (s *MemoryStore) familyStatus(t store.TokenRef, now uint32) store.Status {
	if t.Session.IsZero() {
		return store.Live
	}
	f := s.shard(t.Session).fam.get(t.Session)
	switch {
	case f == nil && !s.began.Load():
		return store.Foreign
	case f == nil || f.end() <= now:
		return store.Ended
	case f.reused:
		return store.Reused
	case f.gen != t.Generation:
		return store.Superseded
	}
	return store.Live
}

// Consume implements store.Store.
func (s *MemoryStore) Consume(ctx context.Context, t store.TokenRef, nonce uint64) (store.Status, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if s.predates(t) {
		return store.Lost, nil
	}
	// A family that ended first makes the token dead; one that ends after
	// the consume is ordered after it.
	if st := s.familyStatus(t, s.clock(s.now())); st != store.Live {
		return st, nil
	}
	return s.write(t, store.Used, nonce)
}

var _ store.ProofStore = (*MemoryStore)(nil)

// CheckAndConsume implements store.ProofStore: Check of the token, then,
// if it was Live, Consume of the proof, one shard lock at a time. A
// revocation or logout landing between the two is ordered after the call.
func (s *MemoryStore) CheckAndConsume(ctx context.Context, token, proof store.TokenRef, nonce uint64) (tokenStatus, proofStatus store.Status, err error) {
	if token.Subject != proof.Subject {
		return 0, 0, fmt.Errorf("%w: a proof's Subject must be its token's", ErrConfig)
	}
	st, err := s.Check(ctx, token)
	if err != nil || st != store.Live {
		return st, st, err
	}
	pst, err := s.Consume(ctx, proof, nonce)
	if err != nil {
		return 0, 0, err
	}
	return store.Live, pst, nil
}

// Revoke implements store.Store.
func (s *MemoryStore) Revoke(ctx context.Context, t store.TokenRef) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := s.write(t, store.Revoked, 0)
	return err
}

// write records status for t. For Used it is an insert-if-absent that
// reports Live to the caller whose insert (or whose nonce) holds; for
// Revoked it overwrites, and is admitted beyond capacity.
func (s *MemoryStore) write(t store.TokenRef, status store.Status, nonce uint64) (store.Status, error) {
	now, exp := s.clock(s.now()), s.clock(t.ExpiresAt)
	if exp <= now {
		// Expired tokens are rejected on their own; nothing to remember.
		if status == store.Used {
			return store.Used, nil
		}
		return store.Live, nil
	}
	for swept := false; ; swept = true {
		st, full := s.tryWrite(t, status, nonce, now, exp)
		if !full {
			return st, nil
		}
		if swept || !s.sweepAll(now) {
			return 0, ErrStoreFull
		}
	}
}

// tryWrite is one attempt of write, under t's shard lock only; full
// reports that the store is at capacity (the caller sweeps and retries).
func (s *MemoryStore) tryWrite(t store.TokenRef, status store.Status, nonce uint64, now, exp uint32) (st store.Status, full bool) {
	sh := s.shard(t.ID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.maybeSweep(sh, now)
	e, ok := sh.m.get(t.ID)
	if ok && e.exp > now {
		switch {
		case status == store.Used && e.status == store.Used && e.nonce == nonce && nonce != 0:
			return store.Live, false // our own earlier write, retried
		case status == store.Used:
			return e.status, false
		case e.status == store.Revoked:
			return store.Live, false // already revoked
		}
		e.status, e.nonce = store.Revoked, 0
		e.exp = max(e.exp, exp)
		sh.m.put(t.ID, e)
		return store.Live, false
	}
	switch {
	case ok: // an expired entry, replaced in place
	case status == store.Revoked:
		s.count.Add(1) // never refused for capacity
	case !s.reserve(sh, now):
		return 0, true
	}
	sh.m.put(t.ID, memEntry{exp: exp, nonce: nonce, status: status})
	sh.grew()
	return store.Live, false
}

// reserve counts one more entry if the store is below capacity, sweeping
// the held shard first when it is not. The caller holds sh.
func (s *MemoryStore) reserve(sh *memShard, now uint32) bool {
	if s.count.Load() >= s.capacity {
		s.sweepLocked(sh, now)
		if s.count.Load() >= s.capacity {
			return false
		}
	}
	s.count.Add(1)
	return true
}

// Begin implements store.SessionStore.
func (s *MemoryStore) Begin(ctx context.Context, f store.Family) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wall := s.now()
	now := s.clock(wall)
	created := f.Created
	if created.IsZero() {
		created = wall
	}
	mf := memFamily{
		subject: f.Subject,
		gen:     f.Generation,
		current: f.Refresh,
		at:      now,
		idle:    uint32(min(max(f.IdleTimeout/time.Second, 1), math.MaxUint32)),
		exp:     s.clock(f.ExpiresAt),
		meta:    &memMeta{created: created.UnixMilli(), client: f.ClientID, acr: f.ACR, deviceLabel: f.Device.Label, device: f.Device.IP},
	}
	if mf.exp <= now {
		return fmt.Errorf("%w: family already expired", ErrConfig)
	}
	for swept := false; ; swept = true {
		full, err := s.tryBegin(f.ID, mf, max(f.Limit, 0), now)
		if !full {
			return err
		}
		if swept || !s.sweepAll(now) {
			return ErrStoreFull
		}
	}
}

// tryBegin is one attempt of Begin: the family and its index entry are
// added under the index lock, so EndSubject (which holds it throughout)
// is ordered entirely before or after, and so are the families the limit
// ends. The index forgets ended families as they are swept (unindexEnded),
// so a login costs the same however many families its subject has, but
// for the limit: a subject at it has its index read whole (O(limit)).
// full reports that the store is at capacity (nothing was changed).
func (s *MemoryStore) tryBegin(sid JTI, mf memFamily, limit int, now uint32) (full bool, err error) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.unindexEnded()
	sh := s.shard(sid)
	sh.mu.Lock()
	s.maybeSweep(sh, now)
	if sh.fam.get(sid) != nil {
		sh.mu.Unlock()
		return false, fmt.Errorf("%w: family exists", ErrConfig)
	}
	if !s.reserve(sh, now) {
		sh.mu.Unlock()
		return true, nil
	}
	sh.mu.Unlock()
	// Counted, not yet stored: no one else can store sid (Begin holds
	// subMu), and the oldest families end before it is seen.
	x := s.subjects[mf.subject]
	if x == nil {
		x = &memIndex{created: map[JTI]int64{}}
		s.subjects[mf.subject] = x
	}
	s.limit(x, mf.subject, limit, now)
	sh.mu.Lock()
	sh.fam.put(sid, &mf)
	sh.grew()
	sh.mu.Unlock()
	if !s.began.Load() { // readers share its cache line: write it once
		s.began.Store(true)
	}
	x.add(sid, mf.meta.created)
	return false, nil
}

// limit ends subject's oldest live families, so that with one more at
// most limit are live (0: no limit), and forgets the index entries of
// families gone. The caller holds subMu.
func (s *MemoryStore) limit(x *memIndex, subject string, limit int, now uint32) {
	if limit <= 0 || x.len() < limit {
		return
	}
	var live, gone []JTI
	for _, e := range x.order {
		switch f := s.shard(e.id).fam.get(e.id); {
		case f == nil || f.subject != subject || f.end() <= now:
			gone = append(gone, e.id)
		case !f.reused: // a reused family is not live, and stays for EndSubject
			live = append(live, e.id)
		}
	}
	for _, sid := range live[:max(len(live)-limit+1, 0)] {
		s.endLocked(subject, sid)
		gone = append(gone, sid)
	}
	x.remove(gone...)
}

// endLocked ends the family sid if it is subject's, and reports whether
// it was live (not revoked for reuse, not expired). The caller holds
// subMu and updates the index.
func (s *MemoryStore) endLocked(subject string, sid JTI) (live bool) {
	sh := s.shard(sid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	f := sh.fam.get(sid)
	if f == nil || f.subject != subject {
		return false
	}
	sh.fam.del(sid)
	s.count.Add(-1)
	return !f.reused && f.end() > s.clock(s.now())
}

// Rotate implements store.SessionStore.
func (s *MemoryStore) Rotate(ctx context.Context, r store.Rotation) (store.Rotated, error) {
	if err := ctx.Err(); err != nil {
		return store.Rotated{}, err
	}
	now := s.clock(s.now())
	// The presented token's own entry is read first, holding no lock (no
	// two shard locks are ever held at once): a revocation that returned
	// before this call is seen.
	if !r.Presented.IsZero() {
		e, ok := s.shard(r.Presented).m.get(r.Presented)
		if ok && e.exp > now && e.status == store.Revoked {
			return store.Rotated{Status: store.Revoked}, nil
		}
	}
	sh := s.shard(r.Session)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p := sh.fam.get(r.Session)
	if p == nil || p.end() <= now || p.subject != r.Subject {
		return store.Rotated{Status: store.Ended}, nil
	}
	f := *p // stored families are never modified: changes are stored as a copy
	answer := func(st store.Status, repeat bool) (store.Rotated, error) {
		return store.Rotated{Status: st, Next: f.current, Generation: f.gen, At: s.unclock(f.at), ExpiresAt: s.unclock(f.exp), Repeat: repeat}, nil
	}
	if f.reused {
		return answer(store.Reused, false)
	}
	if r.NewGeneration {
		switch {
		case f.gen == r.Generation:
			f.gen++
			f.prev, f.current, f.nonce, f.at, f.rotated = JTI{}, r.Next, r.Nonce, now, true
			if r.ACR != "" && f.meta != nil {
				m := *f.meta
				m.acr = r.ACR
				f.meta = &m
			}
			sh.fam.put(r.Session, f.clone())
			return answer(store.Live, false)
		case f.gen == r.Generation+1 && f.nonce == r.Nonce && r.Nonce != 0:
			return answer(store.Live, true) // this call, retried
		}
		return answer(store.Superseded, false)
	}
	switch {
	case f.gen == r.Generation && f.current == r.Presented:
		f.prev, f.current, f.nonce, f.at, f.rotated = r.Presented, r.Next, r.Nonce, now, true
		sh.fam.put(r.Session, f.clone())
		return answer(store.Live, false)
	case f.gen == r.Generation && f.prev == r.Presented && !f.prev.IsZero() &&
		((f.nonce == r.Nonce && r.Nonce != 0) || (r.Grace > 0 && now-f.at <= uint32(r.Grace/time.Second))):
		return answer(store.Live, true) // retried call, or a lost response within grace
	}
	f.reused = true
	sh.fam.put(r.Session, f.clone())
	return answer(store.Reused, false)
}

// End implements store.SessionStore. The family and its index entry go
// together, under the index lock.
func (s *MemoryStore) End(ctx context.Context, subject string, sid JTI) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.endLocked(subject, sid)
	if x := s.subjects[subject]; x != nil {
		if x.remove(sid); x.len() == 0 {
			delete(s.subjects, subject)
		}
	}
	return nil
}

// EndSubject implements store.SessionStore. It holds the index lock throughout,
// so a concurrent Begin is ordered entirely before (and ended) or after.
func (s *MemoryStore) EndSubject(ctx context.Context, subject string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.unindexEnded()
	n := 0
	if x := s.subjects[subject]; x != nil {
		for _, e := range x.order {
			if s.endLocked(subject, e.id) {
				n++ // only families that were live count as ended
			}
		}
	}
	delete(s.subjects, subject)
	return n, nil
}

var _ store.DeviceStore = (*MemoryStore)(nil)

// Pages of MemoryStore.List, as the Redis store's.
const (
	memDefaultPage = 50
	memMaxPage     = 200
)

// List implements store.DeviceStore: up to limit (50 when limit <= 0, at
// most 200) of subject's live families, oldest (by Created, then sid)
// first, after cursor. It holds the index lock, so a page is a consistent
// view; entries of families gone are forgotten on the way.
func (s *MemoryStore) List(ctx context.Context, subject, cursor string, limit int) ([]store.Session, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	switch {
	case limit <= 0:
		limit = memDefaultPage
	case limit > memMaxPage:
		limit = memMaxPage
	}
	after, err := parseMemCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.unindexEnded()
	x := s.subjects[subject]
	if x == nil {
		return nil, "", nil
	}
	now := s.clock(s.now())
	var (
		page []store.Session
		gone []JTI
		next string
	)
	i := 0
	if cursor != "" {
		i = x.after(after)
	}
	for ; i < len(x.order); i++ {
		e := x.order[i]
		if len(page) == limit {
			last := x.order[i-1]
			next = strconv.FormatInt(last.created, 10) + "." + last.id.String()
			break
		}
		f := s.shard(e.id).fam.get(e.id)
		switch {
		case f == nil || f.subject != subject || f.end() <= now:
			gone = append(gone, e.id)
		case !f.reused:
			page = append(page, s.session(e.id, f))
		}
	}
	// The entry at the cursor is the page's last, listed: it is not gone.
	if x.remove(gone...); x.len() == 0 {
		delete(s.subjects, subject)
	}
	return page, next, nil
}

// session is the family f, sid, as List reports it.
func (s *MemoryStore) session(sid JTI, f *memFamily) store.Session {
	m := f.meta
	if m == nil {
		m = &memMeta{}
	}
	ss := store.Session{
		Family: store.Family{
			ID: sid, Subject: f.subject, Generation: f.gen,
			ExpiresAt: s.unclock(f.exp), IdleTimeout: time.Duration(f.idle) * time.Second,
			Created: time.UnixMilli(m.created), ClientID: m.client, ACR: m.acr,
			Device: store.Device{Label: m.deviceLabel, IP: m.device},
		},
		Refreshed: time.UnixMilli(m.created),
	}
	if f.rotated {
		ss.Refreshed = s.unclock(f.at)
	}
	return ss
}

// parseMemCursor reads a cursor of List: "<created ms>.<sid>".
func parseMemCursor(c string) (memIndexEntry, error) {
	if c == "" {
		return memIndexEntry{}, nil
	}
	ms, sid, ok := strings.Cut(c, ".")
	created, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		return memIndexEntry{}, fmt.Errorf("%w: not a List cursor", ErrConfig)
	}
	id, err := ParseJTI(sid)
	if err != nil {
		return memIndexEntry{}, fmt.Errorf("%w: not a List cursor", ErrConfig)
	}
	return memIndexEntry{created: created, id: id}, nil
}

// EndOthers implements store.DeviceStore: EndSubject but for keep, under
// the index lock throughout.
func (s *MemoryStore) EndOthers(ctx context.Context, subject string, keep JTI) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.unindexEnded()
	x := s.subjects[subject]
	if x == nil {
		return 0, nil
	}
	n := 0
	var gone []JTI
	for _, e := range x.order {
		if e.id == keep {
			continue
		}
		if s.endLocked(subject, e.id) {
			n++
		}
		gone = append(gone, e.id)
	}
	if x.remove(gone...); x.len() == 0 {
		delete(s.subjects, subject)
	}
	return n, nil
}

// memIndex is a subject's families, ordered by creation (then sid) for
// List and the limit. Only the holder of subMu uses it.
type memIndex struct {
	created map[JTI]int64 // sid -> created (Unix ms)
	order   []memIndexEntry
}

type memIndexEntry struct {
	created int64
	id      JTI
}

func compareEntries(a, b memIndexEntry) int {
	if a.created != b.created {
		if a.created < b.created {
			return -1
		}
		return 1
	}
	return bytes.Compare(a.id[:], b.id[:])
}

func (x *memIndex) len() int { return len(x.order) }

func (x *memIndex) add(id JTI, created int64) {
	if _, ok := x.created[id]; ok {
		return
	}
	x.created[id] = created
	e := memIndexEntry{created, id}
	i, _ := slices.BinarySearchFunc(x.order, e, compareEntries)
	x.order = slices.Insert(x.order, i, e)
}

// remove drops ids from the index in one pass over it.
func (x *memIndex) remove(ids ...JTI) {
	n := 0
	for _, id := range ids {
		if _, ok := x.created[id]; ok {
			delete(x.created, id)
			n++
		}
	}
	if n > 0 {
		x.compact()
	}
}

// compact drops the entries no longer in created.
func (x *memIndex) compact() {
	x.order = slices.DeleteFunc(x.order, func(e memIndexEntry) bool {
		_, ok := x.created[e.id]
		return !ok
	})
}

// after returns the position of the first entry after e, whether or not e
// is in the index.
func (x *memIndex) after(e memIndexEntry) int {
	i, found := slices.BinarySearchFunc(x.order, e, compareEntries)
	if found {
		i++
	}
	return i
}

// maybeSweep sweeps sh if its sweep is due. The caller holds sh.
func (s *MemoryStore) maybeSweep(sh *memShard, now uint32) {
	if now >= sh.nextSweep {
		s.sweepLocked(sh, now)
		sh.nextSweep = now + sweepInterval
	}
}

// sweepAll sweeps every shard, at most once per second, and reports
// whether the store is below capacity. The caller holds no lock: the
// sweeper takes one shard's lock at a time.
func (s *MemoryStore) sweepAll(now uint32) bool {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if s.lastFull != now+1 {
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			s.sweepLocked(sh, now)
			sh.mu.Unlock()
		}
		s.lastFull = now + 1
	}
	return s.count.Load() < s.capacity
}

// sweepLocked drops expired entries and families from sh, and rebuilds its
// tables once they hold under a quarter of their peak, since a table
// shrinks only when rebuilt (it also rebuilds itself, at its size or
// larger, when its slots run out). The caller holds sh.
func (s *MemoryStore) sweepLocked(sh *memShard, now uint32) {
	dropped := sh.m.sweep(now)
	var ended []memFamilyRef
	for sid, f := range sh.fam.all() {
		if f.end() <= now {
			sh.fam.del(sid)
			ended = append(ended, memFamilyRef{sid, f.subject})
			dropped++
		}
	}
	if len(ended) > 0 {
		s.endedMu.Lock()
		s.ended = append(s.ended, ended...)
		s.endedMu.Unlock()
	}
	s.count.Add(int64(-dropped))
	if n := sh.m.len() + sh.fam.len(); sh.peak > 64 && n < sh.peak/4 {
		sh.m.compact()
		sh.fam.compact()
		sh.peak = n
	}
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
	// The subject index forgets ended families here and at each Begin.
	s.subMu.Lock()
	s.unindexEnded()
	for subject, x := range s.subjects {
		if s.prune(x); x.len() == 0 {
			delete(s.subjects, subject)
		}
	}
	s.subMu.Unlock()
	return s.Len()
}

// unindexEnded drops the index entries of families swept away, one pass
// over each subject's index. The caller holds subMu.
func (s *MemoryStore) unindexEnded() {
	s.endedMu.Lock()
	ended := s.ended
	s.ended = nil
	s.endedMu.Unlock()
	if len(ended) == 0 {
		return
	}
	touched := map[string]*memIndex{}
	for _, f := range ended {
		if x := s.subjects[f.subject]; x != nil {
			if _, ok := x.created[f.sid]; ok {
				delete(x.created, f.sid)
				touched[f.subject] = x
			}
		}
	}
	for subject, x := range touched {
		if x.compact(); x.len() == 0 {
			delete(s.subjects, subject)
		}
	}
}

// prune drops from a subject's index the families that have been swept
// away. The caller holds subMu (the lock order is subMu, then a shard;
// reading a family takes no lock).
func (s *MemoryStore) prune(x *memIndex) {
	var gone []JTI
	for _, e := range x.order {
		if s.shard(e.id).fam.get(e.id) == nil {
			gone = append(gone, e.id)
		}
	}
	x.remove(gone...)
}

// Len returns the number of entries and families held, expired ones not
// yet swept included.
func (s *MemoryStore) Len() int { return int(s.count.Load()) }
