package redisstore_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
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
	"github.com/jtiguard/jtiguard/storetest"
)

const (
	testIssuer   = "https://auth.example.com"
	testAudience = "https://api.example.com"
)

// testSkew bounds the clock skew in tests: every process here reads one
// clock, and a small bound keeps New's wait on a fresh prefix short.
const testSkew = 250 * time.Millisecond

// newStore connects a Store to client with a fresh key prefix.
func newStore(t testing.TB, client redis.UniversalClient, cacheSize int) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(context.Background(), redisstore.Config{Client: client, Prefix: "t" + jtiguard.JTI{}.String()[:2] + randomID(t) + ":", CacheSize: cacheSize, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func randomID(t testing.TB) string {
	id, err := store.NewJTI(nil)
	require.NoError(t, err)
	return id.String()
}

func standaloneClient(t testing.TB, addr string, hooks ...redis.Hook) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	for _, h := range hooks {
		c.AddHook(h)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func clusterClient(t testing.TB, addrs []string, hooks ...redis.Hook) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: addrs,
		NewClient: func(opt *redis.Options) *redis.Client {
			n := redis.NewClient(opt)
			for _, h := range hooks {
				n.AddHook(h)
			}
			return n
		},
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// fullStore returns a store on a server over its memory limit (maxmemory
// with noeviction), so that every write is refused with OOM.
func fullStore(t *testing.T) storetest.Store {
	srv := redistest.Start(t, "--maxmemory-policy", "noeviction")
	c := standaloneClient(t, srv.Addr())
	s := newStore(t, c, -1)
	ctx := context.Background()
	require.NoError(t, c.Set(ctx, "ballast", strings.Repeat("x", 4<<20), 0).Err())
	used, err := c.MemoryUsage(ctx, "ballast").Result()
	require.NoError(t, err)
	require.NoError(t, c.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used/2, 10)).Err())
	require.Error(t, c.Set(ctx, "probe", "x", 0).Err(), "the server refuses writes")
	return s
}

func harness(s *redisstore.Store) storetest.Harness {
	return storetest.Harness{
		Store:   s,
		Now:     time.Now,
		Advance: time.Sleep, // the server's clock: wait for it
	}
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Start(t)
	c := standaloneClient(t, srv.Addr())
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		h := harness(newStore(t, c, -1))
		h.NewFull = fullStore
		return h
	})
}

func TestConformanceCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	c := clusterClient(t, cl.Addrs())
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		return harness(newStore(t, c, -1))
	})
}

// replica is one API server: its own verifier (and cache), sessions and
// store client, sharing Redis and keys with the others.
type replica struct {
	ver  *jtiguard.Verifier
	sess *jtiguard.Sessions
	iss  *jtiguard.Issuer
}

