package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
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
	"github.com/jtiguard/jtiguard/store"
)

// raceTrials is how many trials a test of a race runs: JTIGUARD_TRIALS
// (make faults sets 1,000), or 250 in the unit run, which keeps make test
// within its time.
func raceTrials() int {
	if n, err := strconv.Atoi(os.Getenv("JTIGUARD_TRIALS")); err == nil && n > 0 {
		return n
	}
	return 250
}

// testLease keeps the trials short: every kill waits it out.
const testLease = 10 * time.Millisecond

// process is one API replica: its own client (counting round trips), store,
// verifier and sessions, sharing keys and a prefix with the others.
type process struct {
	*replica
	store *redisstore.Store
	rt    *roundTrips
}

// openProcess connects a process to addr (a standalone server) or addrs
// (a cluster) under prefix.
func openProcess(t testing.TB, keys *jtiguard.KeySet, prefix string, lease time.Duration, addrs []string, cfg ...func(*redisstore.Config)) *process {
	t.Helper()
	rt := &roundTrips{}
	var client redis.UniversalClient
	if len(addrs) == 1 {
		client = standaloneClient(t, addrs[0], rt)
	} else {
		client = clusterClient(t, addrs, rt)
	}
	c := redisstore.Config{Client: client, Prefix: prefix, MaxClockSkew: testSkew, Lease: lease}
	for _, f := range cfg {
		f(&c)
	}
	s, err := redisstore.New(context.Background(), c)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return &process{replica: replicaAt(t, keys, s, time.Now, jtiguard.DefaultLeeway), store: s, rt: rt}
}

// waitAnswering waits until p answers from its local state (its tracking
// subscribed, its lease announced and confirmed by a heartbeat).
func waitAnswering(t testing.TB, p *process) {
	t.Helper()
	require.Eventually(t, func() bool { return redisstore.Answering(p.store) }, 10*time.Second, time.Millisecond, "local answers never started")
}

// local reports whether a verification of tok on p, expected to succeed,
// took no round trip.
func (p *process) local(t testing.TB, tok string) bool {
	t.Helper()
	var err error
	n := p.rt.count(func() { _, err = p.ver.Verify(context.Background(), tok) })
	require.NoError(t, err)
	return n == 0
}

// soonLocal reports whether p comes to answer tok locally within a moment:
// a write to the token's bucket (A's login, say) may land after p's first
// check and void what it fetched.
func (p *process) soonLocal(t testing.TB, tok string) bool {
	t.Helper()
	for start := time.Now(); time.Since(start) < time.Second; {
		if p.local(t, tok) {
			return true
		}
	}
	return false
}

func TestLocalAnswersTakeNoRoundTrip(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	cl := redistest.StartCluster(t)
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			addrs := []string{srv.Addr()}
			if mode == "cluster" {
				addrs = cl.Addrs()
			}
			keys := testKeys(t)
			prefix := "local" + randomID(t)[:8] + ":"
			// No kills here: a lease longer than the heartbeats' delays
			// on a loaded machine, so that a late one does not end it.
			p := openProcess(t, keys, prefix, 20*testLease, addrs)
			waitAnswering(t, p)
			pair, err := p.sess.Login(context.Background(), jtiguard.Login{Subject: "alice"})
			require.NoError(t, err)
			plain := p.plain(t)
			for _, tok := range []string{pair.AccessToken, plain} {
				assert.False(t, p.local(t, tok), "the first check is a round trip")
				local := 0
				for range 100 {
					if p.local(t, tok) {
						local++
					}
				}
				// A heartbeat that happens to be late leaves a round trip
				// or two; a local path that does not work leaves none.
				assert.GreaterOrEqual(t, local, 95, "later checks are answered locally")
			}

			off := openProcess(t, keys, prefix, -1, addrs)
			for range 10 {
				assert.False(t, off.local(t, plain), "with the lease off every check is a round trip")
			}
		})
	}
}

