package jtiguard

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"sync/atomic"

	"github.com/jtiguard/jtiguard/store"
)

// The MemoryStore's tables: hash tables keyed by a 16-byte random id (a
// jti or sid) that readers search without a lock, without writing to
// memory and without allocating, while one writer at a time (the owner's
// lock) changes them.
//
// A table is open-addressed in groups of 8 slots. Each group has a control
// word: byte j is 0 while slot j is free, or the key's tag (7 bits of its
// hash, high bit set) once it is bound to a key. A slot, once bound, keeps
// its key for the table's life: deleting an entry zeroes its cell (a
// tombstone), it never frees the slot. Only a rebuild, which copies the
// held entries into a new table published through an atomic.Pointer,
// reclaims tombstones. Lookups probe groups from the key's home group in
// triangular steps (which visit every group of a power-of-two table) and
// stop at the first group with a free slot; at most 7/8 of the slots are
// ever bound, so there always is one.
//
// Why a reader needs no lock. Every shared word (control words, key words,
// cells) is read and written with sync/atomic, whose operations Go orders
// sequentially consistently. The writer stores a slot's key words before
// the control word that binds it, so a reader that sees the tag sees the
// key; the key then never changes in that table, so it cannot be torn.
// A cell is one atomic word as far as readers are concerned (the jti
// state, or a pointer to an immutable family): a reader sees one whole
// write or another, never a mix.
//
// Linearizability. A lookup that finds its key takes effect at its load
// of the cell; one that finds none, at its load of the control word of the
// group where it stops: that group had a free slot, and since bound slots
// are never freed, every group before it on the key's probe sequence was
// full already and the key bound in none, and the key could only be bound
// in that group or one before it, so it was not in the table then. An
// insert takes effect at its store of the cell (binding the slot first
// publishes a key whose cell is still zero, which reads as absent), a
// delete at its store of zero. A writer that rebuilds copies the table
// under its lock and publishes the copy; from then on it writes only the
// copy. A reader that loaded the old table reads a state the table had at
// some moment between that load and its reads (the state at publication,
// if it reads after it), which is within its call, so lookups stay
// linearizable across rebuilds.
//
// A key is hashed with one multiply (Fibonacci hashing of its two halves
// folded): the home group is the top bits, the tag 7 bits of the two
// halves of the product folded. A jti is 128 random bits, but ids made by
// a counter (tests, benchmarks, a deterministic issuer) must spread too:
// used raw, their bytes would crowd a few groups under one tag. There is
// no seed: the store is asked only about ids the issuer minted (or a
// SHA-256 prefix, for DPoP proofs), in tokens verified first.

const (
	groupSlots = 8
	groupFull  = 7 // bound slots per group, on average, that trigger a rebuild
	lsbs       = 0x0101010101010101
	msbs       = 0x8080808080808080
)

// slot is a key and its cell.
type slot[C any] struct {
	k0, k1 atomic.Uint64
	cell   C
}

// table is one generation of a table. ctrl, slots and mask never change;
// used and live are the writer's, kept apart from what readers read.
type table[C any] struct {
	ctrl  []atomic.Uint64
	slots []slot[C]
	mask  uint64 // groups - 1
	shift uint8  // 64 - log2(groups): a hash's top bits are its home group
	_     [64]byte
	used  int // slots bound
	live  int // cells holding an entry
}

// newTable returns an empty table with room for n keys.
func newTable[C any](n int) *table[C] {
	shift := uint8(64)
	for (1<<(64-shift))*groupFull < n {
		shift--
	}
	groups := 1 << (64 - shift)
	return &table[C]{ctrl: make([]atomic.Uint64, groups), slots: make([]slot[C], groups*groupSlots), mask: uint64(groups - 1), shift: shift}
}

func splitKey(id JTI) (k0, k1 uint64) {
	return binary.LittleEndian.Uint64(id[:8]), binary.LittleEndian.Uint64(id[8:])
}

// hashKey returns the hash of the key k0, k1: its top bits choose the home
// group, its low 7 bits the tag.
func hashKey(k0, k1 uint64) uint64 {
	h := (k0 ^ bits.RotateLeft64(k1, 32)) * 0x9E3779B97F4A7C15
	return h ^ h>>32
}