func newReplica(t testing.TB, keys *jtiguard.KeySet, store store.Store) *replica {
	t.Helper()
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
	require.NoError(t, err)
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: store, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	sess, err := jtiguard.NewSessions(iss, ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	return &replica{ver: ver, sess: sess, iss: iss}
}

func testKeys(t testing.TB) *jtiguard.KeySet {
	k, err := jtiguard.GenerateKey("k1", jtiguard.EdDSA)
	require.NoError(t, err)
	keys, err := jtiguard.NewKeySet(k)
	require.NoError(t, err)
	return keys
}

func TestTwoReplicas(t *testing.T) {
	srv := redistest.Start(t)
	keys := testKeys(t)
	prefixClient := standaloneClient(t, srv.Addr())
	store := newStore(t, prefixClient, 0)
	// Each replica has its own store instance (own positive cache) on the
	// same Redis and prefix.
	storeB, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefixOf(t, store, prefixClient), MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(storeB.Close)
	a, b := newReplica(t, keys, store), newReplica(t, keys, storeB)
	ctx := context.Background()

	t.Run("revoke on A, rejected on B at once", func(t *testing.T) {
		tok, _, err := a.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
		require.NoError(t, err)
		_, err = b.ver.Verify(ctx, tok)
		require.NoError(t, err)
		require.NoError(t, a.ver.Revoke(ctx, tok))
		_, err = b.ver.Verify(ctx, tok)
		require.ErrorIs(t, err, jtiguard.ErrRevoked)
	})
	t.Run("refresh on A, reuse on B detected", func(t *testing.T) {
		p, err := a.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
		require.NoError(t, err)
		p2, err := a.sess.Refresh(ctx, p.RefreshToken)
		require.NoError(t, err)
		p3, err := a.sess.Refresh(ctx, p2.RefreshToken)
		require.NoError(t, err)
		// The token before the previous one: beyond any grace window.
		_, err = b.sess.Refresh(ctx, p.RefreshToken)
		require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
		_, err = a.ver.Verify(ctx, p3.AccessToken)
		require.ErrorIs(t, err, jtiguard.ErrRefreshReused, "the family is dead on A too")
	})
	t.Run("1000 concurrent consumes across A and B: one wins", func(t *testing.T) {
		once, _, err := a.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "transfer"})
		require.NoError(t, err)
		var wins, replays atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 1000 {
			r := a
			if i%2 == 1 {
				r = b
			}
			wg.Go(func() {
				<-start
				_, err := r.ver.Consume(ctx, once, "transfer")
				if err == nil {
					wins.Add(1)
				} else if assert.ErrorIs(t, err, jtiguard.ErrReplayed) {
					replays.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		assert.EqualValues(t, 1, wins.Load())
		assert.EqualValues(t, 999, replays.Load())
	})
}

// prefixOf finds the key prefix store uses, by revoking a token and looking.
func prefixOf(t *testing.T, _ *redisstore.Store, c *redis.Client) string {
	t.Helper()
	keys, err := c.Keys(context.Background(), "*{b00}:e").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	return strings.TrimSuffix(keys[0], "{b00}:e")
}

func TestRoundTrips(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			rt := &roundTrips{}
			var client redis.UniversalClient
			if mode == "cluster" {
				client = clusterClient(t, redistest.StartCluster(t).Addrs(), rt)
			} else {
				client = standaloneClient(t, redistest.Start(t).Addr(), rt)
			}
			store := newStore(t, client, -1)
			r := newReplica(t, testKeys(t), store)
			ctx := context.Background()
			p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
			require.NoError(t, err)
			plain, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
			require.NoError(t, err)
			// Warm up: scripts and cluster slots are known before counting.
			_, err = r.ver.Verify(ctx, plain)
			require.NoError(t, err)

			for _, op := range []struct {
				name string
				fn   func() error
			}{
				{"verify (session)", func() error { _, err := r.ver.Verify(ctx, p.AccessToken); return err }},
				{"verify (no session)", func() error { _, err := r.ver.Verify(ctx, plain); return err }},
				{"refresh", func() error { np, err := r.sess.Refresh(ctx, p.RefreshToken); p = np; return err }},
				{"consume", func() error {
					// Minting is local; only the consume reaches Redis.
					once, _, err := r.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "x"})
					if err == nil {
						_, err = r.ver.Consume(ctx, once, "x")
					}
					return err
				}},
			} {
				var err error
				n := rt.count(func() { err = op.fn() })
				require.NoError(t, err, op.name)
				assert.EqualValues(t, 1, n, "%s: round trips", op.name)
			}
		})
	}
}

func TestPositiveCacheAnswersDeadTokensLocally(t *testing.T) {
	rt := &roundTrips{}
	client := standaloneClient(t, redistest.Start(t).Addr(), rt)
	r := newReplica(t, testKeys(t), newStore(t, client, 0))
	ctx := context.Background()
	tok, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	require.NoError(t, r.ver.Revoke(ctx, tok))
	var n int64
	require.Eventually(t, func() bool {
		n = rt.count(func() {
			_, err = r.ver.Verify(ctx, tok)
		})
		return n == 0
	}, 5*time.Second, time.Millisecond, "the revoked answer is cached (ristretto admits asynchronously)")
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
}