// kill is one way of making a live access token dead from another
// process, and the rejection it must then get.
type kill struct {
	name string
	want error
	do   func(t testing.TB, a *process, pair *jtiguard.TokenPair) error
}

var kills = []kill{
	{"Revoke", jtiguard.ErrRevoked, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		return a.ver.Revoke(context.Background(), p.AccessToken)
	}},
	{"RevokeID", jtiguard.ErrRevoked, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		return a.ver.RevokeID(context.Background(), p.Access.ID, p.Access.Subject, p.Access.ExpiresAt)
	}},
	{"Logout", jtiguard.ErrSessionEnded, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		return a.sess.Logout(context.Background(), p.RefreshToken)
	}},
	{"LogoutAll", jtiguard.ErrSessionEnded, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		_, err := a.sess.LogoutAll(context.Background(), p.Access.Subject)
		return err
	}},
	{"Renew", jtiguard.ErrSuperseded, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		_, err := a.sess.Renew(context.Background(), p.AccessToken, jtiguard.Change{ACR: "mfa"})
		return err
	}},
	{"EndSession", jtiguard.ErrSessionEnded, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		return a.sess.EndSession(context.Background(), p.Access.Subject, p.Access.Session)
	}},
	{"EndOthers", jtiguard.ErrSessionEnded, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		other, err := a.sess.Login(context.Background(), jtiguard.Login{Subject: p.Access.Subject})
		if err != nil {
			return err
		}
		_, err = a.sess.EndOthers(context.Background(), other.AccessToken)
		return err
	}},
	{"LoginOverTheCap", jtiguard.ErrSessionEnded, func(t testing.TB, a *process, p *jtiguard.TokenPair) error {
		capped, err := jtiguard.NewSessions(a.iss, a.ver, jtiguard.SessionConfig{MaxSessions: 1})
		require.NoError(t, err)
		_, err = capped.Login(context.Background(), jtiguard.Login{Subject: p.Access.Subject})
		return err
	}},
	{"Reuse", jtiguard.ErrRefreshReused, func(_ testing.TB, a *process, p *jtiguard.TokenPair) error {
		if _, err := a.sess.Refresh(context.Background(), p.RefreshToken); err != nil {
			return err
		}
		// Past the grace window (off here): the first refresh token again
		// is reuse, and the family dies.
		_, err := a.sess.Refresh(context.Background(), p.RefreshToken)
		if errors.Is(err, jtiguard.ErrRefreshReused) {
			return nil
		}
		return fmt.Errorf("want reuse detected, got %v", err)
	}},
}

// TestKillOnOneProcessIsSeenOnAnotherAtOnce: B answers a token locally,
// with goroutines verifying it all along; A kills it. No verification on B
// that begins after A's call returned accepts it: raceTrials trials over
// the ways of killing a token (a fifth as many on a cluster).
func TestKillOnOneProcessIsSeenOnAnotherAtOnce(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			addrs, trials := []string{redistest.Start(t).Addr()}, raceTrials()
			if mode == "cluster" {
				addrs, trials = redistest.StartCluster(t).Addrs(), raceTrials()/5
			}
			killTrials(t, addrs, trials)
		})
	}
}

