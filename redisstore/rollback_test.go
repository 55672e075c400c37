package redisstore_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// snapshot is the state of one bucket, taken with DUMP and put back with
// RESTORE: what a promoted replica that lagged holds, without the
// failover (TestLaggingReplicaFailover does the real one).
type snapshot map[string]string

func takeSnapshot(t *testing.T, c *redis.Client, tag string) snapshot {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, tag+"*").Result()
	require.NoError(t, err)
	s := snapshot{}
	for _, k := range keys {
		s[k], err = c.Dump(ctx, k).Result()
		require.NoError(t, err)
	}
	return s
}

// rollBack makes the bucket what it was at s: keys written since are gone,
// the others hold their old values.
func (s snapshot) rollBack(t *testing.T, c *redis.Client, tag string) {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, tag+"*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		require.NoError(t, c.Del(ctx, k).Err())
	}
	for k, v := range s {
		require.NoError(t, c.RestoreReplace(ctx, k, 0, v).Err())
	}
}

// bucketTag is the hash-tagged key prefix of subject's bucket.
func bucketTag(prefix, subject string) string {
	return strings.TrimSuffix(redisstore.MarkerKey(prefix, subject), ":e")
}

// TestRollbackSeenByItsWitness: a process that saw writes acknowledged
// treats their loss as a loss, even when the first thing it does after the
// rollback is to replay the lost write itself, and even when other
// processes have written to the bucket since, past the lost sequence
// number. (The reply used to carry the sequence after the replay's own
// write, and sequence numbers alone could be refilled.)
func TestRollbackSeenByItsWitness(t *testing.T) {
	srv := redistest.Start(t)
	admin := standaloneClient(t, srv.Addr())
	keys := testKeys(t)
	a := newReplica(t, keys, newStore(t, standaloneClient(t, srv.Addr()), -1))
	prefix := prefixOf(t, nil, admin)
	storeB, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(storeB.Close)
	b := newReplica(t, keys, storeB)
	tag := bucketTag(prefix, "alice")
	ctx := context.Background()

	for _, others := range []int{0, 3} {
		t.Run("writes by others since: "+strconv.Itoa(others), func(t *testing.T) {
			used, revoked := a.once(t), a.plain(t)
			_, err := a.ver.Verify(ctx, revoked)
			require.NoError(t, err)
			snap := takeSnapshot(t, admin, tag)
			snapG := admin.HGet(ctx, tag+":e", "g").Val()
			_, err = a.ver.Consume(ctx, used, "transfer")
			require.NoError(t, err)
			require.NoError(t, a.ver.Revoke(ctx, revoked))

			snap.rollBack(t, admin, tag)
			for range others {
				require.NoError(t, b.ver.Revoke(ctx, b.plain(t)))
			}
			_, err = a.ver.Consume(ctx, used, "transfer")
			require.ErrorIs(t, err, jtiguard.ErrStateLost, "the replay of a lost consume")
			_, err = a.ver.Verify(ctx, revoked)
			require.Error(t, err, "a revocation lost in the rollback")
			// Once the witness has rewritten the marker (in the background),
			// nobody accepts them.
			require.Eventually(t, func() bool {
				return admin.HGet(ctx, tag+":e", "g").Val() != snapG
			}, 5*time.Second, 10*time.Millisecond, "the marker is rewritten")
			_, err = b.ver.Consume(ctx, used, "transfer")
			require.ErrorIs(t, err, jtiguard.ErrInvalidToken) // lost, or used by the refused replay
			_, err = b.ver.Verify(ctx, revoked)
			require.ErrorIs(t, err, jtiguard.ErrStateLost)
			// New tokens work once the marker's margin has passed.
			time.Sleep(time.Until(time.Now().Add(2 * testSkew).Truncate(time.Second).Add(time.Second)))
			_, err = b.ver.Verify(ctx, b.plain(t))
			require.NoError(t, err)
		})
	}
}

