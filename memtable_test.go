package jtiguard

import (
	"context"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"
)

// testKey returns the i-th key of a test. Colliding keys all have the same
// hash, so the same home group and tag in every table: lookups must probe
// past each other's groups and compare whole keys.
func testKey(i uint64, colliding bool) JTI {
	var id JTI
	k0, k1 := i*0x9E3779B97F4A7C15, (i+1)*0xD1B54A32D192ED03
	if colliding {
		k0, k1 = 0xA5A5_1234_5678_9ABC^bits.RotateLeft64(i, 32), i
	}
	binary.LittleEndian.PutUint64(id[:8], k0)
	binary.LittleEndian.PutUint64(id[8:], k1)
	return id
}

func TestTestKeysCollide(t *testing.T) {
	h := hashKey(splitKey(testKey(0, true)))
	for i := range uint64(100) {
		if testKey(i, true) == testKey(i+1, true) || hashKey(splitKey(testKey(i, true))) != h {
			t.Fatal("colliding test keys are not distinct keys of one hash")
		}
	}
}

// TestCountedKeysSpread: ids made by a counter (as in tests and benchmarks)
// fill a table with probes as short as random ones.
func TestCountedKeysSpread(t *testing.T) {
	for _, counted := range []func(i uint64) JTI{
		func(i uint64) JTI { var id JTI; binary.LittleEndian.PutUint64(id[8:], i); id[0] = byte(i); return id },
		func(i uint64) JTI { var id JTI; binary.BigEndian.PutUint64(id[:8], i); return id },
		func(i uint64) JTI { return testKey(i, false) },
		func(i uint64) JTI { // random, for comparison
			var id JTI
			r := rand.New(rand.NewPCG(i, 1))
			binary.LittleEndian.PutUint64(id[:8], r.Uint64())
			binary.LittleEndian.PutUint64(id[8:], r.Uint64())
			return id
		},
	} {
		tab := newTable[jtiCell](7 << 12)
		for i := range uint64(7 << 12) { // full: 7/8 of the slots bound
			*tab.claim(counted(i)) = jtiCell{}
		}
		probes := 0
		const misses = 10_000
		for i := uint64(1 << 40); i < 1<<40+misses; i++ {
			_, g, _ := tab.probe(counted(i))
			for step, h := uint64(1), hashKey(splitKey(counted(i)))>>tab.shift; h != g; step++ {
				h = (h + step) & tab.mask
				probes++
			}
			probes++
		}
		if avg := float64(probes) / misses; avg > 4 { // random ids: 3.1
			t.Errorf("a miss in a full table probes %.2f groups on average", avg)
		} else {
			t.Logf("a miss in a full table probes %.2f groups on average", avg)
		}
	}
}

func newJTITable() *jtiTable {
	var m jtiTable
	m.init()
	return &m
}

func TestTableFindAndClaim(t *testing.T) {
	for _, colliding := range []bool{false, true} {
		m := newJTITable()
		n := 5000
		if colliding {
			n = 300 // every lookup probes past them all
		}
		for i := range uint64(n) {
			m.put(testKey(i, colliding), memEntry{exp: uint32(i + 1), status: store.Revoked, nonce: i})
		}
		if m.len() != n {
			t.Fatalf("colliding=%v: len %d, want %d", colliding, m.len(), n)
		}
		tab := m.cur.Load()
		if tab.used > len(tab.ctrl)*groupFull {
			t.Fatalf("%d slots bound of %d", tab.used, len(tab.slots))
		}
		for i := range uint64(n) {
			e, ok := m.get(testKey(i, colliding))
			if !ok || e != (memEntry{exp: uint32(i + 1), status: store.Revoked, nonce: i}) {
				t.Fatalf("colliding=%v: key %d: %+v, %v", colliding, i, e, ok)
			}
		}
		for i := uint64(n); i < 2*uint64(n); i++ {
			if _, ok := m.get(testKey(i, colliding)); ok {
				t.Fatalf("colliding=%v: key %d never put is found", colliding, i)
			}
		}
		// A deleted key's slot stays bound to it and is used again for it.
		used := tab.used
		m.del(testKey(7, colliding))
		if _, ok := m.get(testKey(7, colliding)); ok || m.len() != n-1 {
			t.Fatal("deleted key still found")
		}
		m.put(testKey(7, colliding), memEntry{exp: 99, status: store.Used, nonce: 5})
		if e, ok := m.get(testKey(7, colliding)); !ok || e.exp != 99 || e.status != store.Used || e.nonce != 5 {
			t.Fatalf("put again: %+v, %v", e, ok)
		}
		if m.cur.Load() != tab || tab.used != used || m.len() != n {
			t.Fatal("putting a deleted key again bound another slot")
		}
	}
}