func killTrials(t *testing.T, addrs []string, trials int) {
	keys := testKeys(t)
	prefix := "kill" + randomID(t)[:8] + ":"
	a := openProcess(t, keys, prefix, testLease, addrs)
	b := openProcess(t, keys, prefix, testLease, addrs)
	a.sess = sessionsWithoutGrace(t, a)
	waitAnswering(t, b)
	locally := 0
	for i := range trials {
		k := kills[i%len(kills)]
		pair, err := a.sess.Login(context.Background(), jtiguard.Login{Subject: fmt.Sprintf("user-%d", i%50)})
		require.NoError(t, err)
		if b.soonLocal(t, pair.AccessToken) {
			locally++
		}
		var killed atomic.Bool
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for {
					after := killed.Load()
					_, err := b.ver.Verify(context.Background(), pair.AccessToken)
					if after {
						assert.ErrorIs(t, err, k.want, "%s, trial %d: a verification begun after the kill returned", k.name, i)
						return
					}
					if err != nil {
						assert.ErrorIs(t, err, k.want, "%s, trial %d", k.name, i)
					}
				}
			})
		}
		require.NoError(t, k.do(t, a, pair), k.name)
		killed.Store(true)
		_, err = b.ver.Verify(context.Background(), pair.AccessToken)
		require.ErrorIs(t, err, k.want, "%s, trial %d", k.name, i)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	// The trials test the local path only if B answered locally before.
	assert.GreaterOrEqual(t, locally, trials*9/10, "B answered locally before the kill")
	t.Logf("%d of %d trials answered locally before the kill", locally, trials)
}

// sessionsWithoutGrace is p's Sessions with the refresh grace off, so that
// a refresh token presented twice is reuse at once.
func sessionsWithoutGrace(t testing.TB, p *process) *jtiguard.Sessions {
	s, err := jtiguard.NewSessions(p.iss, p.ver, jtiguard.SessionConfig{RefreshGrace: -1})
	require.NoError(t, err)
	return s
}

// TestTrackingConnectionPausedOrCut: B's tracking connection goes through a
// proxy that stops forwarding (a stalled network) or drops it. A revokes a
// token B had answered locally; when Revoke returns, B refuses it: it
// stopped answering locally when its heartbeats stopped coming back, and
// the round trip it falls back to reads the revocation.
func TestTrackingConnectionPausedOrCut(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	keys := testKeys(t)
	prefix := "pause" + randomID(t)[:8] + ":"
	a := openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	b := openProcess(t, keys, prefix, testLease, []string{srv.Addr()}, func(c *redisstore.Config) {
		redisstore.SetTrackingDial(c, func(o *redis.Options) { o.Addr = proxy.Addr() })
	})
	for i := range raceTrials() {
		tok := a.plain(t)
		waitAnswering(t, b)
		require.True(t, b.soonLocal(t, tok), "trial %d: never answered locally", i)
		cut := i%2 == 1
		if cut {
			proxy.Cut()
		} else {
			proxy.Pause()
		}
		require.NoError(t, a.ver.Revoke(context.Background(), tok))
		_, err := b.ver.Verify(context.Background(), tok)
		if !cut {
			proxy.Resume()
		}
		require.ErrorIs(t, err, jtiguard.ErrRevoked, "trial %d (cut %v)", i, cut)
	}
}