func TestFailClosedAndDataLoss(t *testing.T) {
	srv := redistest.Start(t, "--save", "3600 1") // persistence on demand: SAVE below
	ctx := context.Background()
	baseGoroutines := runtime.NumGoroutine()
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: 1})
	store, err := redisstore.New(ctx, redisstore.Config{Client: client, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	keys := testKeys(t)
	r := newReplica(t, keys, store)

	p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	plain, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	revoked, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	require.NoError(t, r.ver.Revoke(ctx, revoked))

	t.Run("restart with data: service resumes", func(t *testing.T) {
		require.NoError(t, client.Save(ctx).Err())
		srv.Restart()
		awaitReconnect(t, r)
		_, err := r.ver.Verify(ctx, p.AccessToken)
		require.NoError(t, err)
		_, err = r.ver.Verify(ctx, plain)
		require.NoError(t, err)
		_, err = r.ver.Verify(ctx, revoked)
		require.ErrorIs(t, err, jtiguard.ErrRevoked, "the revocation survived")
	})

	t.Run("server killed mid-load: fail closed, no replay accepted", func(t *testing.T) {
		once, _, err := r.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "p"})
		require.NoError(t, err)
		_, err = r.ver.Consume(ctx, once, "p")
		require.NoError(t, err)
		var (
			wg      sync.WaitGroup
			stop    = make(chan struct{})
			calls   atomic.Int64
			passed  atomic.Int64
			failed  atomic.Int64
			started = make(chan struct{}, 50)
		)
		for range 50 {
			wg.Go(func() {
				started <- struct{}{}
				for {
					select {
					case <-stop:
						return
					default:
					}
					calls.Add(1)
					// Dead tokens must never pass, before, during or after the kill.
					_, err := r.ver.Verify(ctx, revoked)
					assert.Error(t, err)
					_, err = r.ver.Consume(ctx, once, "p")
					assert.Error(t, err)
					// A live token passes or fails closed, nothing else.
					if _, err := r.ver.Verify(ctx, plain); err != nil {
						assert.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
						failed.Add(1)
					} else {
						passed.Add(1)
					}
				}
			})
		}
		for range 50 {
			<-started
		}
		require.Eventually(t, func() bool { return passed.Load() > 200 }, 10*time.Second, time.Millisecond)
		srv.Stop() // mid-load
		require.Eventually(t, func() bool { return failed.Load() > 100 }, 10*time.Second, time.Millisecond)
		close(stop)
		wg.Wait()
		t.Logf("%d calls: %d passed before the kill, %d failed closed after", calls.Load(), passed.Load(), failed.Load())
		_, err = r.sess.Refresh(ctx, p.RefreshToken)
		assert.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	})

	t.Run("restart empty: tokens from before the loss are rejected", func(t *testing.T) {
		require.NoError(t, srv.RemoveData())
		srv.Restart()
		awaitReconnect(t, r)
		_, err := r.ver.Verify(ctx, revoked)
		require.ErrorIs(t, err, jtiguard.ErrStateLost, "a revoked token does not come back to life")
		_, err = r.ver.Verify(ctx, plain)
		require.ErrorIs(t, err, jtiguard.ErrStateLost)
		// A session from before is gone: lost (while the marker is being
		// written anew) or ended (its family is not there).
		_, err = r.ver.Verify(ctx, p.AccessToken)
		require.True(t, errors.Is(err, jtiguard.ErrStateLost) || errors.Is(err, jtiguard.ErrSessionEnded), "%v", err)
		_, err = r.sess.Refresh(ctx, p.RefreshToken)
		require.True(t, errors.Is(err, jtiguard.ErrStateLost) || errors.Is(err, jtiguard.ErrSessionEnded), "users log in again: %v", err)

		// Tokens issued after the loss work, without restarting anything.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(2 * time.Second))) // past the new epoch's second
		fresh, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
		require.NoError(t, err)
		_, err = r.ver.Verify(ctx, fresh)
		require.NoError(t, err)
		p2, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
		require.NoError(t, err)
		_, err = r.ver.Verify(ctx, p2.AccessToken)
		require.NoError(t, err)
	})

	store.Close()
	require.NoError(t, client.Close())
	r.ver.Close()
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= baseGoroutines+2 }, 5*time.Second, 10*time.Millisecond,
		"goroutines leaked: %d, was %d", runtime.NumGoroutine(), baseGoroutines)
}

