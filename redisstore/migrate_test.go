package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// Slot migrations (a resharding, a scale-out) move a bucket's keys from
// one primary to another while processes answer its tokens locally. A
// local answer rests on the invalidations of the bucket's keys reaching
// the process (docs/local.md): MIGRATE deletes each key from the source,
// a write its tracking sees, and restores it on the target, which every
// process tracks once it serves a slot. These tests check that the
// guarantee survives the move: no local answer from before it outlives a
// lease, answers are local again from the new owner, and once a kill
// returns no process accepts the token, whether the kill ran after the
// move or while the slot was open.

// TestMigrationKeepsLocalAnswersTrue: B answers tokens locally; the slot
// of their keys migrates to another primary: one that served other slots,
// or one just added to the cluster, which served nothing and so was
// tracked by no process. Then:
//
//   - B's answers from before the move are gone: none is given locally
//     once a lease has passed since the last key moved (the source's
//     deletions reached B before any heartbeat begun after them came
//     back), and the check that ends them answers Live. The first check
//     after the move is a round trip in practice (counted: invalidations
//     travel asynchronously, so this is not asserted of each).
//   - B answers locally again, from the new owner, which it now tracks.
//   - A kills each token, with goroutines of B verifying it all along: no
//     verification on B that begins after A's call returned accepts it.
//
// With the added primary, a third process C, whose view of the topology
// never shows it (as any process's before it reloads), does the same
// checks: it gives no local answer from the new owner, whose invalidations
// it does not receive, and accepts no token after its kill returned.
//
// max(2, raceTrials()/60) moves per target, of seven tokens each (five
// sessions' access tokens, two tokens of no session, over the ways of
// killing each): about a fifth as many kill races as raceTrials() in all,
// as the cluster's kill test runs.
func TestMigrationKeepsLocalAnswersTrue(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"another primary", "an added primary"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			if target == "another primary" {
				migrationTrials(t, redistest.StartCluster(t), nil, max(2, raceTrials()/60))
				return
			}
			cl := redistest.StartClusterWithSpare(t)
			migrationTrials(t, cl, addPrimary(t, cl), max(2, raceTrials()/60))
		})
	}
}