// TestLocalStateGoesWithTheData: Redis restarted empty, flushed, or failed
// over behind one address. B, which answered a token locally, stops within
// a lease of the event (at once, when it sees its tracking connection
// drop or the flush), and from then on the data-loss rules hold: tokens
// from before the loss are refused as lost, by B as by anyone.
func TestLocalStateGoesWithTheData(t *testing.T) {
	t.Parallel()
	events := []struct {
		name string
		// setup returns the address processes use and the event.
		setup func(t *testing.T) (addr string, event func())
		want  error
	}{
		{"restart empty", func(t *testing.T) (string, func()) {
			srv := redistest.Start(t)
			return srv.Addr(), srv.Restart
		}, jtiguard.ErrStateLost},
		{"FLUSHALL", func(t *testing.T) (string, func()) {
			srv := redistest.Start(t)
			return srv.Addr(), func() {
				c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
				defer c.Close()
				require.NoError(t, c.FlushAll(context.Background()).Err())
			}
		}, jtiguard.ErrStateLost},
		{"failover to an empty replica", func(t *testing.T) (string, func()) {
			// A replica promoted empty (one that had not synced, say): what
			// the failover loses is everything.
			r := redistest.StartReplicated(t, 1)
			vip := redistest.NewProxy(t, r.Primary.Addr())
			return vip.Addr(), func() {
				r.KillPrimary()
				promoted := r.Promote(0)
				c := redis.NewClient(&redis.Options{Addr: promoted.Addr()})
				defer c.Close()
				require.NoError(t, c.FlushAll(context.Background()).Err()) // it had nothing
				vip.Retarget(promoted.Addr())
				vip.Cut()
			}
		}, jtiguard.ErrStateLost},
	}
	for _, ev := range events {
		t.Run(ev.name, func(t *testing.T) {
			addr, event := ev.setup(t)
			keys := testKeys(t)
			prefix := "loss" + randomID(t)[:8] + ":"
			b := openProcess(t, keys, prefix, testLease, []string{addr}, func(c *redisstore.Config) { c.Replicas = -1 })
			waitAnswering(t, b)
			tok := b.plain(t)
			require.True(t, b.soonLocal(t, tok))

			event()
			gone := time.Now()
			for {
				_, err := b.ver.Verify(context.Background(), tok)
				if err != nil {
					require.ErrorIs(t, err, ev.want)
					break
				}
				// Accepted: only from a lease that began before the event.
				require.Less(t, time.Since(gone), testLease, "accepted a lease after the event")
			}
			_, err := b.ver.Verify(context.Background(), tok)
			require.ErrorIs(t, err, ev.want, "and from then on")
		})
	}
}

// TestLeaseAnnouncedAgainAfterALoss: a FLUSHALL takes the key where the
// processes announce their lease; they announce it again within a second
// or so, so that writers go on waiting for it.
func TestLeaseAnnouncedAgainAfterALoss(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	prefix := "announce" + randomID(t)[:8] + ":"
	b := openProcess(t, testKeys(t), prefix, testLease, []string{srv.Addr()})
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	require.NoError(t, c.FlushAll(context.Background()).Err())
	require.Eventually(t, func() bool {
		v, err := c.Get(context.Background(), prefix+"lease").Result()
		ms, _, _ := strings.Cut(v, ":")
		return err == nil && ms == strconv.FormatInt(testLease.Milliseconds(), 10)
	}, 10*time.Second, 10*time.Millisecond, "the lease announced again")
	waitAnswering(t, b)
}

// refOf names the token whose claims are c to a store.
func refOf(t testing.TB, c *jtiguard.Claims) store.TokenRef {
	ref := store.TokenRef{ID: c.ID, Subject: c.Subject, Generation: c.Generation}
	if c.Session != "" {
		sid, err := jtiguard.ParseJTI(c.Session)
		require.NoError(t, err)
		ref.Session = sid
	}
	return ref
}

