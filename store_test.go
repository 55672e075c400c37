package jtiguard_test

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/storetest"
)

func ref(t testing.TB, iat time.Time, ttl time.Duration) store.TokenRef {
	t.Helper()
	id, err := store.NewJTI(nil)
	require.NoError(t, err)
	return store.TokenRef{ID: id, IssuedAt: iat, ExpiresAt: iat.Add(ttl)}
}

func TestOneTimeTokenAcceptedOnceUnderConcurrency(t *testing.T) {
	f := newFixture(t)
	tok, _ := f.oneTime(t, "confirm-transfer")
	const n = 1000
	var wins, replays, others atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			_, err := f.ver.Consume(context.Background(), tok, "confirm-transfer")
			switch {
			case err == nil:
				wins.Add(1)
			case assert.ErrorIs(t, err, jtiguard.ErrReplayed):
				replays.Add(1)
			default:
				others.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	assert.EqualValues(t, 1, wins.Load(), "exactly one presentation wins")
	assert.EqualValues(t, n-1, replays.Load())
	assert.Zero(t, others.Load())
}

func TestMemoryStoreStatuses(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: clk.Now})
	require.NoError(t, err)

	r := ref(t, t0, time.Minute)
	st, err := s.Check(ctx, r)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st)

	st, err = s.Consume(ctx, r, 7)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st, "the first consume wins")
	st, err = s.Consume(ctx, r, 7)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st, "a retry of the same call (same nonce) is not a replay")
	st, err = s.Consume(ctx, r, 8)
	require.NoError(t, err)
	assert.Equal(t, store.Used, st, "another call is a replay")
	st, err = s.Check(ctx, r)
	require.NoError(t, err)
	assert.Equal(t, store.Used, st)

	require.NoError(t, s.Revoke(ctx, r))
	st, err = s.Consume(ctx, r, 7)
	require.NoError(t, err)
	assert.Equal(t, store.Revoked, st, "revocation overrides a used mark, and the old nonce no longer wins")

	r2 := ref(t, t0, time.Minute)
	require.NoError(t, s.Revoke(ctx, r2))
	st, err = s.Consume(ctx, r2, 9)
	require.NoError(t, err)
	assert.Equal(t, store.Revoked, st)

	// Tokens issued before the store existed cannot be vouched for.
	old := ref(t, t0.Add(-time.Second), time.Minute)
	st, err = s.Check(ctx, old)
	require.NoError(t, err)
	assert.Equal(t, store.Lost, st)
	st, err = s.Consume(ctx, old, 1)
	require.NoError(t, err)
	assert.Equal(t, store.Lost, st)

	clk.Advance(time.Minute)
	st, err = s.Check(ctx, r)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st, "past its expiry the store forgets the token (the verifier rejects it as expired)")
	assert.Equal(t, 0, s.Sweep())
}

