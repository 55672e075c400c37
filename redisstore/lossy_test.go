package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// The lost-reply test's sizes: each fraction runs its scenarios with
// lossyWorkers clients at once.
const (
	lossyWorkers     = 12
	lossyAttackers   = 4   // replaying tokens whose owner finished
	lossyTokens      = 300 // one-time tokens, each used by one honest client
	lossyFamilies    = 200 // families refreshed under the default grace
	graceOffFamilies = 40  // families refreshed with the grace off
	lossyRefreshes   = 3   // refreshes per family
	// lossyClientRetries is how often an honest client retries a call answered
	// 503 before giving up. A call is answered 503 when go-redis lost all
	// of its 4 attempts' replies (fraction^4: 1/16 at 50%), so giving up
	// (fraction^(4*(lossyClientRetries+1))) never happens in practice.
	lossyClientRetries = 8
	// lossyMinDropped is the fewest replies a scenario must have lost for it to
	// count (expected: hundreds).
	lossyMinDropped = 20
)

// lossyEnv is one redis-server seen by a replica through a direct
// connection (setup and ground truth) and by one through a proxy that loses
// a fraction of the replies to scripts (EVALSHA, EVAL): the command runs,
// its reply never arrives, the connection closes, and go-redis resends it
// on a new one (up to MaxRetries, 3 by default).
type lossyEnv struct {
	fraction float64
	proxy    *redistest.Proxy
	direct   *replica
	lossy    *replica
}