func TestRetryIsNotReuse(t *testing.T) {
	srv := redistest.Start(t)
	direct := standaloneClient(t, srv.Addr())
	store := newStore(t, direct, -1)
	keys := testKeys(t)
	r := newReplica(t, keys, store)
	ctx := context.Background()

	t.Run("refresh", func(t *testing.T) {
		p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
		require.NoError(t, err)
		proxy := newDropFirstReply(t, srv.Addr(), "evalsha")
		viaProxy := standaloneClient(t, proxy.Addr()) // go-redis retries after a lost reply
		lossy, err := redisstore.New(ctx, redisstore.Config{Client: viaProxy, Prefix: prefixOf(t, store, direct), CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
		require.NoError(t, err)
		t.Cleanup(lossy.Close)
		lr := newReplica(t, keys, lossy)

		p2, err := lr.sess.Refresh(ctx, p.RefreshToken)
		require.NoError(t, err, "the retried rotation recognizes its own write")
		require.EqualValues(t, 1, proxy.dropped.Load(), "a reply was lost")
		_, err = r.ver.Verify(ctx, p2.AccessToken)
		require.NoError(t, err, "no reuse was detected: the family lives")
		_, err = r.sess.Refresh(ctx, p2.RefreshToken)
		require.NoError(t, err)
	})
	t.Run("consume", func(t *testing.T) {
		proxy := newDropFirstReply(t, srv.Addr(), "evalsha")
		viaProxy := standaloneClient(t, proxy.Addr())
		lossy, err := redisstore.New(ctx, redisstore.Config{Client: viaProxy, Prefix: prefixOf(t, store, direct), CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
		require.NoError(t, err)
		t.Cleanup(lossy.Close)
		lr := newReplica(t, keys, lossy)
		once, _, err := r.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "p"})
		require.NoError(t, err)
		_, err = lr.ver.Consume(ctx, once, "p")
		require.NoError(t, err, "the retried consume is the first use, not a replay")
		require.EqualValues(t, 1, proxy.dropped.Load())
		_, err = r.ver.Consume(ctx, once, "p")
		require.ErrorIs(t, err, jtiguard.ErrReplayed)
	})
}

// awaitReconnect waits until the client has reconnected after a restart:
// go-redis redials in the background (about once a second) once dials have
// failed, and until then every call fails closed.
func awaitReconnect(t *testing.T, r *replica) {
	t.Helper()
	probe, _, err := r.iss.Access(jtiguard.Claims{Subject: "probe", Audience: []string{testAudience}})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := r.ver.Verify(context.Background(), probe)
		return !errors.Is(err, jtiguard.ErrStoreUnavailable)
	}, 10*time.Second, 20*time.Millisecond)
}

// TestSlowRedisFailsClosed: a server that stops answering (CLIENT PAUSE)
// makes verification fail closed within the request's deadline.
func TestSlowRedisFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	// ContextTimeoutEnabled makes go-redis honour the request's deadline;
	// without it a call waits for ReadTimeout (3 s by default).
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	r := newReplica(t, testKeys(t), newStore(t, client, -1))
	tok, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	require.NoError(t, err)
	once, _, err := r.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "p"})
	require.NoError(t, err)
	admin := standaloneClient(t, srv.Addr())
	require.NoError(t, admin.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err())

	for name, call := range map[string]func(context.Context) error{
		"verify":  func(ctx context.Context) error { _, err := r.ver.Verify(ctx, tok); return err },
		"consume": func(ctx context.Context) error { _, err := r.ver.Consume(ctx, once, "p"); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable, name)
		assert.Less(t, time.Since(start), time.Second, "%s waited past its deadline", name)
	}
	// Once the server answers again, so does the store: the consume that
	// timed out may or may not have run, but nothing passed while paused.
	require.Eventually(t, func() bool {
		_, err := r.ver.Verify(context.Background(), tok)
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
}
