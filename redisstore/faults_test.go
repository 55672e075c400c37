package redisstore_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jtiguard/jtiguard/store"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// skewedClock is this process's clock set off from the servers' (real
// time) by an offset the test moves: the one fake here, a clock.
type skewedClock struct{ off atomic.Int64 }

func (c *skewedClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// replicaAt is newReplica on the clock now, with the verifier's leeway.
func replicaAt(t testing.TB, keys *jtiguard.KeySet, store store.Store, now func() time.Time, leeway time.Duration) *replica {
	t.Helper()
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer, Now: now})
	require.NoError(t, err)
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: store, Now: now, Leeway: leeway, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	sess, err := jtiguard.NewSessions(iss, ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	return &replica{ver: ver, sess: sess, iss: iss}
}

func (r *replica) plain(t testing.TB) string {
	t.Helper()
	tok, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	return tok
}

func (r *replica) once(t testing.TB) string {
	t.Helper()
	tok, _, err := r.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "transfer"})
	require.NoError(t, err)
	return tok
}

// deadTokens is what a loss must not bring back: a used one-time token, a
// revoked access token, a superseded refresh token and the access token of
// a logged-out session.
type deadTokens struct {
	used, revoked, superseded, loggedOut string
}

func killTokens(t *testing.T, r *replica) deadTokens {
	t.Helper()
	ctx := context.Background()
	d := deadTokens{used: r.once(t), revoked: r.plain(t)}
	_, err := r.ver.Consume(ctx, d.used, "transfer")
	require.NoError(t, err)
	require.NoError(t, r.ver.Revoke(ctx, d.revoked))
	p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	p2, err := r.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	_, err = r.sess.Refresh(ctx, p2.RefreshToken)
	require.NoError(t, err)
	d.superseded = p.RefreshToken
	q, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	require.NoError(t, r.sess.Logout(ctx, q.AccessToken))
	d.loggedOut = q.AccessToken
	return d
}

// assertDead checks, twice each, that no dead token passes.
func assertDead(t *testing.T, r *replica, d deadTokens) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		_, err := r.ver.Consume(ctx, d.used, "transfer")
		assert.Error(t, err, "a used one-time token was accepted again")
		_, err = r.ver.Verify(ctx, d.revoked)
		assert.Error(t, err, "a revoked token verified")
		_, err = r.sess.Refresh(ctx, d.superseded)
		assert.Error(t, err, "a superseded refresh token rotated")
		_, err = r.ver.Verify(ctx, d.loggedOut)
		assert.Error(t, err, "a logged-out session's token verified")
	}
}

// TestClockSkewDoesNotDefeatLossDetection: with this process's clock the
// leeway ahead of or behind Redis's, a restart that empties Redis still
// kills every token from before it. (The loss marker lies MaxClockSkew
// after the server's time; it used to be the server's time plus a second,
// and a clock 3 s ahead let a used token through twice.)
func TestClockSkewDoesNotDefeatLossDetection(t *testing.T) {
	const leeway = 2 * time.Second
	for _, skew := range []time.Duration{leeway, -leeway} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			clk := &skewedClock{}
			clk.off.Store(int64(skew))
			client := standaloneClient(t, srv.Addr())
			store, err := redisstore.New(context.Background(), redisstore.Config{Client: client, CacheSize: -1, MaxClockSkew: leeway + 500*time.Millisecond, Now: clk.Now})
			require.NoError(t, err)
			t.Cleanup(store.Close)
			r := replicaAt(t, testKeys(t), store, clk.Now, leeway)
			d := killTokens(t, r)

			srv.Restart() // kill -9, empty
			awaitReconnect(t, r)
			assertDead(t, r, d)
		})
	}
}