// migrationTrials runs moves migrations, each of the slot of the tokens of
// five subjects of one bucket that B answered locally: a session's access
// token each, and two tokens of no session (which rest on no family key),
// beside a revoked one whose key moves with theirs. Then a kill race for
// each token. With added (then the target of every move, which gives the
// slot back after), C checks them too.
func migrationTrials(t *testing.T, cl *redistest.Cluster, added *redistest.Server, moves int) {
	const perMove = 5
	keys := testKeys(t)
	prefix := "migrate" + randomID(t)[:8] + ":"
	a := openClusterProcess(t, keys, prefix, cl.Addrs(), false)
	b := openClusterProcess(t, keys, prefix, cl.Addrs(), false)
	readers := []*process{b}
	if added != nil {
		readers = append(readers, openClusterProcess(t, keys, prefix, cl.Addrs(), true))
	}
	a.sess = sessionsWithoutGrace(t, a)
	for _, r := range readers {
		waitAnswering(t, r)
	}
	plainKills := []kill{kills[0], kills[1]} // Revoke, RevokeID
	require.Equal(t, []string{"Revoke", "RevokeID"}, []string{plainKills[0].name, plainKills[1].name})
	type token struct {
		pair *jtiguard.TokenPair
		kill kill
	}
	var before, beforeC, dropped, resumed, n int
	for i := range moves {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		subjects := sameBucket(prefix, fmt.Sprintf("user-%d", i), perMove)
		var toks []token
		for j, subject := range subjects {
			pair, err := a.sess.Login(ctx, jtiguard.Login{Subject: subject})
			require.NoError(t, err)
			toks = append(toks, token{pair, kills[(i*perMove+j)%len(kills)]})
		}
		for j := range 3 {
			tok, c, err := a.iss.Access(jtiguard.Claims{Subject: subjects[j], Audience: []string{testAudience}})
			require.NoError(t, err)
			if j == 2 {
				require.NoError(t, a.ver.Revoke(ctx, tok))
				break
			}
			toks = append(toks, token{&jtiguard.TokenPair{AccessToken: tok, Access: c}, plainKills[(i+j)%2]})
		}
		for _, tk := range toks { // after every write to the bucket
			for _, r := range readers {
				if r.soonLocal(t, tk.pair.AccessToken) {
					if r == b {
						before++
					} else {
						beforeC++
					}
				}
			}
		}

		bk := keysOf(prefix, toks[0].pair)
		to := added
		if to == nil {
			to = primaryOtherThan(t, cl, bk.slot, i)
		} else {
			// Serving nothing, the added primary is tracked by no process
			// (before its first slot, or since it gave its slot back).
			require.Eventually(t, func() bool { return trackingClients(t, added.Addr()) == 0 }, 5*time.Second, time.Millisecond,
				"move %d: a process still tracks the primary that serves nothing", i)
		}
		m, err := cl.NewMigration(ctx, bk.slot, to)
		require.NoError(t, err)
		moved := migrate(t, m)

		// The readers' entries from before the move: a local answer only
		// within a lease of the move, and the check that ends it answers
		// Live.
		for _, tk := range toks {
			for _, r := range readers {
				for first := true; ; first = false {
					start := time.Now()
					if !r.local(t, tk.pair.AccessToken) {
						if first && r == b {
							dropped++
						}
						break
					}
					require.Less(t, start.Sub(moved), testLease, "move %d: answered locally from before the move, a lease after it", i)
				}
			}
		}

		for _, tk := range toks {
			k, tok := tk.kill, tk.pair.AccessToken
			n++
			// Answers are local again, from the new owner; never on C,
			// which does not track it.
			if b.soonLocal(t, tok) {
				resumed++
			}
			if len(readers) > 1 {
				for range 3 {
					require.False(t, readers[1].local(t, tok), "move %d: answered locally from a primary its view lacks", i)
				}
			}
			var killed atomic.Bool
			var wg sync.WaitGroup
			verifiers := readers
			if len(readers) == 1 {
				verifiers = []*process{b, b}
			}
			for _, r := range verifiers {
				wg.Go(func() {
					for {
						after := killed.Load()
						_, err := r.ver.Verify(context.Background(), tok)
						if after {
							assert.ErrorIs(t, err, k.want, "%s, move %d: a verification begun after the kill returned", k.name, i)
							return
						}
						if err != nil {
							assert.ErrorIs(t, err, k.want, "%s, move %d", k.name, i)
						}
					}
				})
			}
			require.NoError(t, k.do(t, a, tk.pair), k.name)
			killed.Store(true)
			for _, r := range readers {
				_, err = r.ver.Verify(ctx, tok)
				require.ErrorIs(t, err, k.want, "%s, move %d", k.name, i)
			}
			wg.Wait()
			if t.Failed() {
				return
			}
		}
		if added != nil { // the added primary serves nothing again
			require.NoError(t, cl.MigrateSlot(ctx, bk.slot, m.Source()))
			// A primary gone from the listing is a sign the lease key
			// may be lost: B holds its answers back for two seconds.
			waitAnswering(t, b)
		}
	}
	t.Logf("%d moves, %d tokens: B answered locally before the move for %d, its first check after the move was a round trip for %d, it answered locally again after the move for %d",
		moves, n, before, dropped, resumed)
	assert.GreaterOrEqual(t, before, n*9/10, "B answered locally before the move")
	assert.GreaterOrEqual(t, dropped, n/2, "B's first check after the move was a round trip")
	assert.GreaterOrEqual(t, resumed, n*9/10, "B answered locally from the new owner")
	if len(readers) > 1 {
		t.Logf("C answered locally before the move for %d", beforeC)
		assert.GreaterOrEqual(t, beforeC, n*9/10, "C answered locally before the move")
	}
}

