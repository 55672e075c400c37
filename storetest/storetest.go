// Package storetest is the conformance suite every jtiguard store must pass,
// as testing/fstest is for file systems. A store implementation runs it from
// its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Harness { ... })
//	}
//
// It checks the guarantees the Verifier and Sessions rely on: one-time use
// is exactly once, also under concurrency and when a call is retried;
// revocation holds until expiry; a rotation is one compare-and-set with
// reuse detection, an optional grace window and idempotent retries;
// generations, idle and absolute lifetimes, logout-all, also racing a
// login; a revoked token mints nothing; a full store refuses new state
// instead of forgetting, yet still records revocations; and, for a store
// that is a store.ProofStore, a proof is consumed with its token's check,
// exactly once, and only while the token is live; for a store that is a
// store.DeviceStore, a subject's live families are listed with what they
// were begun with, oldest first, in pages that neither repeat nor skip,
// ended, expired and reused ones are not, EndOthers keeps exactly one,
// Family.Limit ends the oldest, and 1,000 concurrent logins and logouts
// leave the listing and the families in agreement.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/jtiguard/jtiguard"
)

// Store is what a jtiguard store implements.
type Store interface {
	store.Store
	store.SessionStore
}

// Harness is what the suite needs of one fresh, empty store.
type Harness struct {
	Store Store
	// Now is the store's clock.
	Now func() time.Time
	// Advance moves the store's clock forward by d, a whole number of
	// seconds: a store on a fake clock advances it, a store on real time
	// (a server's) waits.
	Advance func(d time.Duration)
	// NewFull, if set, returns a store with no room left, to check that a
	// full store refuses new state with an error matching
	// jtiguard.ErrStoreUnavailable.
	NewFull func(t *testing.T) Store
	// Concurrency is how many goroutines race in the concurrency tests;
	// default 200.
	Concurrency int
	// Rounds is how many rounds the round-based race tests run (a login
	// racing a logout-all); default 200.
	Rounds int
}

// Run runs the suite; newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"ConsumeOnce", testConsumeOnce},
		{"ConsumeRetrySameNonce", testConsumeRetry},
		{"ConcurrentConsume", testConcurrentConsume},
		{"Revoke", testRevoke},
		{"Expiry", testExpiry},
		{"FamilyChecks", testFamilyChecks},
		{"ConsumeInEndedFamily", testConsumeInEndedFamily},
		{"RotateRace", testRotateRace},
		{"ReuseRevokesFamily", testReuse},
		{"GraceWindow", testGrace},
		{"GraceExpires", testGraceExpires},
		{"RotateRetrySameNonce", testRotateRetry},
		{"GenerationBump", testGenerationBump},
		{"IdleTimeout", testIdle},
		{"AbsoluteLifetime", testAbsolute},
		{"LogoutAll", testLogoutAll},
		{"FullFailsClosed", testFull},
		{"RevokedTokenMintsNothing", testRevokedPresented},
		{"EndNeedsTheSubject", testEndSubjectMatch},
		{"BeginRacingEndSubject", testBeginEndSubjectRace},
		{"CheckAndConsume", testCheckAndConsume},
		{"ConcurrentCheckAndConsume", testConcurrentCheckAndConsume},
		{"ListMetadata", testListMetadata},
		{"ListOrderAndPages", testListPages},
		{"ListOnlyLive", testListOnlyLive},
		{"EndByOwnerOnly", testEndByOwner},
		{"EndOthers", testEndOthers},
		{"Limit", testLimit},
		{"LimitConcurrent", testLimitConcurrent},
		{"RotationACR", testRotationACR},
		{"DevicesConcurrent", testDevicesConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Subtests run in parallel: each has its own harness and its
			// own random ids, and a store on real time waits for several
			// of them at once.
			t.Parallel()
			h := newHarness(t)
			if h.Concurrency == 0 {
				h.Concurrency = 200
			}
			if h.Rounds == 0 {
				h.Rounds = 200
			}
			tc.fn(t, h)
		})
	}
}

var ctx = context.Background()