// TestWritesAboutOthersKeepLocalAnswers: invalidation is per key. Logins,
// refreshes, logouts and revocations of other subjects whose state shares
// the bucket (each bumps the bucket's marker), and another session of the
// same subject ended, leave a token's local answer in place; a write about
// the token itself, or its bucket's marker rewritten, drops it. (Ids share
// one of 4,096 versions per kind: a write about one that shares a version
// with the token's drops it too, and the test then claims nothing.)
func TestWritesAboutOthersKeepLocalAnswers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	keys := testKeys(t)
	prefix := "perkey" + randomID(t)[:8] + ":"
	a := openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	b := openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	waitAnswering(t, b)
	ctx := context.Background()
	others := sameBucket(prefix, "alice", 6)[1:]
	// written collects the ids a write names (jti and sid values).
	var written []store.JTI
	login := func(t *testing.T, subject string) *jtiguard.TokenPair {
		p, err := a.sess.Login(ctx, jtiguard.Login{Subject: subject})
		require.NoError(t, err)
		written = append(written, refOf(t, p.Access).Session, p.Access.ID, p.Refresh.ID)
		return p
	}
	synced := func(t *testing.T) {
		require.Eventually(t, redisstore.HeartbeatAfter(b.store), 10*time.Second, time.Millisecond, "B's heartbeats stopped")
	}
	writes := []struct {
		name                  string
		keepAccess, keepPlain bool // alice's access token of a session, and one of none
		write                 func(t *testing.T, access *jtiguard.TokenPair, plain string) error
	}{
		{"another's login", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			login(t, others[0])
			return nil
		}},
		{"another's refresh", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			p, err := a.sess.Refresh(ctx, login(t, others[1]).RefreshToken)
			if err == nil {
				written = append(written, p.Access.ID, p.Refresh.ID)
			}
			return err
		}},
		{"another's logout", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			return a.sess.Logout(ctx, login(t, others[2]).AccessToken)
		}},
		{"another's logout everywhere", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			login(t, others[3])
			_, err := a.sess.LogoutAll(ctx, others[3])
			return err
		}},
		{"another's token revoked", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			tok, c, err := a.iss.Access(jtiguard.Claims{Subject: others[4], Audience: []string{testAudience}})
			require.NoError(t, err)
			written = append(written, c.ID)
			return a.ver.Revoke(ctx, tok)
		}},
		{"another session of the subject ended", true, true, func(t *testing.T, _ *jtiguard.TokenPair, _ string) error {
			return a.sess.Logout(ctx, login(t, "alice").AccessToken)
		}},
		{"the token of no session revoked", true, false, func(_ *testing.T, _ *jtiguard.TokenPair, plain string) error {
			return a.ver.Revoke(ctx, plain)
		}},
		{"the session renewed", false, true, func(_ *testing.T, p *jtiguard.TokenPair, _ string) error {
			_, err := a.sess.Renew(ctx, p.AccessToken, jtiguard.Change{ACR: "mfa"})
			return err
		}},
		{"the bucket's marker rewritten", false, false, func(*testing.T, *jtiguard.TokenPair, string) error {
			return redisstore.RewriteMarker(ctx, a.store, "alice")
		}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			pair := login(t, "alice")
			plain, plainClaims, err := a.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
			require.NoError(t, err)
			synced(t) // the login's own invalidation taken before B answers
			require.True(t, b.soonLocal(t, pair.AccessToken), "B never answered the access token locally")
			require.True(t, b.soonLocal(t, plain), "B never answered the token of no session locally")

			access, none := refOf(t, pair.Access), refOf(t, plainClaims)
			written = nil
			require.NoError(t, w.write(t, pair, plain))
			synced(t)
			for _, id := range written {
				for _, own := range []store.JTI{access.ID, access.Session, none.ID} {
					if redisstore.SharesVersion(id, own) {
						t.Skipf("a write named an id sharing a version with the token's: nothing to claim")
					}
				}
			}
			assert.Equal(t, w.keepAccess, redisstore.Kept(b.store, access), "the access token's local answer kept")
			assert.Equal(t, w.keepPlain, redisstore.Kept(b.store, none), "the plain token's local answer kept")
		})
	}
}