// TestTableTombstonesAreReclaimed: a table whose entries come and go is
// rebuilt for the entries it holds when its tombstones fill it: it does
// not grow with the number of keys it has seen.
func TestTableTombstonesAreReclaimed(t *testing.T) {
	m := newJTITable()
	for i := range uint64(100) {
		m.put(testKey(i, false), memEntry{exp: 1, status: store.Used})
	}
	limit := len(newTable[jtiCell](200).slots) // room for as many again
	rebuilds := 0
	for i := uint64(100); i < 100_000; i++ {
		before := m.cur.Load()
		m.put(testKey(i, false), memEntry{exp: 1, status: store.Used})
		m.del(testKey(i-100, false))
		if m.cur.Load() != before {
			rebuilds++
		}
		if s := len(m.cur.Load().slots); s > limit {
			t.Fatalf("100 entries live at a time, %d keys seen: %d slots", i, s)
		}
	}
	t.Logf("100,000 keys through a table of 100: %d rebuilds, %d slots", rebuilds, len(m.cur.Load().slots))
	if m.len() != 100 {
		t.Fatalf("len %d, want 100", m.len())
	}
	for i := uint64(100_000 - 100); i < 100_000; i++ {
		if _, ok := m.get(testKey(i, false)); !ok {
			t.Fatalf("key %d lost in a rebuild", i)
		}
	}
	if got := m.sweep(1); got != 100 || m.len() != 0 {
		t.Fatalf("sweep dropped %d, len %d", got, m.len())
	}
	m.compact()
	if s := len(m.cur.Load().slots); s != groupSlots {
		t.Fatalf("an empty table compacts to %d slots", s)
	}
}

// TestJTITableModel runs random operations against a Go map.
func TestJTITableModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	m := newJTITable()
	model := map[JTI]memEntry{}
	const keys = 3000
	key := func() JTI { i := r.Uint64N(keys); return testKey(i, i%3 == 0) }
	for op := range 200_000 {
		switch x := r.IntN(100); {
		case x < 50:
			id, e := key(), memEntry{exp: 1 + r.Uint32N(100), status: store.Status(1 + r.IntN(2)), nonce: r.Uint64()}
			m.put(id, e)
			model[id] = e
		case x < 90:
			id := key()
			m.del(id)
			delete(model, id)
		case x < 99:
			now := r.Uint32N(100)
			want := 0
			for id, e := range model {
				if e.exp <= now {
					delete(model, id)
					want++
				}
			}
			if got := m.sweep(now); got != want {
				t.Fatalf("op %d: sweep(%d) dropped %d, want %d", op, now, got, want)
			}
		default:
			m.compact()
		}
		if m.len() != len(model) {
			t.Fatalf("op %d: len %d, want %d", op, m.len(), len(model))
		}
		if op%1000 == 0 {
			for i := range uint64(keys) {
				id := testKey(i, i%3 == 0)
				e, ok := m.get(id)
				if w, wok := model[id]; ok != wok || e != w {
					t.Fatalf("op %d: key %d: %+v %v, want %+v %v", op, i, e, ok, w, wok)
				}
			}
		}
	}
}

func TestFamTable(t *testing.T) {
	var m famTable
	m.init()
	const n = 2000
	for i := range uint64(n) {
		m.put(testKey(i, i%2 == 0), &memFamily{subject: "s", gen: i})
	}
	for i := range uint64(n) {
		if f := m.get(testKey(i, i%2 == 0)); f == nil || f.gen != i {
			t.Fatalf("family %d: %+v", i, f)
		}
	}
	for i := uint64(0); i < n; i += 2 {
		m.del(testKey(i, true))
	}
	got := 0
	for sid, f := range m.all() {
		if sid != testKey(f.gen, false) || f.gen%2 == 0 {
			t.Fatalf("all yields %v, %+v", sid, f)
		}
		got++
	}
	m.compact()
	if got != n/2 || m.len() != n/2 || m.get(testKey(0, true)) != nil || m.get(testKey(1, false)).gen != 1 {
		t.Fatalf("after deleting half: %d yielded, len %d", got, m.len())
	}
}