func newID(t *testing.T) jtiguard.JTI {
	t.Helper()
	id, err := store.NewJTI(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// token returns a ref to a token of alice's issued now, living ttl.
func token(t *testing.T, h Harness, ttl time.Duration) store.TokenRef {
	now := h.Now().Truncate(time.Second)
	return store.TokenRef{ID: newID(t), Subject: "alice", IssuedAt: now, ExpiresAt: now.Add(ttl)}
}

func want[T comparable](t *testing.T, what string, got, want T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: unexpected error %v", what, err)
	}
	if got != want {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func check(t *testing.T, h Harness, r store.TokenRef, w store.Status) {
	t.Helper()
	st, err := h.Store.Check(ctx, r)
	want(t, "Check", st, w, err)
}

func testConsumeOnce(t *testing.T, h Harness) {
	r := token(t, h, time.Minute)
	check(t, h, r, store.Live)
	st, err := h.Store.Consume(ctx, r, 1)
	want(t, "first Consume", st, store.Live, err)
	st, err = h.Store.Consume(ctx, r, 2)
	want(t, "second Consume", st, store.Used, err)
	check(t, h, r, store.Used)
}

func testConsumeRetry(t *testing.T, h Harness) {
	r := token(t, h, time.Minute)
	st, err := h.Store.Consume(ctx, r, 42)
	want(t, "Consume", st, store.Live, err)
	st, err = h.Store.Consume(ctx, r, 42)
	want(t, "the same call retried", st, store.Live, err)
	st, err = h.Store.Consume(ctx, r, 43)
	want(t, "another call", st, store.Used, err)
}

func testConcurrentConsume(t *testing.T, h Harness) {
	r := token(t, h, time.Minute)
	var mu sync.Mutex
	counts := map[store.Status]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range h.Concurrency {
		wg.Go(func() {
			<-start
			st, err := h.Store.Consume(ctx, r, uint64(i+1))
			if err != nil {
				t.Errorf("Consume: %v", err)
				return
			}
			mu.Lock()
			counts[st]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if counts[store.Live] != 1 || counts[store.Used] != h.Concurrency-1 {
		t.Fatalf("%d concurrent consumes: %v, want exactly one Live", h.Concurrency, counts)
	}
}

func testRevoke(t *testing.T, h Harness) {
	r := token(t, h, time.Minute)
	if err := h.Store.Revoke(ctx, r); err != nil {
		t.Fatal(err)
	}
	check(t, h, r, store.Revoked)
	st, err := h.Store.Consume(ctx, r, 1)
	want(t, "Consume of a revoked token", st, store.Revoked, err)
	if err := h.Store.Revoke(ctx, r); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	check(t, h, r, store.Revoked)

	used := token(t, h, time.Minute)
	st, err = h.Store.Consume(ctx, used, 1)
	want(t, "Consume", st, store.Live, err)
	if err := h.Store.Revoke(ctx, used); err != nil {
		t.Fatal(err)
	}
	check(t, h, used, store.Revoked)
	st, err = h.Store.Consume(ctx, used, 1)
	want(t, "retry after revocation", st, store.Revoked, err)
}

func testExpiry(t *testing.T, h Harness) {
	r := token(t, h, 2*time.Second)
	if err := h.Store.Revoke(ctx, r); err != nil {
		t.Fatal(err)
	}
	check(t, h, r, store.Revoked)
	h.Advance(3 * time.Second)
	// The token is past its exp: verifiers reject it on its own, and the
	// store no longer needs to remember it.
	check(t, h, r, store.Live)
}

// begin starts a family of subject living life, idle after idle.
func begin(t *testing.T, h Harness, subject string, life, idle time.Duration) store.Family {
	t.Helper()
	f := store.Family{ID: newID(t), Subject: subject, Generation: 1, Refresh: newID(t), ExpiresAt: h.Now().Truncate(time.Second).Add(life), IdleTimeout: idle}
	if err := h.Store.Begin(ctx, f); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	return f
}

// member returns a ref to an access token of family f at generation gen.
func member(t *testing.T, h Harness, f store.Family, gen uint64) store.TokenRef {
	r := token(t, h, time.Minute)
	r.Subject, r.Session, r.Generation = f.Subject, f.ID, gen
	return r
}

func rotate(t *testing.T, h Harness, f store.Family, gen uint64, presented jtiguard.JTI, nonce uint64, grace time.Duration) (store.Rotated, jtiguard.JTI) {
	t.Helper()
	next := newID(t)
	r, err := h.Store.Rotate(ctx, store.Rotation{Subject: f.Subject, Session: f.ID, Generation: gen, Presented: presented, Next: next, Nonce: nonce, Grace: grace})
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return r, next
}

func testFamilyChecks(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	check(t, h, member(t, h, f, 1), store.Live)
	check(t, h, member(t, h, f, 2), store.Superseded)
	unknown := f
	unknown.ID = newID(t)
	check(t, h, member(t, h, unknown, 1), store.Ended)

	revoked := member(t, h, f, 1)
	if err := h.Store.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	check(t, h, revoked, store.Revoked)

	if err := h.Store.End(ctx, f.Subject, f.ID); err != nil {
		t.Fatal(err)
	}
	check(t, h, member(t, h, f, 1), store.Ended)
	r, _ := rotate(t, h, f, 1, f.Refresh, 1, 0)
	want(t, "Rotate of an ended family", r.Status, store.Ended, nil)
	if err := h.Store.End(ctx, f.Subject, f.ID); err != nil {
		t.Fatalf("ending twice: %v", err)
	}
}

func testConsumeInEndedFamily(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	if err := h.Store.End(ctx, f.Subject, f.ID); err != nil {
		t.Fatal(err)
	}
	st, err := h.Store.Consume(ctx, member(t, h, f, 1), 1)
	want(t, "Consume in an ended family", st, store.Ended, err)
}

func testRotateRace(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	var mu sync.Mutex
	var winners []jtiguard.JTI
	counts := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range h.Concurrency {
		wg.Go(func() {
			<-start
			next, err := store.NewJTI(nil)
			if err != nil {
				t.Error(err)
				return
			}
			r, err := h.Store.Rotate(ctx, store.Rotation{Subject: f.Subject, Session: f.ID, Generation: 1, Presented: f.Refresh, Next: next, Nonce: uint64(i + 1)})
			if err != nil {
				t.Errorf("Rotate: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			counts[fmt.Sprintf("%v/repeat=%v", r.Status, r.Repeat)]++
			if r.Status == store.Live && !r.Repeat {
				winners = append(winners, r.Next)
				if r.Next != next {
					t.Errorf("the winner's Next is not its own")
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 || counts[fmt.Sprintf("%v/repeat=false", store.Reused)] != h.Concurrency-1 {
		t.Fatalf("%d concurrent rotations without grace: %v, want one winner and reuse for the rest", h.Concurrency, counts)
	}
	// The losers presented a superseded token: the family is dead for all.
	check(t, h, member(t, h, f, 1), store.Reused)
	r, _ := rotate(t, h, f, 1, winners[0], 999_999, 0)
	want(t, "Rotate with the winner's token after reuse", r.Status, store.Reused, nil)
}

func testReuse(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	r1, t1 := rotate(t, h, f, 1, f.Refresh, 1, 0)
	want(t, "first rotation", r1.Status, store.Live, nil)
	if r1.Next != t1 || r1.Generation != 1 || r1.Repeat {
		t.Fatalf("first rotation = %+v", r1)
	}
	r2, _ := rotate(t, h, f, 1, t1, 2, 0)
	want(t, "second rotation", r2.Status, store.Live, nil)
	// The second-to-last token comes back: reuse.
	r3, _ := rotate(t, h, f, 1, t1, 3, 0)
	want(t, "replay of a rotated token", r3.Status, store.Reused, nil)
	check(t, h, member(t, h, f, 1), store.Reused)
	r4, _ := rotate(t, h, f, 1, r2.Next, 4, 0)
	want(t, "the current token after reuse", r4.Status, store.Reused, nil)
}

func testGrace(t *testing.T, h Harness) {
	const grace = 30 * time.Second
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	r1, t1 := rotate(t, h, f, 1, f.Refresh, 1, grace)
	want(t, "rotation", r1.Status, store.Live, nil)
	again, _ := rotate(t, h, f, 1, f.Refresh, 2, grace)
	want(t, "previous token within grace", again.Status, store.Live, nil)
	if !again.Repeat || again.Next != t1 || !again.At.Equal(r1.At) {
		t.Fatalf("grace answer %+v, want the same successor %v at %v", again, t1, r1.At)
	}
	r2, _ := rotate(t, h, f, 1, t1, 3, grace)
	want(t, "next rotation", r2.Status, store.Live, nil)
	old, _ := rotate(t, h, f, 1, f.Refresh, 4, grace)
	want(t, "an older token never gets grace", old.Status, store.Reused, nil)
}

func testGraceExpires(t *testing.T, h Harness) {
	const grace = 2 * time.Second
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	r1, _ := rotate(t, h, f, 1, f.Refresh, 1, grace)
	want(t, "rotation", r1.Status, store.Live, nil)
	h.Advance(3 * time.Second)
	late, _ := rotate(t, h, f, 1, f.Refresh, 2, grace)
	want(t, "previous token after the grace window", late.Status, store.Reused, nil)
}

func testRotateRetry(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	next := newID(t)
	rot := store.Rotation{Subject: f.Subject, Session: f.ID, Generation: 1, Presented: f.Refresh, Next: next, Nonce: 77}
	r1, err := h.Store.Rotate(ctx, rot)
	want(t, "rotation", r1.Status, store.Live, err)
	// The reply was lost and the client library sent the same call again.
	r2, err := h.Store.Rotate(ctx, rot)
	want(t, "the same rotation retried", r2.Status, store.Live, err)
	if !r2.Repeat || r2.Next != next {
		t.Fatalf("retry = %+v, want a repeat of %v", r2, next)
	}
	check(t, h, member(t, h, f, 1), store.Live)
}

func testGenerationBump(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	bump := store.Rotation{Subject: f.Subject, Session: f.ID, Generation: 1, Next: newID(t), NewGeneration: true, Nonce: 5}
	r, err := h.Store.Rotate(ctx, bump)
	want(t, "bump", r.Status, store.Live, err)
	want(t, "generation", r.Generation, 2, nil)
	r, err = h.Store.Rotate(ctx, bump)
	want(t, "the same bump retried", r.Status, store.Live, err)
	if !r.Repeat || r.Generation != 2 || r.Next != bump.Next {
		t.Fatalf("retried bump = %+v", r)
	}
	other := bump
	other.Nonce, other.Next = 6, newID(t)
	r, err = h.Store.Rotate(ctx, other)
	want(t, "a second bump from the old generation", r.Status, store.Superseded, err)

	check(t, h, member(t, h, f, 1), store.Superseded)
	check(t, h, member(t, h, f, 2), store.Live)
	old, _ := rotate(t, h, f, 1, f.Refresh, 7, time.Minute)
	want(t, "a refresh token from before the bump", old.Status, store.Reused, nil)
}

func testIdle(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 3*time.Second)
	h.Advance(2 * time.Second)
	r, next := rotate(t, h, f, 1, f.Refresh, 1, 0)
	want(t, "rotation before the idle timeout", r.Status, store.Live, nil)
	h.Advance(2 * time.Second)
	check(t, h, member(t, h, f, 1), store.Live) // the rotation reset the idle clock
	h.Advance(2 * time.Second)
	check(t, h, member(t, h, f, 1), store.Ended)
	r, _ = rotate(t, h, f, 1, next, 2, 0)
	want(t, "rotation after the idle timeout", r.Status, store.Ended, nil)
}

func testAbsolute(t *testing.T, h Harness) {
	f := begin(t, h, "alice", 4*time.Second, 3*time.Second)
	presented := f.Refresh
	for i := range 2 {
		h.Advance(2 * time.Second)
		r, next := rotate(t, h, f, 1, presented, uint64(i+1), 0)
		if r.Status == store.Live {
			if !r.ExpiresAt.Equal(f.ExpiresAt) {
				t.Fatalf("rotation moved the absolute end to %v", r.ExpiresAt)
			}
			presented = next
			continue
		}
		want(t, "rotation at the absolute end", r.Status, store.Ended, nil)
	}
	check(t, h, member(t, h, f, 1), store.Ended)
}

func testLogoutAll(t *testing.T, h Harness) {
	var alice []store.Family
	for range 3 {
		alice = append(alice, begin(t, h, "alice", time.Hour, 10*time.Minute))
	}
	bob := begin(t, h, "bob", time.Hour, 10*time.Minute)
	reused := begin(t, h, "alice", time.Hour, 10*time.Minute)
	rotate(t, h, reused, 1, newID(t), 1, 0) // a stranger's token: reuse
	check(t, h, member(t, h, reused, 1), store.Reused)
	n, err := h.Store.EndSubject(ctx, "alice")
	want(t, "live families ended", n, 3, err)
	check(t, h, member(t, h, reused, 1), store.Ended)
	for _, f := range alice {
		check(t, h, member(t, h, f, 1), store.Ended)
	}
	check(t, h, member(t, h, bob, 1), store.Live)
	n, err = h.Store.EndSubject(ctx, "alice")
	want(t, "families ended the second time", n, 0, err)
}

func testFull(t *testing.T, h Harness) {
	if h.NewFull == nil {
		t.Skip("the harness provides no full store")
	}
	s := h.NewFull(t)
	r := token(t, h, time.Minute)
	if _, err := s.Consume(ctx, r, 1); !errors.Is(err, jtiguard.ErrStoreUnavailable) {
		t.Errorf("Consume in a full store: %v, want ErrStoreUnavailable", err)
	}
	f := store.Family{ID: newID(t), Subject: "alice", Generation: 1, Refresh: newID(t), ExpiresAt: h.Now().Add(time.Hour), IdleTimeout: time.Minute}
	if err := s.Begin(ctx, f); !errors.Is(err, jtiguard.ErrStoreUnavailable) {
		t.Errorf("Begin in a full store: %v, want ErrStoreUnavailable", err)
	}
	// A revocation is never refused for capacity: it is bounded by the
	// token's own lifetime, and refusing it would keep alive a token its
	// owner wants dead.
	if err := s.Revoke(ctx, r); err != nil {
		t.Fatalf("Revoke in a full store: %v, want it recorded", err)
	}
	st, err := s.Check(ctx, r)
	want(t, "Check after a revocation at capacity", st, store.Revoked, err)
}

// testRevokedPresented: a token revoked by id (RevokeID) mints nothing: its
// refresh token does not rotate, its access token does not renew.
func testRevokedPresented(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	rt := member(t, h, f, 1)
	rt.ID = f.Refresh
	if err := h.Store.Revoke(ctx, rt); err != nil {
		t.Fatal(err)
	}
	r, _ := rotate(t, h, f, 1, f.Refresh, 1, time.Minute)
	want(t, "Rotate presenting a revoked refresh token", r.Status, store.Revoked, nil)
	check(t, h, member(t, h, f, 1), store.Live) // the family itself lives on

	at := member(t, h, f, 1)
	if err := h.Store.Revoke(ctx, at); err != nil {
		t.Fatal(err)
	}
	bump, err := h.Store.Rotate(ctx, store.Rotation{Subject: f.Subject, Session: f.ID, Generation: 1, Presented: at.ID, Next: newID(t), NewGeneration: true, Nonce: 9})
	want(t, "privilege change presenting a revoked access token", bump.Status, store.Revoked, err)
	check(t, h, member(t, h, f, 1), store.Live)
}

// testEndSubjectMatch: End ends a family only under its own subject.
func testEndSubjectMatch(t *testing.T, h Harness) {
	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	if err := h.Store.End(ctx, "mallory", f.ID); err != nil {
		t.Fatal(err)
	}
	check(t, h, member(t, h, f, 1), store.Live)
	if err := h.Store.End(ctx, "alice", f.ID); err != nil {
		t.Fatal(err)
	}
	check(t, h, member(t, h, f, 1), store.Ended)
}

// testBeginEndSubjectRace: a login racing a logout-all either is ended by
// it or is left for the next one; no family escapes every later
// logout-all.
func testBeginEndSubjectRace(t *testing.T, h Harness) {
	subject := "race-" + newID(t).String()
	var fams []store.Family
	for range h.Rounds {
		f := store.Family{ID: newID(t), Subject: subject, Generation: 1, Refresh: newID(t), ExpiresAt: h.Now().Truncate(time.Second).Add(time.Hour), IdleTimeout: 10 * time.Minute}
		fams = append(fams, f)
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := h.Store.Begin(ctx, f); err != nil {
				t.Errorf("Begin: %v", err)
			}
		})
		wg.Go(func() {
			if _, err := h.Store.EndSubject(ctx, subject); err != nil {
				t.Errorf("EndSubject: %v", err)
			}
		})
		wg.Wait()
	}
	if _, err := h.Store.EndSubject(ctx, subject); err != nil {
		t.Fatal(err)
	}
	escaped := 0
	for _, f := range fams {
		if st, err := h.Store.Check(ctx, member(t, h, f, 1)); err != nil || st != store.Ended {
			escaped++
		}
	}
	if escaped > 0 {
		t.Fatalf("%d of %d families begun while a logout-all ran survived the next logout-all", escaped, h.Rounds)
	}
}

// proofStore returns h's store as a store.ProofStore, or skips the test.
func proofStore(t *testing.T, h Harness) store.ProofStore {
	t.Helper()
	ps, ok := h.Store.(store.ProofStore)
	if !ok {
		t.Skip("the store is not a store.ProofStore")
	}
	return ps
}

// checkAndConsume calls CheckAndConsume and wants its two statuses.
func checkAndConsume(t *testing.T, ps store.ProofStore, tok, proof store.TokenRef, nonce uint64, wantToken, wantProof store.Status) {
	t.Helper()
	ts, pst, err := ps.CheckAndConsume(ctx, tok, proof, nonce)
	want(t, "CheckAndConsume: the token", ts, wantToken, err)
	want(t, "CheckAndConsume: the proof", pst, wantProof, err)
}

func testCheckAndConsume(t *testing.T, h Harness) {
	ps := proofStore(t, h)
	tok, proof := token(t, h, time.Minute), token(t, h, time.Minute)
	checkAndConsume(t, ps, tok, proof, 1, store.Live, store.Live)
	checkAndConsume(t, ps, tok, proof, 1, store.Live, store.Live) // the same call retried
	checkAndConsume(t, ps, tok, proof, 2, store.Live, store.Used)
	check(t, h, tok, store.Live) // the token is read, not used
	st, err := h.Store.Consume(ctx, proof, 3)
	want(t, "Consume of the consumed proof", st, store.Used, err)

	// A dead token consumes nothing: its proof stays unused, and can go
	// with a live token of the same subject.
	revoked, fresh := token(t, h, time.Minute), token(t, h, time.Minute)
	if err := h.Store.Revoke(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	checkAndConsume(t, ps, revoked, fresh, 4, store.Revoked, store.Revoked)
	checkAndConsume(t, ps, tok, fresh, 5, store.Live, store.Live)

	f := begin(t, h, "alice", time.Hour, 10*time.Minute)
	m := member(t, h, f, 1)
	inFamily := token(t, h, time.Minute)
	checkAndConsume(t, ps, m, inFamily, 6, store.Live, store.Live)
	if err := h.Store.End(ctx, f.Subject, f.ID); err != nil {
		t.Fatal(err)
	}
	other := token(t, h, time.Minute)
	checkAndConsume(t, ps, m, other, 7, store.Ended, store.Ended)
	st, err = h.Store.Consume(ctx, other, 8)
	want(t, "Consume of the proof a dead token left", st, store.Live, err)
}

func testConcurrentCheckAndConsume(t *testing.T, h Harness) {
	ps := proofStore(t, h)
	tok, proof := token(t, h, time.Minute), token(t, h, time.Minute)
	var mu sync.Mutex
	counts := map[[2]store.Status]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range h.Concurrency {
		wg.Go(func() {
			<-start
			ts, pst, err := ps.CheckAndConsume(ctx, tok, proof, uint64(i+1))
			if err != nil {
				t.Errorf("CheckAndConsume: %v", err)
				return
			}
			mu.Lock()
			counts[[2]store.Status{ts, pst}]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if counts[[2]store.Status{store.Live, store.Live}] != 1 || counts[[2]store.Status{store.Live, store.Used}] != h.Concurrency-1 {
		t.Fatalf("%d concurrent CheckAndConsume calls: %v, want exactly one proof Live", h.Concurrency, counts)
	}
}

// deviceStore returns h's store as a store.DeviceStore, or skips the test.
func deviceStore(t *testing.T, h Harness) store.DeviceStore {
	t.Helper()
	ds, ok := h.Store.(store.DeviceStore)
	if !ok {
		t.Skip("the store is not a store.DeviceStore")
	}
	return ds
}

// beginFamily begins f, failing the test on an error.
func beginFamily(t *testing.T, h Harness, f store.Family) store.Family {
	t.Helper()
	if err := h.Store.Begin(ctx, f); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	return f
}

// device returns a family of subject to begin, created at created (to the
// millisecond, as stores keep it), living an hour.
func device(t *testing.T, h Harness, subject string, created time.Time) store.Family {
	now := h.Now().Truncate(time.Second)
	return store.Family{
		ID: newID(t), Subject: subject, Generation: 1, Refresh: newID(t),
		ExpiresAt: now.Add(time.Hour), IdleTimeout: 10 * time.Minute,
		Created: created.Truncate(time.Millisecond),
	}
}

// listAll reads every page of subject's sessions, limit at a time, and
// fails on a sid listed twice or a page larger than limit.
func listAll(t *testing.T, ds store.DeviceStore, subject string, limit int) []store.Session {
	t.Helper()
	var all []store.Session
	seen := map[jtiguard.JTI]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			t.Fatalf("List of %s: no last page after %d pages", subject, pages)
		}
		page, next, err := ds.List(ctx, subject, cursor, limit)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(page) > limit {
			t.Fatalf("List with limit %d returned %d sessions", limit, len(page))
		}
		for _, s := range page {
			if seen[s.ID] {
				t.Fatalf("List of %s: %v listed twice", subject, s.ID)
			}
			seen[s.ID] = true
			if s.Subject != subject {
				t.Fatalf("List of %s: a session of %q", subject, s.Subject)
			}
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		if next == cursor {
			t.Fatalf("List of %s: the cursor %q did not move", subject, next)
		}
		cursor = next
	}
}

// ids returns the sids of sessions, in order.
func ids(ss []store.Session) []jtiguard.JTI {
	out := make([]jtiguard.JTI, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func sids(fs ...store.Family) []jtiguard.JTI {
	out := make([]jtiguard.JTI, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

func sameIDs(t *testing.T, what string, got, want []jtiguard.JTI) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
}

// testListMetadata: a family is listed with what it was begun with.
func testListMetadata(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "meta-" + newID(t).String()
	created := h.Now().Add(-time.Minute)
	f := device(t, h, subject, created)
	f.ClientID, f.ACR = "web", "pwd"
	f.Device = store.Device{Label: "Firefox on Linux", IP: "203.0.113.0/24"}
	beginFamily(t, h, f)
	page, next, err := ds.List(ctx, subject, "", 10)
	want(t, "next cursor of a one-session list", next, "", err)
	if len(page) != 1 {
		t.Fatalf("List = %v, want one session", page)
	}
	got := page[0]
	if got.ID != f.ID || got.Subject != subject || got.Generation != 1 || got.ClientID != "web" || got.ACR != "pwd" || got.Device != f.Device {
		t.Fatalf("listed %+v, want the family as begun %+v", got, f)
	}
	if !got.Created.Equal(f.Created) || !got.ExpiresAt.Equal(f.ExpiresAt) || got.IdleTimeout != f.IdleTimeout {
		t.Fatalf("listed created %v, expires %v, idle %v; want %v, %v, %v", got.Created, got.ExpiresAt, got.IdleTimeout, f.Created, f.ExpiresAt, f.IdleTimeout)
	}
	if !got.Refreshed.Equal(f.Created) {
		t.Fatalf("Refreshed of a family never rotated = %v, want its Created %v", got.Refreshed, f.Created)
	}
	r, _ := rotate(t, h, f, 1, f.Refresh, 1, 0)
	want(t, "rotation", r.Status, store.Live, nil)
	page, _, err = ds.List(ctx, subject, "", 10)
	if err != nil || len(page) != 1 {
		t.Fatalf("List after a rotation = %v, %v", page, err)
	}
	if d := page[0].Refreshed.Sub(r.At); d < -time.Second || d > time.Second {
		t.Fatalf("Refreshed after a rotation = %v, want its time %v", page[0].Refreshed, r.At)
	}
	if !page[0].Created.Equal(f.Created) {
		t.Fatalf("a rotation moved Created to %v", page[0].Created)
	}
	other, _, err := ds.List(ctx, "someone-else-"+subject, "", 10)
	want(t, "sessions of a subject with none", len(other), 0, err)
}

// testListPages: oldest first, in pages of any size that neither repeat
// nor skip, with families of equal creation times and families ended
// between pages.
func testListPages(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "pages-" + newID(t).String()
	base := h.Now().Add(-time.Hour)
	const n = 40
	fams := make([]store.Family, n)
	// Begun in another order than created, some created in the same
	// millisecond.
	for i := range n {
		fams[i] = device(t, h, subject, base.Add(time.Duration(i/3)*time.Second))
	}
	for _, i := range rand.Perm(n) {
		beginFamily(t, h, fams[i])
	}
	beginFamily(t, h, device(t, h, "pages-other-"+subject, base)) // another subject's
	for _, limit := range []int{1, 2, 3, 7, n, n + 5} {
		all := listAll(t, ds, subject, limit)
		if len(all) != n {
			t.Fatalf("pages of %d: %d sessions listed, want %d", limit, len(all), n)
		}
		for i := 1; i < n; i++ {
			if all[i].Created.Before(all[i-1].Created) {
				t.Fatalf("pages of %d: not oldest first: %v after %v", limit, all[i].Created, all[i-1].Created)
			}
		}
	}

	// Families ended between pages, the one at the cursor included, are
	// left out; the others are all listed, once.
	page, cursor, err := ds.List(ctx, subject, "", 5)
	if err != nil || len(page) != 5 || cursor == "" {
		t.Fatalf("first page = %d sessions, cursor %q, %v", len(page), cursor, err)
	}
	listed := ids(page)
	ended := map[jtiguard.JTI]bool{page[4].ID: true}
	rest := listAll(t, ds, subject, n)[5:]
	for _, s := range rest[:3] {
		ended[s.ID] = true
	}
	for id := range ended {
		if err := h.Store.End(ctx, subject, id); err != nil {
			t.Fatal(err)
		}
	}
	for cursor != "" {
		page, cursor, err = ds.List(ctx, subject, cursor, 4)
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, ids(page)...)
	}
	var wantIDs []jtiguard.JTI
	for _, s := range listAll(t, ds, subject, n) {
		wantIDs = append(wantIDs, s.ID)
	}
	// The first page was read before the ends: its last one is in it.
	sameIDs(t, "sessions listed across pages with ends between them", listed[5:], wantIDs[4:])
	sameIDs(t, "the first page", listed[:4], wantIDs[:4])
	if len(wantIDs) != n-len(ended) {
		t.Fatalf("%d sessions after ending %d of %d", len(wantIDs), len(ended), n)
	}
}

// testListOnlyLive: ended, expired, reused and logged-out families are
// not listed; another subject's never are.
func testListOnlyLive(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "live-" + newID(t).String()
	now := h.Now()
	live := beginFamily(t, h, device(t, h, subject, now.Add(-4*time.Second)))
	ended := beginFamily(t, h, device(t, h, subject, now.Add(-3*time.Second)))
	if err := h.Store.End(ctx, subject, ended.ID); err != nil {
		t.Fatal(err)
	}
	reused := beginFamily(t, h, device(t, h, subject, now.Add(-2*time.Second)))
	r, _ := rotate(t, h, reused, 1, newID(t), 1, 0)
	want(t, "a stranger's token", r.Status, store.Reused, nil)
	idle := device(t, h, subject, now.Add(-time.Second))
	idle.IdleTimeout = 2 * time.Second
	beginFamily(t, h, idle)
	short := device(t, h, subject, now)
	short.ExpiresAt = now.Truncate(time.Second).Add(2 * time.Second)
	beginFamily(t, h, short)
	bob := beginFamily(t, h, device(t, h, "bob-"+subject, now))

	sameIDs(t, "listed", ids(listAll(t, ds, subject, 2)), sids(live, idle, short))
	h.Advance(3 * time.Second)
	sameIDs(t, "listed after the idle and absolute ends", ids(listAll(t, ds, subject, 2)), sids(live))
	check(t, h, member(t, h, live, 1), store.Live)
	check(t, h, member(t, h, reused, 1), store.Reused) // not listed, still reused

	n, err := h.Store.EndSubject(ctx, subject)
	want(t, "live families ended by logout-all", n, 1, err)
	sameIDs(t, "listed after logout-all", ids(listAll(t, ds, subject, 2)), nil)
	sameIDs(t, "another subject's", ids(listAll(t, ds, bob.Subject, 2)), sids(bob))
}

// testEndByOwner: a family is ended by its own subject only; another
// subject's End leaves it listed and its tokens live.
func testEndByOwner(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "owner-" + newID(t).String()
	f := beginFamily(t, h, device(t, h, subject, h.Now()))
	mallory := beginFamily(t, h, device(t, h, "mallory-"+subject, h.Now()))
	if err := h.Store.End(ctx, mallory.Subject, f.ID); err != nil {
		t.Fatal(err)
	}
	check(t, h, member(t, h, f, 1), store.Live)
	sameIDs(t, "listed after another subject's End", ids(listAll(t, ds, subject, 10)), sids(f))
	n, err := ds.EndOthers(ctx, mallory.Subject, mallory.ID)
	want(t, "EndOthers of another subject", n, 0, err)
	check(t, h, member(t, h, f, 1), store.Live)

	if err := h.Store.End(ctx, subject, f.ID); err != nil {
		t.Fatal(err)
	}
	check(t, h, member(t, h, f, 1), store.Ended)
	sameIDs(t, "listed after its owner's End", ids(listAll(t, ds, subject, 10)), nil)
	check(t, h, member(t, h, mallory, 1), store.Live)
}

// testEndOthers: every family but one ended, atomically; the live ones
// counted.
func testEndOthers(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "others-" + newID(t).String()
	now := h.Now()
	var fams []store.Family
	for i := range 4 {
		fams = append(fams, beginFamily(t, h, device(t, h, subject, now.Add(time.Duration(i)*time.Millisecond))))
	}
	reused := beginFamily(t, h, device(t, h, subject, now))
	rotate(t, h, reused, 1, newID(t), 1, 0)
	bob := beginFamily(t, h, device(t, h, "bob-"+subject, now))
	keep := fams[2]

	n, err := ds.EndOthers(ctx, subject, keep.ID)
	want(t, "live families ended (the kept one and the reused one not counted)", n, 3, err)
	for _, f := range fams {
		w := store.Ended
		if f.ID == keep.ID {
			w = store.Live
		}
		check(t, h, member(t, h, f, 1), w)
	}
	check(t, h, member(t, h, reused, 1), store.Ended)
	check(t, h, member(t, h, bob, 1), store.Live)
	sameIDs(t, "listed", ids(listAll(t, ds, subject, 10)), sids(keep))
	n, err = ds.EndOthers(ctx, subject, keep.ID)
	want(t, "EndOthers again", n, 0, err)

	// The kept family is left as it is: still ended by logout-all, and a
	// kept sid that is not the subject's keeps nothing.
	later := beginFamily(t, h, device(t, h, subject, h.Now()))
	n, err = ds.EndOthers(ctx, subject, bob.ID)
	want(t, "EndOthers keeping another subject's sid", n, 2, err)
	check(t, h, member(t, h, later, 1), store.Ended)
	check(t, h, member(t, h, bob, 1), store.Live)
}

// testLimit: Family.Limit ends the subject's oldest live families as a
// new one begins, at once; ended and reused ones do not count.
func testLimit(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "limit-" + newID(t).String()
	base := h.Now().Add(-time.Minute)
	var fams []store.Family
	for i := range 6 {
		// Begun newest first: the limit goes by Created, not by the order
		// of the calls.
		f := device(t, h, subject, base.Add(time.Duration(10-i)*time.Second))
		f.Limit = 3
		fams = append(fams, f)
	}
	for _, f := range fams[:3] {
		beginFamily(t, h, f)
	}
	// fams[3] is the oldest yet: at the limit, begun, it ends fams[2]
	// (the oldest of the others), never itself.
	beginFamily(t, h, fams[3])
	check(t, h, member(t, h, fams[2], 1), store.Ended)
	sameIDs(t, "listed at the limit", ids(listAll(t, ds, subject, 2)), sids(fams[3], fams[1], fams[0]))

	// An ended family and a reused one free their places.
	if err := h.Store.End(ctx, subject, fams[1].ID); err != nil {
		t.Fatal(err)
	}
	beginFamily(t, h, fams[4])
	check(t, h, member(t, h, fams[3], 1), store.Live)
	rotate(t, h, fams[0], 1, newID(t), 1, 0) // reuse
	beginFamily(t, h, fams[5])
	sameIDs(t, "listed", ids(listAll(t, ds, subject, 2)), sids(fams[5], fams[4], fams[3]))
	for _, f := range fams[3:] {
		check(t, h, member(t, h, f, 1), store.Live)
	}

	// Lower the limit: the oldest go, as many as needed, at once.
	f := device(t, h, subject, h.Now())
	f.Limit = 1
	beginFamily(t, h, f)
	for _, old := range fams[3:] {
		check(t, h, member(t, h, old, 1), store.Ended)
	}
	sameIDs(t, "listed with a limit of 1", ids(listAll(t, ds, subject, 2)), sids(f))

	// No limit: nothing is ended.
	g := device(t, h, subject, f.Created.Add(time.Millisecond))
	beginFamily(t, h, g)
	sameIDs(t, "listed without a limit", ids(listAll(t, ds, subject, 2)), sids(f, g))
}

// testLimitConcurrent: concurrent logins of one subject under a limit
// leave exactly the limit live, and listed.
func testLimitConcurrent(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "limitrace-" + newID(t).String()
	const limit = 10
	fams := make([]store.Family, h.Concurrency)
	for i := range fams {
		fams[i] = device(t, h, subject, h.Now())
		fams[i].Limit = limit
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, f := range fams {
		wg.Go(func() {
			<-start
			if err := h.Store.Begin(ctx, f); err != nil {
				t.Errorf("Begin: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	live := map[jtiguard.JTI]bool{}
	for _, f := range fams {
		if st, err := h.Store.Check(ctx, member(t, h, f, 1)); err != nil {
			t.Fatal(err)
		} else if st == store.Live {
			live[f.ID] = true
		}
	}
	listed := listAll(t, ds, subject, 3)
	if len(live) != limit || len(listed) != limit {
		t.Fatalf("%d concurrent logins with a limit of %d: %d live, %d listed", len(fams), limit, len(live), len(listed))
	}
	for _, s := range listed {
		if !live[s.ID] {
			t.Fatalf("listed %v is not live", s.ID)
		}
	}
}

// testRotationACR: a privilege change's ACR is the family's from then on;
// a refresh leaves it.
func testRotationACR(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	subject := "acr-" + newID(t).String()
	f := device(t, h, subject, h.Now())
	f.ACR = "pwd"
	beginFamily(t, h, f)
	r, err := h.Store.Rotate(ctx, store.Rotation{Subject: subject, Session: f.ID, Generation: 1, Presented: newID(t), Next: newID(t), NewGeneration: true, Nonce: 1, ACR: "mfa"})
	want(t, "step-up", r.Status, store.Live, err)
	r, err = h.Store.Rotate(ctx, store.Rotation{Subject: subject, Session: f.ID, Generation: 2, Presented: r.Next, Next: newID(t), Nonce: 2, ACR: "ignored"})
	want(t, "refresh", r.Status, store.Live, err)
	r, err = h.Store.Rotate(ctx, store.Rotation{Subject: subject, Session: f.ID, Generation: 2, Next: newID(t), NewGeneration: true, Nonce: 3})
	want(t, "a privilege change keeping the acr", r.Status, store.Live, err)
	page := listAll(t, ds, subject, 10)
	if len(page) != 1 || page[0].ACR != "mfa" || page[0].Generation != 3 {
		t.Fatalf("listed %+v, want acr mfa at generation 3", page)
	}
}

// testDevicesConcurrent: 1,000 logins and logouts (End, EndOthers,
// EndSubject) and listings of ten subjects at once, then, for each
// subject, the listing and the families agree: every listed family is
// live, every live family is listed, once. A subject only logged in to
// keeps all its families.
func testDevicesConcurrent(t *testing.T, h Harness) {
	ds := deviceStore(t, h)
	base := "devrace-" + newID(t).String()
	const ops, subjects, logins = 1000, 10, 600
	subject := func(i int) string { return fmt.Sprintf("%s-%d", base, i) }
	fams := make([]store.Family, logins)
	for i := range fams {
		fams[i] = device(t, h, subject(i%subjects), h.Now().Add(time.Duration(i%50)*time.Millisecond))
	}
	bobs := make([]store.Family, 30)
	for i := range bobs {
		bobs[i] = device(t, h, "bob-"+base, h.Now())
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range ops {
		wg.Go(func() {
			<-start
			f := fams[rand.IntN(len(fams))] // a login's, begun or not yet
			var err error
			switch {
			case i < len(fams):
				err = h.Store.Begin(ctx, fams[i])
			case i < len(fams)+len(bobs):
				err = h.Store.Begin(ctx, bobs[i-len(fams)])
			case i%20 == 0:
				_, err = h.Store.EndSubject(ctx, f.Subject)
			case i%20 < 4:
				_, err = ds.EndOthers(ctx, f.Subject, f.ID)
			case i%20 < 8:
				_, _, err = ds.List(ctx, f.Subject, "", 5)
			default:
				err = h.Store.End(ctx, f.Subject, f.ID)
			}
			if err != nil {
				t.Errorf("op %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	live := map[jtiguard.JTI]bool{}
	perSubject := map[string]int{}
	for _, f := range fams {
		st, err := h.Store.Check(ctx, member(t, h, f, 1))
		switch {
		case err != nil:
			t.Fatal(err)
		case st == store.Live:
			live[f.ID] = true
			perSubject[f.Subject]++
		case st != store.Ended:
			t.Fatalf("family %v: %v, want Live or Ended", f.ID, st)
		}
	}
	for i := range subjects {
		listed := listAll(t, ds, subject(i), 7)
		for _, s := range listed {
			if !live[s.ID] {
				t.Fatalf("%s: listed %v is not live", subject(i), s.ID)
			}
		}
		if len(listed) != perSubject[subject(i)] {
			t.Fatalf("%s: %d families live, %d listed", subject(i), perSubject[subject(i)], len(listed))
		}
		n, err := h.Store.EndSubject(ctx, subject(i))
		want(t, "logout-all after", n, len(listed), err)
		sameIDs(t, "listed after logout-all", ids(listAll(t, ds, subject(i), 7)), nil)
	}
	t.Logf("%d operations: %d of %d families live and listed", ops, len(live), len(fams))
	sameIDs(t, "another subject's families", sortedIDs(ids(listAll(t, ds, "bob-"+base, 7))), sortedIDs(sids(bobs...)))
}

func sortedIDs(s []jtiguard.JTI) []jtiguard.JTI {
	slices.SortFunc(s, func(a, b jtiguard.JTI) int { return bytes.Compare(a[:], b[:]) })
	return s
}