// TestNoLocalAnswerWithoutTheSignal: a bucket whose signal key is missing
// (written by a version before it, or on its way to another node) gives
// no local answer: its keys could leave unnoticed. A store opened after
// writes the missing signal, and local answers resume.
func TestNoLocalAnswerWithoutTheSignal(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	keys := testKeys(t)
	prefix := "signal" + randomID(t)[:8] + ":"
	b := openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	waitAnswering(t, b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	signal := strings.TrimSuffix(redisstore.MarkerKey(prefix, "alice"), ":e") + ":m"
	require.NoError(t, c.Del(context.Background(), signal).Err())
	tok := b.plain(t)
	for i := range 20 {
		require.False(t, b.local(t, tok), "check %d answered locally with no signal", i)
	}
	openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	require.True(t, b.soonLocal(t, tok), "no local answer once the signal is back")
}

// TestLeaseKeyDeletedIsAnnouncedAgainAtOnce: deleting the lease key (to
// lower it, or a loss of that key alone) is a sign writers may now wait
// less than this process's lease. The process drops its local answers,
// announces its lease again at once (its invalidation wakes the announce,
// not the next second's tick), and withholds answers until writers have
// re-read it.
func TestLeaseKeyDeletedIsAnnouncedAgainAtOnce(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	prefix := "reannounce" + randomID(t)[:8] + ":"
	keys := testKeys(t)
	b := openProcess(t, keys, prefix, testLease, []string{srv.Addr()})
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	for round := range 3 {
		waitAnswering(t, b)
		tok := b.plain(t)
		require.Eventually(t, func() bool { return b.local(t, tok) }, 10*time.Second, time.Millisecond, "round %d: never answered locally", round)

		require.NoError(t, c.Del(ctx, prefix+"lease").Err())
		deleted := time.Now()
		require.Eventually(t, func() bool {
			v, err := c.Get(ctx, prefix+"lease").Result()
			ms, _, _ := strings.Cut(v, ":")
			return err == nil && ms == strconv.FormatInt(testLease.Milliseconds(), 10)
		}, 10*time.Second, time.Millisecond, "round %d: the lease never announced again", round)
		// The periodic announce comes once a second: three rounds each
		// back well within half of that are the invalidation's doing.
		assert.Less(t, time.Since(deleted), 500*time.Millisecond, "round %d: announced again by the tick, not at once", round)
		assert.False(t, redisstore.Answering(b.store), "round %d: answers given right after the key came back", round)
		assert.False(t, b.local(t, tok), "round %d: a local answer from before the deletion", round)
	}
}

// TestLeaseKeyWrittenAgainHoldsAnswersBack: the lease key deleted and
// written again by another process (as after a loss, or a deletion to
// lower it) before this one announces: writers may have read it missing
// meanwhile, and keep that for up to a second. The process finds the key
// long enough but of another birth, and holds its answers back as if it
// had written it itself.
func TestLeaseKeyWrittenAgainHoldsAnswersBack(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	prefix := "reborn" + randomID(t)[:8] + ":"
	b := openProcess(t, testKeys(t), prefix, testLease, []string{srv.Addr()})
	waitAnswering(t, b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, prefix+"lease")
		p.Set(ctx, prefix+"lease", strconv.FormatInt(testLease.Milliseconds(), 10)+":another", 0)
		return nil
	})
	require.NoError(t, err)
	require.Eventually(t, redisstore.HeartbeatAfter(b.store), 10*time.Second, time.Millisecond)
	assert.Never(t, func() bool { return redisstore.Answering(b.store) }, time.Second, time.Millisecond, "answers given within a second of the key's rebirth")
	waitAnswering(t, b)
}

// TestCloseWhileOthersWrite: Close returns though invalidations keep
// coming (a tracking connection's reads end with the store, not with the
// next quiet second).
func TestCloseWhileOthersWrite(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	prefix := "close" + randomID(t)[:8] + ":"
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	s, err := redisstore.New(context.Background(), redisstore.Config{Client: c, Prefix: prefix, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		w := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer w.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = w.Set(context.Background(), prefix+"{b00}:noise", 1, time.Minute).Err()
		}
	})
	defer func() { close(stop); wg.Wait() }()
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while another client kept writing")
	}
}

// TestLeaseOffIsRoundTrips: with the lease off everywhere, every check is a
// round trip and a kill does not wait.
func TestLeaseOffIsRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	prefix := "off" + randomID(t)[:8] + ":"
	a := openProcess(t, keys, prefix, -1, []string{srv.Addr()})
	b := openProcess(t, keys, prefix, -1, []string{srv.Addr()})
	tok := a.plain(t)
	for range 20 {
		assert.False(t, b.local(t, tok))
	}
	assert.False(t, redisstore.Answering(b.store))
	require.NoError(t, a.ver.Revoke(context.Background(), tok))
	_, err := b.ver.Verify(context.Background(), tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
}