func TestMemoryStoreCapacityFailsClosed(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 3, Now: clk.Now})
	require.NoError(t, err)
	held := make([]store.TokenRef, 3)
	for i := range held {
		held[i] = ref(t, t0, time.Minute)
		_, err := s.Consume(ctx, held[i], 1)
		require.NoError(t, err)
	}
	_, err = s.Consume(ctx, ref(t, t0, time.Minute), 1)
	require.ErrorIs(t, err, jtiguard.ErrStoreFull)
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	revoked := ref(t, t0, time.Minute)
	require.NoError(t, s.Revoke(ctx, revoked), "a revocation is never refused for capacity")
	st, err := s.Check(ctx, revoked)
	require.NoError(t, err)
	require.Equal(t, store.Revoked, st)
	for _, r := range held {
		st, err := s.Consume(ctx, r, 2)
		require.NoError(t, err)
		assert.Equal(t, store.Used, st, "nothing held is forgotten to make room")
	}
	// Once entries expire, room returns.
	clk.Advance(time.Minute)
	st, err = s.Consume(ctx, ref(t, clk.Now(), time.Minute), 1)
	require.NoError(t, err)
	assert.Equal(t, store.Live, st)
	assert.Equal(t, 1, s.Sweep(), "expired entries are swept lazily; the new one stays")
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestMemoryStoreMemoryReturnsAfterExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 200k entries")
	}
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: clk.Now})
	require.NoError(t, err)
	base := heapAlloc()
	const n = 200_000
	for range n {
		require.NoError(t, s.Revoke(ctx, ref(t, t0, time.Minute)))
	}
	full := heapAlloc()
	require.Greater(t, full, base+n*32, "entries take memory")
	t.Logf("%d entries: %.1f B/entry", n, float64(full-base)/n)

	clk.Advance(time.Minute)
	assert.Equal(t, 0, s.Sweep())
	after := heapAlloc()
	t.Logf("after expiry: %d B above baseline (was %d)", int64(after)-int64(base), full-base)
	assert.Less(t, int64(after)-int64(base), int64(full-base)/10, "memory returns once entries expire")
	runtime.KeepAlive(s)
}

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		clk := newClock()
		s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: clk.Now})
		require.NoError(t, err)
		return storetest.Harness{
			Store:       s,
			Now:         clk.Now,
			Advance:     clk.Advance,
			Concurrency: 1000,
			NewFull: func(t *testing.T) storetest.Store {
				full, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 1, Now: clk.Now})
				require.NoError(t, err)
				require.NoError(t, full.Revoke(context.Background(), ref(t, clk.Now(), time.Hour)))
				return full
			},
		}
	})
}

// TestMemoryStoreAtCapacityNeverDeadlocks drives concurrent writes into a
// full store while its clock crosses second boundaries, which is when
// whole-store sweeps start. Two sweepers that each held their own shard
// while taking every other one hung the process.
func TestMemoryStoreAtCapacityNeverDeadlocks(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 1000, Now: clk.Now})
	require.NoError(t, err)
	const rounds, writers, each = 1000, 64, 10
	var full, written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range rounds {
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for range each {
						r := ref(t, clk.Now().Truncate(time.Second), 2*time.Second)
						var err error
						if w%8 == 0 {
							err = s.Revoke(ctx, r)
						} else {
							_, err = s.Consume(ctx, r, 1)
						}
						switch {
						case err == nil:
							written.Add(1)
						case assert.ErrorIs(t, err, jtiguard.ErrStoreFull):
							full.Add(1)
						}
					}
				})
			}
			// The clock moves on while the writers run.
			wg.Go(func() { clk.Advance(time.Second) })
			wg.Wait()
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		buf := make([]byte, 1<<20)
		t.Fatalf("deadlock: goroutines:\n%s", buf[:runtime.Stack(buf, true)])
	}
	t.Logf("%d rounds: %d writes, %d refused as full", rounds, written.Load(), full.Load())
	assert.Positive(t, full.Load(), "the store reached its capacity")
	assert.Positive(t, written.Load())
}

// TestMemoryStoreIndexStaysBounded: families that expire leave the subject
// index too, even when their subjects never log in again, so the index is
// bounded like the store (it used to keep one entry per subject ever seen).
func TestMemoryStoreIndexStaysBounded(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Capacity: 1000, Now: clk.Now})
	require.NoError(t, err)
	for i := range 20_000 {
		id, err := store.NewJTI(nil)
		require.NoError(t, err)
		f := store.Family{ID: id, Subject: "user" + strconv.Itoa(i), Generation: 1, Refresh: id, ExpiresAt: clk.Now().Add(time.Minute), IdleTimeout: time.Minute}
		require.NoError(t, s.Begin(ctx, f))
		if i%500 == 499 {
			clk.Advance(2 * time.Minute)
		}
	}
	t.Logf("20,000 subjects, one family each: %d indexed, %d held", s.Indexed(), s.Len())
	assert.LessOrEqual(t, s.Indexed(), 2*s.Len()+jtiguard.MemShards, "index entries of expired families linger only until their shard's sweep")
	s.Sweep()
	assert.LessOrEqual(t, s.Indexed(), s.Len())
}