// tagOf returns the control byte of a slot bound to a key of hash h: never
// 0, the byte of a free slot.
func tagOf(h uint64) uint64 { return h&0x7F | 0x80 }

// probe returns the slot bound to id or, if none is, the group where the
// search stopped (which has a free slot) and its control word.
func (t *table[C]) probe(id JTI) (s *slot[C], g, w uint64) {
	k0, k1 := splitKey(id)
	h := hashKey(k0, k1)
	tag := tagOf(h) * lsbs
	g = h >> t.shift
	for step := uint64(1); ; step++ {
		w = t.ctrl[g].Load()
		// The bytes of w equal to the tag have their high bit set in m,
		// and some others may (a borrow), but never a free one: the
		// keys are compared.
		x := w ^ tag
		for m := (x - lsbs) &^ x & msbs; m != 0; m &= m - 1 {
			s := &t.slots[g*groupSlots+uint64(bits.TrailingZeros64(m)/8)]
			if s.k0.Load() == k0 && s.k1.Load() == k1 {
				return s, g, w
			}
		}
		if ^w&msbs != 0 {
			return nil, g, w
		}
		g = (g + step) & t.mask
	}
}

// find returns id's cell, or nil if no slot is bound to id. It takes no
// lock.
func (t *table[C]) find(id JTI) *C {
	if s, _, _ := t.probe(id); s != nil {
		return &s.cell
	}
	return nil
}

// claim returns id's cell, binding a free slot to id if none is; nil if
// that would bind more than 7/8 of the slots (the caller rebuilds). The
// caller is the writer.
func (t *table[C]) claim(id JTI) *C {
	s, g, w := t.probe(id)
	if s != nil {
		return &s.cell
	}
	if t.used >= len(t.ctrl)*groupFull {
		return nil
	}
	j := uint64(bits.TrailingZeros64(^w&msbs) / 8)
	s = &t.slots[g*groupSlots+j]
	k0, k1 := splitKey(id)
	s.k0.Store(k0)
	s.k1.Store(k1)
	t.ctrl[g].Store(w | tagOf(hashKey(k0, k1))<<(8*j)) // publishes the key, its cell still zero
	t.used++
	return &s.cell
}

// all yields every bound slot's key and cell, tombstones included. The
// caller is the writer.
func (t *table[C]) all() iter.Seq2[JTI, *C] {
	return func(yield func(JTI, *C) bool) {
		for g := range t.ctrl {
			for m := t.ctrl[g].Load() & msbs; m != 0; m &= m - 1 {
				s := &t.slots[g*groupSlots+bits.TrailingZeros64(m)/8]
				var id JTI
				binary.LittleEndian.PutUint64(id[:8], s.k0.Load())
				binary.LittleEndian.PutUint64(id[8:], s.k1.Load())
				if !yield(id, &s.cell) {
					return
				}
			}
		}
	}
}

// rebuilt returns a new table holding the entries of t (the cells for
// which held reports true, copied by move), sized so that as many again
// fit before the next rebuild. The caller is the writer, and publishes the
// result.
func (t *table[C]) rebuilt(held func(*C) bool, move func(dst, src *C)) *table[C] {
	n := newTable[C](max(2*t.live, 1))
	for id, c := range t.all() {
		if held(c) {
			move(n.claim(id), c) // never nil: n has room for twice t.live
			n.live++
		}
	}
	return n
}

// jtiTable maps a jti to its memEntry. Its slots and control words hold
// no pointers, so the garbage collector never scans them.
type jtiTable struct {
	cur atomic.Pointer[table[jtiCell]]
}

// jtiCell is one jti's state: meta is exp<<8 | status, 0 when it holds
// none. nonce is meaningful to the writer only: a reader may see it from
// another write than meta.
type jtiCell struct{ meta, nonce atomic.Uint64 }

func heldJTI(c *jtiCell) bool { return c.meta.Load() != 0 }

func moveJTI(dst, src *jtiCell) {
	dst.nonce.Store(src.nonce.Load())
	dst.meta.Store(src.meta.Load())
}

func (m *jtiTable) init() { m.cur.Store(newTable[jtiCell](0)) }