// TestKillWhileSlotMigrates: A kills a token (Revoke, or Logout: the end
// of its family) while the slot of its keys is open, at each step of a
// migration (importing only; migrating, no key moved; the family moved;
// the marker moved; every key moved, the slot not yet assigned), to
// another primary or to one just added (tracked by no process), with
// goroutines of B verifying it all along; B had answered it locally
// before. A kill that fails (Redis refuses a script over keys of which a
// node has only some: TRYAGAIN) is retried while the migration completes.
// No verification on B that begins after A's call returned accepts the
// token, and once the slot is assigned B refuses it as killed. B gives no
// local answer from before a key of the token moved once a lease has
// passed since.
//
// What B's checks and A's kills gave while the slot was open is logged
// (go test -v): an error, not a Live, is what the open slot costs.
//
// max(2, raceTrials()/100) trials per step and kill, the targets in turn.
func TestKillWhileSlotMigrates(t *testing.T) {
	t.Parallel()
	var midway []kill
	for _, k := range kills {
		if k.name == "Revoke" || k.name == "Logout" {
			midway = append(midway, k)
		}
	}
	require.Len(t, midway, 2)
	trials := max(2, raceTrials()/100)

	cl := redistest.StartClusterWithSpare(t)
	keys := testKeys(t)
	prefix := "midway" + randomID(t)[:8] + ":"
	mt := &midwayTrials{
		cl:     cl,
		prefix: prefix,
		a:      openClusterProcess(t, keys, prefix, cl.Addrs(), false),
		b:      openClusterProcess(t, keys, prefix, cl.Addrs(), false),
		added:  addPrimary(t, cl),
	}
	waitAnswering(t, mt.b)
	for _, st := range []step{importing, migrating, familyMoved, markerMoved, allMoved} {
		for _, k := range midway {
			t.Run(st.String()+"/"+k.name, func(t *testing.T) {
				for range trials {
					mt.trial(t, st, k)
					if t.Failed() {
						return
					}
				}
			})
		}
	}
	t.Logf("%d trials; B answered locally before in %d; %d kills failed with the slot open and were retried as the migration completed; outcomes:\n%s",
		mt.n, mt.local, mt.stuck, mt.seen.String())
	assert.GreaterOrEqual(t, mt.local, mt.n*8/10, "B answered locally before")
}

// step is how far a migration has gone when A kills the token.
type step int

const (
	importing   step = iota // SETSLOT IMPORTING on the target only
	migrating               // and MIGRATING on the source, no key moved
	familyMoved             // the token's family moved, its marker not
	markerMoved             // the marker moved, the family not
	allMoved                // every key moved, the slot not yet assigned
)

func (s step) String() string {
	return [...]string{"importing", "migrating", "family moved", "marker moved", "every key moved"}[s]
}

type midwayTrials struct {
	cl     *redistest.Cluster
	prefix string
	a, b   *process
	added  *redistest.Server // a primary serving nothing between trials
	seen   outcomes
	n      int // trials run
	local  int // trials where B answered the token locally before
	stuck  int // kills that failed with the slot open
}