// TestTableStress races readers against a writer that inserts, updates,
// deletes, grows and rebuilds, and checks what readers see: no torn entry
// (each entry's exp carries a checksum of its key and status), no key that
// a write had published before a lookup began missing or older than that
// write (its version, in exp too), and versions never going back for one
// reader. The colliding keys make readers compare keys in slots the writer
// is binding.
func TestTableStress(t *testing.T) {
	const stable, churn = 2000, 300 // stable keys are never deleted
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	key := func(i uint64) JTI { return testKey(i, i%32 == 0) }
	sum := func(i uint64) uint32 { return uint32(i*0x9E37)&0xFFF | 1 }
	// entry i at version v: exp = v<<12 | sum(i); status by i's parity.
	entry := func(i uint64, v uint32) memEntry {
		return memEntry{exp: v<<12 | sum(i), status: store.Status(1 + i%2), nonce: uint64(v)}
	}
	jt := newJTITable()
	var ft famTable
	ft.init()
	written := make([]atomic.Uint32, stable+churn) // the version last published, after put returned
	var done atomic.Bool
	var wg sync.WaitGroup
	readers := max(2, runtime.GOMAXPROCS(0))
	var lookups atomic.Int64
	for g := range readers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			seen := make([]uint32, stable+churn)
			n := int64(0)
			defer func() { lookups.Add(n) }()
			for !done.Load() {
				n++
				i := r.Uint64N(stable + churn)
				before := written[i].Load()
				e, ok := jt.get(key(i))
				f := ft.get(key(i))
				if ok {
					if e.exp&0xFFF != sum(i) || e.status != store.Status(1+i%2) {
						t.Errorf("key %d: torn or foreign entry %+v", i, e)
						return
					}
					if v := e.exp >> 12; v < seen[i] {
						t.Errorf("key %d: version %d after %d", i, v, seen[i])
						return
					} else {
						seen[i] = v
					}
				}
				if f != nil && (f.subject != "fam" || f.current != key(i) || uint32(f.gen) < before) {
					t.Errorf("key %d: family %+v, written %d", i, f, before)
					return
				}
				if i < stable && before > 0 {
					if !ok || e.exp>>12 < before {
						t.Errorf("key %d: written at version %d before the lookup, got %+v %v", i, before, e, ok)
						return
					}
					if f == nil {
						t.Errorf("family %d: written at version %d before the lookup, missing", i, before)
						return
					}
				}
			}
		})
	}
	r := rand.New(rand.NewPCG(7, 7))
	for round := range rounds {
		v := uint32(round + 1)
		// The stable keys appear a few at a time (growth from one group),
		// then are rewritten each round.
		upto := min(stable, uint64(round+1)*stable/uint64(rounds/2+1))
		for i := range upto {
			jt.put(key(i), entry(i, v))
			ft.put(key(i), &memFamily{subject: "fam", current: key(i), gen: uint64(v)})
			written[i].Store(v)
		}
		// Churn keys come and go, filling tables with tombstones.
		for range 4 * churn {
			i := stable + r.Uint64N(churn)
			if r.IntN(2) == 0 {
				jt.put(key(i), entry(i, v))
				ft.put(key(i), &memFamily{subject: "fam", current: key(i), gen: uint64(v)})
			} else {
				jt.del(key(i))
				ft.del(key(i))
			}
		}
		if round%7 == 0 {
			jt.compact()
			ft.compact()
		}
	}
	done.Store(true)
	wg.Wait()
	t.Logf("%d lookups by %d readers; final table: %d slots, %d bound, %d held", lookups.Load(), readers, len(jt.cur.Load().slots), jt.cur.Load().used, jt.len())
}

// TestCheckTakesNoLockNorAllocates: Check of a live token, a revoked one and
// tokens of a live and an ended session allocate nothing, also while a
// writer holds the shard's lock (Check never takes it).
func TestCheckTakesNoLockNorAllocates(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(2_000_000_000, 0)
	s, err := NewMemoryStore(MemoryConfig{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ref := func(i uint64) store.TokenRef {
		return store.TokenRef{ID: testKey(i, false), Subject: "alice", IssuedAt: now, ExpiresAt: now.Add(time.Minute)}
	}
	revoked := ref(1)
	if err := s.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	fam := store.Family{ID: testKey(2, false), Subject: "alice", Generation: 1, Refresh: testKey(3, false), ExpiresAt: now.Add(time.Hour), IdleTimeout: time.Hour}
	if err := s.Begin(ctx, fam); err != nil {
		t.Fatal(err)
	}
	member, ended := ref(4), ref(5)
	member.Session, member.Generation = fam.ID, 1
	ended.Session, ended.Generation = testKey(6, false), 1
	for _, c := range []struct {
		name string
		ref  store.TokenRef
		want store.Status
	}{{"live", ref(7), store.Live}, {"revoked", revoked, store.Revoked}, {"session", member, store.Live}, {"ended", ended, store.Ended}} {
		// Every shard locked by a writer: a Check that took a lock would hang.
		for i := range s.shards {
			s.shards[i].mu.Lock()
		}
		var st store.Status
		allocs := testing.AllocsPerRun(100, func() { st, err = s.Check(ctx, c.ref) })
		for i := range s.shards {
			s.shards[i].mu.Unlock()
		}
		if err != nil || st != c.want || allocs != 0 {
			t.Errorf("%s: Check = %v, %v with %v allocations; want %v, 0", c.name, st, err, allocs, c.want)
		}
	}
}