// TestClockSkewBeyondTheBoundFailsClosed: a clock further off than
// MaxClockSkew is refused at New, and a clock that jumps later makes every
// call fail closed until it is back.
func TestClockSkewBeyondTheBoundFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	client := standaloneClient(t, srv.Addr())
	clk := &skewedClock{}
	clk.off.Store(int64(3 * time.Second))
	_, err := redisstore.New(context.Background(), redisstore.Config{Client: client, MaxClockSkew: time.Second, Now: clk.Now})
	require.ErrorIs(t, err, redisstore.ErrClockSkew)

	clk.off.Store(0)
	store, err := redisstore.New(context.Background(), redisstore.Config{Client: client, MaxClockSkew: time.Second, Now: clk.Now})
	require.NoError(t, err)
	t.Cleanup(store.Close)
	r := replicaAt(t, testKeys(t), store, time.Now, 0)
	tok := r.plain(t)
	_, err = r.ver.Verify(context.Background(), tok)
	require.NoError(t, err)

	clk.off.Store(int64(-3 * time.Second)) // an NTP step on this host
	require.Eventually(t, func() bool {
		_, err := r.ver.Verify(context.Background(), tok)
		return errors.Is(err, jtiguard.ErrStoreUnavailable) && errors.Is(err, redisstore.ErrClockSkew)
	}, 10*time.Second, 10*time.Millisecond, "calls fail closed while the clock is off")
	clk.off.Store(0)
	require.Eventually(t, func() bool {
		_, err := r.ver.Verify(context.Background(), tok)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "and resume once it is back")
}

// TestSameSecondRestart: tokens used and revoked, Redis killed and
// restarted empty, and a new store instance created (a replica starting),
// all within one second: nothing comes back. (Markers of one-second
// granularity, written at once, let both through every time.)
func TestSameSecondRestart(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	first := newStore(t, standaloneClient(t, srv.Addr()), -1)
	prefix := prefixOf(t, first, standaloneClient(t, srv.Addr()))
	r := newReplica(t, keys, first)
	// Start at the beginning of a second, so that what follows fits in it.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	start := time.Now()
	used, revoked := r.once(t), r.plain(t)
	_, err := r.ver.Consume(context.Background(), used, "transfer")
	require.NoError(t, err)
	require.NoError(t, r.ver.Revoke(context.Background(), revoked))
	srv.Restart()
	fresh, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(fresh.Close)
	t.Logf("used, revoked, restarted and reopened in %v", time.Since(start))
	r2 := newReplica(t, keys, fresh)
	for range 2 {
		_, err = r2.ver.Consume(context.Background(), used, "transfer")
		require.ErrorIs(t, err, jtiguard.ErrStateLost)
		_, err = r2.ver.Verify(context.Background(), revoked)
		require.ErrorIs(t, err, jtiguard.ErrStateLost)
	}
	// New waited until tokens issued from now on are vouched for.
	_, err = r2.ver.Verify(context.Background(), r2.plain(t))
	require.NoError(t, err)
}

// TestEvictingPolicyRefused: a maxmemory-policy that can evict the store's
// keys is refused at New, and a policy changed later fails every call.
func TestEvictingPolicyRefused(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory-policy", "volatile-lru")
	client := standaloneClient(t, srv.Addr())
	_, err := redisstore.New(context.Background(), redisstore.Config{Client: client, MaxClockSkew: testSkew, Lease: testLease})
	require.ErrorIs(t, err, jtiguard.ErrConfig)
	require.ErrorContains(t, err, "volatile-lru")

	ctx := context.Background()
	require.NoError(t, client.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	store := newStore(t, client, -1)
	r := newReplica(t, testKeys(t), store)
	tok := r.plain(t)
	_, err = r.ver.Verify(ctx, tok)
	require.NoError(t, err)
	require.NoError(t, client.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	require.Eventually(t, func() bool {
		_, err := r.ver.Verify(ctx, tok)
		return errors.Is(err, jtiguard.ErrStoreUnavailable) && errors.Is(err, jtiguard.ErrConfig)
	}, 10*time.Second, 10*time.Millisecond)
}

// TestLogoutAllAfterNodeLoss: FLUSHALL on the cluster node that holds a
// subject's state takes its families and index together (they share a
// slot), so none of its sessions survives, and logout-all still works.
func TestLogoutAllAfterNodeLoss(t *testing.T) {
	cl := redistest.StartCluster(t)
	client := clusterClient(t, cl.Addrs())
	store := newStore(t, client, -1)
	r := newReplica(t, testKeys(t), store)
	ctx := context.Background()
	var live []*jtiguard.TokenPair
	for range 20 {
		p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
		require.NoError(t, err)
		live = append(live, p)
	}
	// Flush the node that holds alice's families: find it by a key of hers.
	var holder *redis.Client
	require.NoError(t, client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		n, err := c.DBSize(ctx).Result()
		if err == nil && n > 0 {
			keys, _ := c.Keys(ctx, "*:s:*").Result()
			if len(keys) > 0 {
				holder = c
			}
		}
		return err
	}))
	require.NotNil(t, holder, "some node holds alice's index")
	require.NoError(t, holder.FlushAll(ctx).Err())
	for _, p := range live {
		_, err := r.ver.Verify(ctx, p.AccessToken)
		assert.Error(t, err, "a session outlived its node's data")
		_, err = r.sess.Refresh(ctx, p.RefreshToken)
		assert.Error(t, err)
	}
	_, err := r.sess.LogoutAll(ctx, "alice")
	require.NoError(t, err)
}