func (mt *midwayTrials) trial(t *testing.T, st step, k kill) {
	i := mt.n
	mt.n++
	a, b := mt.a, mt.b
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	subject := fmt.Sprintf("user-%d", i%50)
	pair, err := a.sess.Login(ctx, jtiguard.Login{Subject: subject})
	require.NoError(t, err)
	tok := pair.AccessToken
	if b.soonLocal(t, tok) {
		mt.local++
	}
	// A token of the same bucket that B never checked: its first check
	// is a round trip.
	fresh, _, err := a.iss.Access(jtiguard.Claims{Subject: subject, Audience: []string{testAudience}})
	require.NoError(t, err)

	bk := keysOf(mt.prefix, pair)
	to, where := primaryOtherThan(t, mt.cl, bk.slot, i), "to another primary, "
	if i%2 == 1 {
		to, where = mt.added, "to the added primary, "
		require.Eventually(t, func() bool { return trackingClients(t, to.Addr()) == 0 }, 5*time.Second, time.Millisecond,
			"trial %d: a process still tracks the primary that serves nothing", i)
	}
	m, err := mt.cl.NewMigration(ctx, bk.slot, to)
	require.NoError(t, err)
	if to == mt.added {
		defer func() { // it serves nothing again
			if !t.Failed() {
				require.NoError(t, mt.cl.MigrateSlot(ctx, bk.slot, m.Source()))
			}
		}()
	}
	require.NoError(t, m.Importing(ctx))
	if st >= migrating {
		require.NoError(t, m.Migrating(ctx))
	}
	var moved time.Time // when a key of the token's had left the source
	switch st {
	case familyMoved, markerMoved:
		moving, staying := bk.family, bk.marker
		if st == markerMoved {
			moving, staying = staying, moving
		}
		require.NoError(t, m.Move(ctx, moving))
		moved = time.Now()
		left, err := m.Keys(ctx, 100)
		require.NoError(t, err)
		require.NotContains(t, left, moving)
		require.Contains(t, left, staying)
	case allMoved:
		n, err := m.MoveAll(ctx)
		moved = time.Now()
		require.NoError(t, err)
		require.GreaterOrEqual(t, n, 2, "the marker and the family at least")
	}

	// B with the slot open, before the kill: the token it answered
	// locally (locally again only within a lease of a key's move: the
	// source's deletion is a write), then the one it never checked.
	start := time.Now()
	trips := b.rt.count(func() { _, err = b.ver.Verify(ctx, tok) })
	how := " (a round trip)"
	if err == nil && trips == 0 {
		how = " (locally)"
		if !moved.IsZero() {
			require.Less(t, start.Sub(moved), testLease, "trial %d: B answered locally from before a key moved, a lease after", i)
		}
	}
	mt.seen.add(where+st.String()+": B, before the kill, the token it answered locally before", fmt.Errorf("%w%s", errOrOK(err), how))
	_, err = b.ver.Verify(ctx, fresh)
	mt.seen.add(where+st.String()+": B, before the kill, a token it never checked", err)

	var killed, assigned atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				after, done := killed.Load(), assigned.Load()
				_, err := b.ver.Verify(context.Background(), tok)
				switch {
				case done:
					assert.ErrorIs(t, err, k.want, "%s, trial %d: a verification begun after the kill returned and the slot moved", k.name, i)
					return
				case after:
					// Refused, as killed or for the open slot: never Live.
					if assert.Error(t, err, "%s, trial %d: B accepted the token after the kill returned", k.name, i) && !errors.Is(err, k.want) {
						mt.seen.add(where+st.String()+": B, after the kill, slot open", err)
					}
				case err != nil && !errors.Is(err, k.want):
					mt.seen.add(where+st.String()+": B, during the kill, slot open", err)
				}
			}
		})
	}
	defer wg.Wait()
	defer assigned.Store(true) // on failure too: the goroutines end

	finish := func() error {
		if st < migrating {
			if err := m.Migrating(ctx); err != nil {
				return err
			}
		}
		if _, err := m.MoveAll(ctx); err != nil {
			return err
		}
		return m.Assign(ctx)
	}
	// The kill, midway. If it fails, the migration completes while A
	// retries it.
	err = k.do(t, a, pair)
	mt.seen.add(where+st.String()+": A's "+k.name+" with the slot open", err)
	var finished chan error
	if err != nil {
		mt.stuck++
		finished = make(chan error, 1)
		go func() { finished <- finish() }()
		for err != nil {
			require.NoError(t, ctx.Err(), "%s, trial %d: the kill never succeeded: %v", k.name, i, err)
			err = k.do(t, a, pair)
			mt.seen.add(where+st.String()+": A's "+k.name+" retried as the migration completes", err)
		}
	}
	killed.Store(true)
	_, err = b.ver.Verify(ctx, tok)
	require.Error(t, err, "%s, trial %d: B accepted the token after the kill returned", k.name, i)

	if finished != nil {
		require.NoError(t, <-finished)
	} else {
		require.NoError(t, finish())
	}
	assigned.Store(true)
	_, err = b.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, k.want, "%s, trial %d: after the migration", k.name, i)
}

// migrate runs every step of m, and returns when the last key had moved
// (the source's deletions, which its tracking connections see, all
// done).
func migrate(t testing.TB, m *redistest.Migration) (moved time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, m.Importing(ctx))
	require.NoError(t, m.Migrating(ctx))
	_, err := m.MoveAll(ctx)
	require.NoError(t, err)
	moved = time.Now()
	require.NoError(t, m.Assign(ctx))
	return moved
}

// addPrimary adds a primary to cl, serving nothing. The tests give it a
// slot and take it back: it must then stay a primary serving nothing,
// rather than become a replica of the slot's new owner, as Redis has a
// primary do when it gives its last slot away (replica migration).
func addPrimary(t testing.TB, cl *redistest.Cluster) *redistest.Server {
	t.Helper()
	added := cl.AddPrimary()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.ConfigSet(ctx, "cluster-allow-replica-migration", "no"))
	return added
}