func newLossyEnv(t *testing.T, fraction float64, seed uint64) *lossyEnv {
	t.Helper()
	srv := redistest.Start(t)
	keys := testKeys(t)
	directClient := standaloneClient(t, srv.Addr())
	directStore := newStore(t, directClient, -1)
	prefix := prefixOf(t, directStore, directClient)

	proxy := redistest.NewProxy(t, srv.Addr())
	viaProxy := standaloneClient(t, proxy.Addr()) // go-redis defaults: MaxRetries 3
	lossyStore, err := redisstore.New(context.Background(), redisstore.Config{Client: viaProxy, Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(lossyStore.Close)
	// Armed only now: New's script loads and markers went through intact.
	proxy.DropRepliesMatching(fraction, seed, "evalsha", "eval")
	return &lossyEnv{fraction: fraction, proxy: proxy, direct: newReplica(t, keys, directStore), lossy: newReplica(t, keys, lossyStore)}
}

// TestLostReplies: through a proxy that loses 20% and 50% of the replies to
// scripts, honest clients that retry a call answered 503 (as an HTTP client
// would) never get a one-time token accepted twice, never have a first use
// refused, and never lose their session under the default refresh grace.
// What a lost reply does cost is reported: a one-time token whose consume
// was answered 503 after it committed is used (at most once), and with the
// grace off a refresh retried after a 503 kills its family.
func TestLostReplies(t *testing.T) {
	for _, tc := range []struct {
		fraction float64
		seed     uint64
	}{{0.2, 20}, {0.5, 50}} {
		t.Run(fmt.Sprintf("drop %.0f%%", tc.fraction*100), func(t *testing.T) {
			t.Parallel()
			e := newLossyEnv(t, tc.fraction, tc.seed)
			t.Run("one-time tokens", func(t *testing.T) { lostRepliesConsume(t, e) })
			t.Run("refresh, default grace", func(t *testing.T) {
				c := lostRepliesRefresh(t, e, e.lossy.sess, lossyFamilies)
				assert.Zero(t, c.killed.Load(), "honest families killed with the default grace")
				assert.Zero(t, c.reused.Load(), "refreshes answered ErrRefreshReused")
				assert.Zero(t, c.gaveUp.Load(), "clients that gave up")
				if e.fraction >= 0.5 {
					assert.Positive(t, c.unavailable.Load(), "no refresh was answered 503: the retry path went untested")
					assert.Positive(t, c.retriedOK.Load(), "no refresh retried after a 503 succeeded")
				}
			})
			t.Run("refresh, grace off", func(t *testing.T) {
				sess, err := jtiguard.NewSessions(e.lossy.iss, e.lossy.ver, jtiguard.SessionConfig{RefreshGrace: -1})
				require.NoError(t, err)
				c := lostRepliesRefresh(t, e, sess, graceOffFamilies)
				// The measured reason for the default grace: not asserted.
				t.Logf("grace off: %d of %d honest families killed by a retry after a 503 (%d families saw a 503)",
					c.killed.Load(), graceOffFamilies, c.familiesWith503.Load())
				assert.Zero(t, c.gaveUp.Load(), "clients that gave up")
			})
		})
	}
}

// lostRepliesConsume: each one-time token is used by one honest client
// through the lossy replica, which retries a 503 with a new call; after it
// finished, an attacker replays the token on both replicas.
func lostRepliesConsume(t *testing.T, e *lossyEnv) {
	ctx := context.Background()
	toks := make([]string, lossyTokens)
	for i := range toks {
		tok, _, err := e.direct.iss.OneTime(jtiguard.Claims{Subject: "user" + strconv.Itoa(i%32), Audience: []string{testAudience}, Purpose: "transfer"})
		require.NoError(t, err)
		toks[i] = tok
	}
	var (
		accepted      = make([]atomic.Int32, lossyTokens) // by anyone
		calls         atomic.Int64                        // honest Consume calls
		unavailable   atomic.Int64                        // honest calls answered 503
		hit503        atomic.Int64                        // tokens whose owner got a 503
		acceptedLater atomic.Int64                        // ... and whose retry was accepted (the 503'd call had not committed)
		burned        atomic.Int64                        // ... and whose retry got ErrReplayed (the 503'd call had committed)
		firstRefused  atomic.Int64                        // first calls answered ErrReplayed
		gaveUp        atomic.Int64
		other         atomic.Int64
		directReplays atomic.Int64 // attacker replays refused as used by the direct replica
		lossyReplays  atomic.Int64 // attacker replays through the lossy replica, refused or 503
		attackerWins  atomic.Int64
	)
	dropped0, start := e.proxy.Dropped(), time.Now()

	work := make(chan int)
	finished := make(chan int, lossyTokens)
	replay := func() {
		for i := range finished {
			// The direct replica is ground truth: the token is used in Redis.
			_, err := e.direct.ver.Consume(ctx, toks[i], "transfer")
			switch {
			case err == nil:
				accepted[i].Add(1)
				attackerWins.Add(1)
			case errors.Is(err, jtiguard.ErrReplayed):
				directReplays.Add(1)
			default:
				other.Add(1)
				t.Errorf("token %d: replay on the direct replica: %v", i, err)
			}
			_, err = e.lossy.ver.Consume(ctx, toks[i], "transfer")
			switch {
			case err == nil:
				accepted[i].Add(1)
				attackerWins.Add(1)
			case errors.Is(err, jtiguard.ErrReplayed), errors.Is(err, jtiguard.ErrStoreUnavailable):
				lossyReplays.Add(1)
			default:
				other.Add(1)
				t.Errorf("token %d: replay on the lossy replica: %v", i, err)
			}
		}
	}
	var owners, attackers sync.WaitGroup
	for range lossyAttackers {
		attackers.Go(replay)
	}
	for range lossyWorkers {
		owners.Go(func() {
			for i := range work {
				got503 := false
			retry:
				for attempt := 0; ; attempt++ {
					calls.Add(1)
					_, err := e.lossy.ver.Consume(ctx, toks[i], "transfer")
					switch {
					case err == nil:
						accepted[i].Add(1)
						if got503 {
							acceptedLater.Add(1)
						}
						break retry
					case errors.Is(err, jtiguard.ErrStoreUnavailable):
						unavailable.Add(1)
						if !got503 {
							got503 = true
							hit503.Add(1)
						}
						if attempt == lossyClientRetries {
							gaveUp.Add(1)
							break retry
						}
					case errors.Is(err, jtiguard.ErrReplayed) && got503:
						burned.Add(1)
						break retry
					case errors.Is(err, jtiguard.ErrReplayed):
						firstRefused.Add(1)
						t.Errorf("token %d: its first use was refused: %v", i, err)
						break retry
					default:
						other.Add(1)
						t.Errorf("token %d, call %d: %v", i, attempt, err)
						break retry
					}
				}
				finished <- i
			}
		})
	}
	for i := range toks {
		work <- i
	}
	close(work)
	owners.Wait()
	close(finished)
	attackers.Wait()

	var once, twice int64
	for i := range accepted {
		switch n := accepted[i].Load(); {
		case n == 1:
			once++
		case n > 1:
			twice++
			t.Errorf("token %d accepted %d times", i, n)
		}
	}
	dropped := e.proxy.Dropped() - dropped0
	t.Logf("drop %.0f%%, %d one-time tokens in %v: %d honest consume calls, %d replies dropped, %d calls answered 503 on %d tokens "+
		"(%d burned by the 503: its call had committed, the retry got ErrReplayed; %d accepted on retry); "+
		"%d accepted once, %d accepted twice, %d first uses refused, %d gave up; attacker: %d of %d replays accepted",
		e.fraction*100, lossyTokens, time.Since(start).Round(time.Millisecond), calls.Load(), dropped, unavailable.Load(), hit503.Load(),
		burned.Load(), acceptedLater.Load(), once, twice, firstRefused.Load(), gaveUp.Load(), attackerWins.Load(), 2*lossyTokens)

	assert.Zero(t, twice, "one-time tokens accepted twice")
	assert.Zero(t, attackerWins.Load(), "replays accepted")
	assert.Zero(t, firstRefused.Load(), "honest first uses refused")
	assert.Zero(t, other.Load(), "unexpected errors")
	assert.Zero(t, gaveUp.Load(), "clients that gave up")
	assert.EqualValues(t, lossyTokens, once+burned.Load(), "every token was accepted once or burned by a 503")
	assert.EqualValues(t, hit503.Load(), burned.Load()+acceptedLater.Load(), "every 503'd token ended burned or accepted")
	assert.EqualValues(t, lossyTokens, directReplays.Load(), "every token is used in Redis")
	assert.EqualValues(t, lossyTokens, lossyReplays.Load())
	assert.GreaterOrEqual(t, dropped, int64(lossyMinDropped), "the proxy lost too few replies for the test to mean anything")
	if e.fraction >= 0.5 {
		assert.Positive(t, unavailable.Load(), "no consume was answered 503: the client retry path went untested")
	}
}

// lossyRefreshCounts is what one refresh run measured.
type lossyRefreshCounts struct {
	calls, unavailable, familiesWith503 atomic.Int64
	retriedOK                           atomic.Int64 // refreshes that succeeded on a retry after a 503
	reused                              atomic.Int64 // refreshes answered ErrRefreshReused
	killed                              atomic.Int64 // families dead at the end
	gaveUp                              atomic.Int64
}

// lostRepliesRefresh: families logged in on the direct replica are
// refreshed lossyRefreshes times each through sess (on the lossy replica)
// by honest clients that retry a refresh answered 503 with the same
// refresh token, as an OAuth client would. A family is killed if a refresh
// is refused as reuse, or if at the end (checked on the direct replica) its
// last access token does not verify or its last refresh token does not
// rotate. No family is ever killed without a 503 (a refresh go-redis
// resent after a lost reply is recognised by its nonce), grace or not.
func lostRepliesRefresh(t *testing.T, e *lossyEnv, sess *jtiguard.Sessions, families int) *lossyRefreshCounts {
	ctx := context.Background()
	c := &lossyRefreshCounts{}
	var killedWithout503, other atomic.Int64
	dropped0, start := e.proxy.Dropped(), time.Now()

	work := make(chan int)
	var wg sync.WaitGroup
	for range lossyWorkers {
		wg.Go(func() {
			for i := range work {
				p, err := e.direct.sess.Login(ctx, jtiguard.Login{Subject: "user" + strconv.Itoa(i)})
				if !assert.NoError(t, err) {
					continue
				}
				rt, at := p.RefreshToken, p.AccessToken
				saw503, dead := false, false
				for range lossyRefreshes {
				retry:
					for attempt := 0; ; attempt++ {
						c.calls.Add(1)
						np, err := sess.Refresh(ctx, rt)
						switch {
						case err == nil:
							if attempt > 0 {
								c.retriedOK.Add(1)
							}
							rt, at = np.RefreshToken, np.AccessToken
							break retry
						case errors.Is(err, jtiguard.ErrStoreUnavailable):
							c.unavailable.Add(1)
							if !saw503 {
								saw503 = true
								c.familiesWith503.Add(1)
							}
							if attempt == lossyClientRetries {
								c.gaveUp.Add(1)
								dead = true
								break retry
							}
						case errors.Is(err, jtiguard.ErrRefreshReused):
							c.reused.Add(1)
							dead = true
							break retry
						default:
							other.Add(1)
							t.Errorf("family %d, refresh call %d: %v", i, attempt, err)
							dead = true
							break retry
						}
					}
					if dead {
						break
					}
				}
				if !dead {
					// Ground truth, without drops: the family lives.
					if _, err := e.direct.ver.Verify(ctx, at); err != nil {
						dead = true
					} else if _, err := e.direct.sess.Refresh(ctx, rt); err != nil {
						dead = true
					}
				}
				if dead {
					c.killed.Add(1)
					if !saw503 {
						killedWithout503.Add(1)
					}
				}
			}
		})
	}
	for i := range families {
		work <- i
	}
	close(work)
	wg.Wait()

	dropped := e.proxy.Dropped() - dropped0
	t.Logf("drop %.0f%%, %d families x %d refreshes in %v: %d refresh calls, %d replies dropped, %d calls answered 503 in %d families, "+
		"%d refreshes succeeded on a retry after a 503, %d answered reuse, %d families killed (%d without a 503), %d gave up",
		e.fraction*100, families, lossyRefreshes, time.Since(start).Round(time.Millisecond), c.calls.Load(), dropped, c.unavailable.Load(),
		c.familiesWith503.Load(), c.retriedOK.Load(), c.reused.Load(), c.killed.Load(), killedWithout503.Load(), c.gaveUp.Load())

	assert.Zero(t, killedWithout503.Load(), "families killed without a 503: a refresh resent by go-redis was taken for reuse")
	assert.Zero(t, other.Load(), "unexpected errors")
	if families >= lossyFamilies {
		assert.GreaterOrEqual(t, dropped, int64(lossyMinDropped), "the proxy lost too few replies for the test to mean anything")
	}
	return c
}