// TestLoginRacingLogoutAll: logins racing logout-alls of one subject, on
// two replicas: every session begun is ended by the logout-all that runs
// after all of them (it used to escape within a few dozen rounds, when
// logout-all dropped index entries of families not yet written).
func TestLoginRacingLogoutAll(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	a := newReplica(t, keys, newStore(t, standaloneClient(t, srv.Addr()), -1))
	ctx := context.Background()
	const rounds = 1000
	pairs := make([]*jtiguard.TokenPair, rounds)
	for i := range rounds {
		var wg sync.WaitGroup
		wg.Go(func() {
			p, err := a.sess.Login(ctx, jtiguard.Login{Subject: "racer"})
			if assert.NoError(t, err) {
				pairs[i] = p
			}
		})
		wg.Go(func() {
			_, err := a.sess.LogoutAll(ctx, "racer")
			assert.NoError(t, err)
		})
		wg.Wait()
	}
	_, err := a.sess.LogoutAll(ctx, "racer")
	require.NoError(t, err)
	escaped := 0
	for _, p := range pairs {
		if p == nil {
			continue
		}
		if _, err := a.ver.Verify(ctx, p.AccessToken); err == nil {
			escaped++
		}
	}
	assert.Zero(t, escaped, "sessions that escaped logout-all in %d rounds", rounds)
}

// TestRevokeIDAcrossReplicas: a token revoked by id on one replica (an
// access token of a session, a refresh token) is refused on the other; a
// revoked refresh token mints nothing.
func TestRevokeIDAcrossReplicas(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	a := newReplica(t, keys, newStore(t, standaloneClient(t, srv.Addr()), 0))
	prefix := prefixOf(t, nil, standaloneClient(t, srv.Addr()))
	storeB, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefix, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(storeB.Close)
	b := newReplica(t, keys, storeB)
	ctx := context.Background()
	p, err := a.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	require.NoError(t, a.ver.RevokeID(ctx, p.Access.ID, p.Access.Subject, p.Access.ExpiresAt))
	_, err = b.ver.Verify(ctx, p.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
	require.NoError(t, a.ver.RevokeID(ctx, p.Refresh.ID, p.Refresh.Subject, p.Refresh.ExpiresAt))
	_, err = b.sess.Refresh(ctx, p.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
	_, err = a.sess.Refresh(ctx, p.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
}

// TestPingForReadiness: Verifier.Ping answers 503 while Redis is down and
// nil once it is back, for a readiness probe.
func TestPingForReadiness(t *testing.T) {
	srv := redistest.Start(t, "--save", "3600 1")
	client := standaloneClient(t, srv.Addr())
	r := newReplica(t, testKeys(t), newStore(t, client, -1))
	ctx := context.Background()
	require.NoError(t, r.ver.Ping(ctx))
	require.NoError(t, client.Save(ctx).Err())
	srv.Stop()
	err := r.ver.Ping(ctx)
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	srv.Restart()
	require.Eventually(t, func() bool { return r.ver.Ping(ctx) == nil }, 10*time.Second, 20*time.Millisecond)
}