// get returns id's entry. It takes no lock, writes nothing and allocates
// nothing; e.nonce is exact only for the writer.
func (m *jtiTable) get(id JTI) (e memEntry, ok bool) {
	c := m.cur.Load().find(id)
	if c == nil {
		return memEntry{}, false
	}
	v := c.meta.Load()
	if v == 0 {
		return memEntry{}, false
	}
	return memEntry{exp: uint32(v >> 8), status: store.Status(v), nonce: c.nonce.Load()}, true
}

// put sets id's entry; e.exp must not be 0. The caller is the writer.
func (m *jtiTable) put(id JTI, e memEntry) {
	t := m.cur.Load()
	c := t.claim(id)
	if c == nil {
		t = t.rebuilt(heldJTI, moveJTI)
		m.cur.Store(t)
		c = t.claim(id)
	}
	if c.meta.Load() == 0 {
		t.live++
	}
	c.nonce.Store(e.nonce)
	c.meta.Store(uint64(e.exp)<<8 | uint64(e.status))
}

// del drops id's entry, if any. The caller is the writer.
func (m *jtiTable) del(id JTI) {
	t := m.cur.Load()
	if c := t.find(id); c != nil && c.meta.Load() != 0 {
		c.meta.Store(0)
		t.live--
	}
}

// sweep drops the entries expired at now and returns how many it dropped.
// The caller is the writer.
func (m *jtiTable) sweep(now uint32) int {
	t := m.cur.Load()
	n := 0
	for _, c := range t.all() {
		if v := c.meta.Load(); v != 0 && uint32(v>>8) <= now {
			c.meta.Store(0)
			n++
		}
	}
	t.live -= n
	return n
}

// len returns the number of entries held.
func (m *jtiTable) len() int { return m.cur.Load().live }

// compact rebuilds the table for the entries it holds, dropping its
// tombstones and, if it holds far fewer than it once did, shrinking it.
// The caller is the writer.
func (m *jtiTable) compact() { m.cur.Store(m.cur.Load().rebuilt(heldJTI, moveJTI)) }

// famTable maps a sid to its family. A family is immutable once stored:
// the writer replaces it (copy on write), so a reader's pointer always
// shows one whole state.
type famTable struct {
	cur atomic.Pointer[table[atomic.Pointer[memFamily]]]
}

func heldFam(c *atomic.Pointer[memFamily]) bool { return c.Load() != nil }

func moveFam(dst, src *atomic.Pointer[memFamily]) { dst.Store(src.Load()) }

func (m *famTable) init() { m.cur.Store(newTable[atomic.Pointer[memFamily]](0)) }

// get returns sid's family, or nil. It takes no lock, writes nothing and
// allocates nothing. The family must not be modified.
func (m *famTable) get(sid JTI) *memFamily {
	if c := m.cur.Load().find(sid); c != nil {
		return c.Load()
	}
	return nil
}

// put sets sid's family to f, which must not be modified afterwards. The
// caller is the writer.
func (m *famTable) put(sid JTI, f *memFamily) {
	t := m.cur.Load()
	c := t.claim(sid)
	if c == nil {
		t = t.rebuilt(heldFam, moveFam)
		m.cur.Store(t)
		c = t.claim(sid)
	}
	if c.Swap(f) == nil {
		t.live++
	}
}

// del drops sid's family, if any. The caller is the writer.
func (m *famTable) del(sid JTI) {
	t := m.cur.Load()
	if c := t.find(sid); c != nil && c.Swap(nil) != nil {
		t.live--
	}
}

// all yields every family held. The caller is the writer, and may del
// the family yielded.
func (m *famTable) all() iter.Seq2[JTI, *memFamily] {
	return func(yield func(JTI, *memFamily) bool) {
		for sid, c := range m.cur.Load().all() {
			if f := c.Load(); f != nil && !yield(sid, f) {
				return
			}
		}
	}
}

// len returns the number of families held.
func (m *famTable) len() int { return m.cur.Load().live }

// compact is jtiTable.compact for families.
func (m *famTable) compact() { m.cur.Store(m.cur.Load().rebuilt(heldFam, moveFam)) }