// TestLossThenNoFalseRollback: after a data loss, a process that had seen
// the old history takes the new marker for what it is, not for a rollback
// that would end the sessions begun since.
func TestLossThenNoFalseRollback(t *testing.T) {
	srv := redistest.Start(t)
	admin := standaloneClient(t, srv.Addr())
	keys := testKeys(t)
	a := newReplica(t, keys, newStore(t, standaloneClient(t, srv.Addr()), -1))
	prefix := prefixOf(t, nil, admin)
	ctx := context.Background()
	for range 5 { // a's view of alice's bucket moves well past the start
		require.NoError(t, a.ver.Revoke(ctx, a.plain(t)))
	}
	require.NoError(t, admin.FlushAll(ctx).Err())
	storeB, err := redisstore.New(ctx, redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(storeB.Close)
	b := newReplica(t, keys, storeB)
	p, err := b.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	_, err = a.ver.Verify(ctx, p.AccessToken) // a touches the bucket again
	require.NoError(t, err)
	require.NoError(t, a.ver.Revoke(ctx, a.plain(t)))
	_, err = b.ver.Verify(ctx, p.AccessToken)
	require.NoError(t, err, "the session begun after the loss lives")
}

// TestEntriesOutliveSkewedClocks: Redis expires entries by its own clock;
// a verifier whose clock is behind Redis's (within MaxClockSkew) by more
// than its leeway must still find a used token used.
func TestEntriesOutliveSkewedClocks(t *testing.T) {
	srv := redistest.Start(t)
	clk := &skewedClock{}
	clk.off.Store(int64(-600 * time.Millisecond))
	store, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), CacheSize: -1, MaxClockSkew: time.Second, Now: clk.Now})
	require.NoError(t, err)
	t.Cleanup(store.Close)
	keys := testKeys(t)
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer, Now: clk.Now, OneTimeTTL: 2 * time.Second})
	require.NoError(t, err)
	r := replicaAt(t, keys, store, clk.Now, 100*time.Millisecond)
	tok, c, err := iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, Purpose: "transfer"})
	require.NoError(t, err)
	_, err = r.ver.Consume(context.Background(), tok, "transfer")
	require.NoError(t, err)
	// Until the token expires on this clock, it stays used.
	accepted := 0
	for clk.Now().Before(c.ExpiresAt) {
		if _, err := r.ver.Consume(context.Background(), tok, "transfer"); err == nil {
			accepted++
		}
		time.Sleep(50 * time.Millisecond) // polling the clock, not synchronising
	}
	assert.Zero(t, accepted, "a used token accepted again before its exp")
}

// TestReuseRecordedAtMaxmemory: a superseded refresh token presented while
// Redis is out of memory still revokes its family.
func TestReuseRecordedAtMaxmemory(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory-policy", "noeviction")
	admin := standaloneClient(t, srv.Addr())
	r := newReplica(t, testKeys(t), newStore(t, standaloneClient(t, srv.Addr()), -1))
	ctx := context.Background()
	p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	p2, err := r.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	p3, err := r.sess.Refresh(ctx, p2.RefreshToken)
	require.NoError(t, err)
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err())
	_, err = r.sess.Refresh(ctx, p.RefreshToken) // older than the previous: reuse
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "0").Err())
	_, err = r.ver.Verify(ctx, p3.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused, "the family was revoked at maxmemory")
}