// openClusterProcess is openProcess on the cluster at addrs.
//
// frozen makes the client's view of the topology the one at its start,
// whatever happens after (go-redis's ClusterSlots option): a process that
// has yet to learn of a change, for as long as a test needs. It follows
// MOVED and ASK redirections, but never tracks a primary added later.
func openClusterProcess(t testing.TB, keys *jtiguard.KeySet, prefix string, addrs []string, frozen bool) *process {
	t.Helper()
	ctx := context.Background()
	rt := &roundTrips{}
	opt := &redis.ClusterOptions{
		Addrs: addrs,
		NewClient: func(opt *redis.Options) *redis.Client {
			n := redis.NewClient(opt)
			n.AddHook(rt)
			return n
		},
	}
	if frozen {
		seed := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		//lint:ignore SA1019 the ClusterSlots option takes CLUSTER SLOTS's reply
		slots, err := seed.ClusterSlots(ctx).Result()
		_ = seed.Close()
		require.NoError(t, err)
		opt.ClusterSlots = func(context.Context) ([]redis.ClusterSlot, error) { return slots, nil }
	}
	c := redis.NewClusterClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	s, err := redisstore.New(ctx, redisstore.Config{Client: c, Prefix: prefix, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return &process{replica: replicaAt(t, keys, s, time.Now, jtiguard.DefaultLeeway), store: s, rt: rt}
}

// bucketKeys are the keys of a session token's state in a cluster: its
// bucket's marker and its family, and the slot they share.
type bucketKeys struct {
	marker, family string
	slot           int
}

func keysOf(prefix string, pair *jtiguard.TokenPair) bucketKeys {
	marker := redisstore.MarkerKey(prefix, pair.Access.Subject)
	return bucketKeys{
		marker: marker,
		family: strings.TrimSuffix(marker, ":e") + ":f:" + pair.Access.Session,
		slot:   redistest.Slot(marker),
	}
}

// sameBucket is n subjects whose state is in subject's bucket (so in its
// slot), subject first.
func sameBucket(prefix, subject string, n int) []string {
	subjects := []string{subject}
	marker := redisstore.MarkerKey(prefix, subject)
	for j := 0; len(subjects) < n; j++ {
		if s := fmt.Sprintf("%s-%d", subject, j); redisstore.MarkerKey(prefix, s) == marker {
			subjects = append(subjects, s)
		}
	}
	return subjects
}

// primaryOtherThan is a primary of cl that does not serve slot, the i-th
// of them in turn.
func primaryOtherThan(t testing.TB, cl *redistest.Cluster, slot, i int) *redistest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	top, err := cl.Topology(ctx)
	require.NoError(t, err)
	var others []*redistest.Server
	for _, n := range top {
		if n.Primary() && !n.Serves(slot) && len(n.Slots) > 0 {
			others = append(others, cl.Node(n.Addr))
		}
	}
	require.NotEmpty(t, others)
	return others[i%len(others)]
}

// trackingClients is how many connections to the node at addr have client
// tracking on (CLIENT LIST flag t).
func trackingClients(t testing.TB, addr string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	list, err := c.ClientList(context.Background()).Result()
	require.NoError(t, err)
	n := 0
	for line := range strings.SplitSeq(strings.TrimSpace(list), "\n") {
		for f := range strings.FieldsSeq(line) {
			if flags, ok := strings.CutPrefix(f, "flags="); ok && strings.Contains(flags, "t") {
				n++
			}
		}
	}
	return n
}

// outcomes counts what verifications and kills gave, by error message
// (node addresses and slots elided), for the test's log.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

var (
	nodeAddr = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	redirect = regexp.MustCompile(`(ASK|MOVED) \d+`)
)

func (o *outcomes) add(what string, err error) {
	msg := "ok"
	if err != nil {
		msg = redirect.ReplaceAllString(nodeAddr.ReplaceAllString(err.Error(), "<node>"), "$1 <slot>")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[what+": "+msg]++
}

// errOK stands for no error in an outcome that says more.
var errOK = errors.New("ok")

func errOrOK(err error) error {
	if err == nil {
		return errOK
	}
	return err
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var lines []string
	for k, v := range o.n {
		lines = append(lines, fmt.Sprintf("%6d  %s", v, k))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