// TestRollbackOfManyBucketsRepaired: one failover rolls back every bucket
// of a node. Each bucket the witness finds rolled back is repaired (its
// marker rewritten), none is dropped, even when the witness finds them back
// to back and others write past its window meanwhile. (One shared
// try-lock used to drop the second repair, and 64 writes later the witness
// adopted the rolled-back history.)
func TestRollbackOfManyBucketsRepaired(t *testing.T) {
	srv := redistest.Start(t)
	admin := standaloneClient(t, srv.Addr())
	keys := testKeys(t)
	w := newReplica(t, keys, newStore(t, standaloneClient(t, srv.Addr()), -1))
	prefix := prefixOf(t, nil, admin)
	storeQ, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(storeQ.Close)
	q := newReplica(t, keys, storeQ)
	ctx := context.Background()
	subjects := []string{"alice", "bob"}
	require.NotEqual(t, redisstore.MarkerKey(prefix, "alice"), redisstore.MarkerKey(prefix, "bob"))
	toks, snaps, gens := map[string]string{}, map[string]snapshot{}, map[string]string{}
	for _, sub := range subjects {
		tok, _, err := w.iss.Access(jtiguard.Claims{Subject: sub, Audience: []string{testAudience}})
		require.NoError(t, err)
		_, err = w.ver.Verify(ctx, tok)
		require.NoError(t, err)
		toks[sub] = tok
		snaps[sub] = takeSnapshot(t, admin, bucketTag(prefix, sub))
		gens[sub] = admin.HGet(ctx, redisstore.MarkerKey(prefix, sub), "g").Val()
	}
	for _, sub := range subjects {
		require.NoError(t, w.ver.Revoke(ctx, toks[sub]))
	}
	for _, sub := range subjects {
		snaps[sub].rollBack(t, admin, bucketTag(prefix, sub))
	}
	for _, sub := range subjects { // back to back
		_, err := w.ver.Verify(ctx, toks[sub])
		require.ErrorIs(t, err, jtiguard.ErrStateLost, sub)
	}
	for range 70 { // traffic in bob's bucket by a process that saw nothing
		tok, _, err := q.iss.Access(jtiguard.Claims{Subject: "bob", Audience: []string{testAudience}})
		require.NoError(t, err)
		require.NoError(t, q.ver.Revoke(ctx, tok))
	}
	for _, sub := range subjects {
		require.Eventually(t, func() bool {
			return admin.HGet(ctx, redisstore.MarkerKey(prefix, sub), "g").Val() != gens[sub]
		}, 5*time.Second, 10*time.Millisecond, "%s's marker is rewritten", sub)
		_, err := w.ver.Verify(ctx, toks[sub])
		require.ErrorIs(t, err, jtiguard.ErrStateLost, "%s: a token whose revocation was rolled back", sub)
	}
}

// TestLostRewriteNoticed: the witness keeps what it saw, so if a second
// failover loses its rewrite and brings the rolled-back history back, it
// notices again.
func TestLostRewriteNoticed(t *testing.T) {
	srv := redistest.Start(t)
	admin := standaloneClient(t, srv.Addr())
	w := newReplica(t, testKeys(t), newStore(t, standaloneClient(t, srv.Addr()), -1))
	prefix := prefixOf(t, nil, admin)
	tag, marker := bucketTag(prefix, "alice"), redisstore.MarkerKey(prefix, "alice")
	ctx := context.Background()
	tok := w.plain(t)
	_, err := w.ver.Verify(ctx, tok)
	require.NoError(t, err)
	snap, g := takeSnapshot(t, admin, tag), admin.HGet(ctx, marker, "g").Val()
	require.NoError(t, w.ver.Revoke(ctx, tok))
	snap.rollBack(t, admin, tag)
	_, err = w.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrStateLost)
	require.Eventually(t, func() bool { return admin.HGet(ctx, marker, "g").Val() != g }, 5*time.Second, 10*time.Millisecond)
	snap.rollBack(t, admin, tag) // the rewrite is lost too
	_, err = w.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrStateLost)
}

// TestLoginRefusedAtMaxmemory: at maxmemory a login is refused whole, even
// when its script would first drop a stale index entry (a script without
// declared flags let its later writes through once it had written).
func TestLoginRefusedAtMaxmemory(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory-policy", "noeviction")
	admin := standaloneClient(t, srv.Addr())
	r := newReplica(t, testKeys(t), newStore(t, standaloneClient(t, srv.Addr()), -1))
	ctx := context.Background()
	_, err := r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	tag := bucketTag(prefixOf(t, nil, admin), "alice")
	fams, err := admin.Keys(ctx, tag+":f:*").Result()
	require.NoError(t, err)
	require.NoError(t, admin.Del(ctx, fams...).Err()) // the family idled out; its index entry stays
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "1").Err())
	_, err = r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.ErrorIs(t, err, jtiguard.ErrStoreFull)
	require.NoError(t, admin.ConfigSet(ctx, "maxmemory", "0").Err())
	_, err = r.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
}
