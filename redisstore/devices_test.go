package redisstore_test

import (
	"context"
	"strings"
	"sync"
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

// family returns a family of subject to begin, living an hour.
func family(t *testing.T, subject string, created time.Time) store.Family {
	t.Helper()
	return store.Family{
		ID: mustID(t), Subject: subject, Generation: 1, Refresh: mustID(t),
		ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second), IdleTimeout: 10 * time.Minute,
		Created: created.Truncate(time.Millisecond),
	}
}

func mustID(t *testing.T) jtiguard.JTI {
	t.Helper()
	id, err := store.NewJTI(nil)
	require.NoError(t, err)
	return id
}

// listAll reads every page of subject's sessions, limit at a time.
func listAll(t *testing.T, s *redisstore.Store, subject string, limit int) (all []store.Session, pages int) {
	t.Helper()
	cursor := ""
	for {
		page, next, err := s.List(context.Background(), subject, cursor, limit)
		require.NoError(t, err)
		all, pages = append(all, page...), pages+1
		if next == "" {
			return all, pages
		}
		require.Less(t, pages, 10_000)
		cursor = next
	}
}

func TestDevicesRoundTrips(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			rt := &roundTrips{}
			var client redis.UniversalClient
			if mode == "cluster" {
				client = clusterClient(t, redistest.StartCluster(t).Addrs(), rt)
			} else {
				client = standaloneClient(t, redistest.Start(t).Addr(), rt)
			}
			s := newStore(t, client, -1)
			ctx := context.Background()
			var fams []store.Family
			for i := range 5 {
				f := family(t, "alice", time.Now().Add(time.Duration(i)*time.Millisecond))
				require.NoError(t, s.Begin(ctx, f)) // warms up scripts and slots
				fams = append(fams, f)
			}
			var (
				page []store.Session
				next string
				err  error
				n    int
			)
			for _, op := range []struct {
				name string
				fn   func() error
			}{
				{"begin", func() error { return s.Begin(ctx, family(t, "alice", time.Now())) }},
				{"list, first page", func() error { page, next, err = s.List(ctx, "alice", "", 2); return err }},
				{"list, next page", func() error { page, next, err = s.List(ctx, "alice", next, 2); return err }},
				{"end", func() error { return s.End(ctx, "alice", fams[0].ID) }},
				{"end others", func() error { n, err = s.EndOthers(ctx, "alice", fams[1].ID); return err }},
			} {
				var err error
				c := rt.count(func() { err = op.fn() })
				require.NoError(t, err, op.name)
				assert.EqualValues(t, 1, c, "%s: round trips", op.name)
			}
			assert.Len(t, page, 2)
			assert.Equal(t, 4, n, "the live families ended but the kept one")
			all, _ := listAll(t, s, "alice", 10)
			require.Len(t, all, 1)
			assert.Equal(t, fams[1].ID, all[0].ID)
		})
	}
}

// TestListForgetsGoneFamilies: index entries of families that are gone
// (expired or ended without the index knowing) are skipped and forgotten;
// a long run of them gives short pages with cursors, not one unbounded
// script.
func TestListForgetsGoneFamilies(t *testing.T) {
	srv := redistest.Start(t)
	c := standaloneClient(t, srv.Addr())
	s := newStore(t, c, -1)
	ctx := context.Background()
	now := time.Now()
	live := family(t, "alice", now)
	require.NoError(t, s.Begin(ctx, live))
	key := redisstore.IndexKey(prefixOf(t, s, c), "alice")
	// 2,000 entries older than the live family, of families that expired.
	var gone []redis.Z
	for i := range 2000 {
		gone = append(gone, redis.Z{Score: float64(now.Add(-time.Hour).UnixMilli() + int64(i)), Member: mustID(t).String()})
	}
	require.NoError(t, c.ZAdd(ctx, key, gone...).Err())

	all, pages := listAll(t, s, "alice", 10)
	require.Len(t, all, 1)
	assert.Equal(t, live.ID, all[0].ID)
	assert.Greater(t, pages, 10, "a run of gone entries is read a bounded number at a time")
	card, err := c.ZCard(ctx, key).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 1, card, "the index forgot the gone entries")

	// A login prunes a few at random, and at the limit reads the index
	// whole: the gone entries do not count against it.
	require.NoError(t, c.ZAdd(ctx, key, gone...).Err())
	for i := range 3 {
		f := family(t, "alice", now.Add(time.Duration(i+1)*time.Millisecond))
		f.Limit = 3
		require.NoError(t, s.Begin(ctx, f))
	}
	all, _ = listAll(t, s, "alice", 10)
	require.Len(t, all, 3, "the oldest live family ended by the limit, no other")
	card, err = c.ZCard(ctx, key).Result()
	require.NoError(t, err)
	assert.EqualValues(t, 3, card)
}

// TestSetIndexConverted: an index kept as a set (as before sessions were
// listed) is converted by the first script that reads it.
func TestSetIndexConverted(t *testing.T) {
	srv := redistest.Start(t)
	c := standaloneClient(t, srv.Addr())
	s := newStore(t, c, -1)
	ctx := context.Background()
	a, b := family(t, "alice", time.Now()), family(t, "alice", time.Now().Add(time.Millisecond))
	require.NoError(t, s.Begin(ctx, a))
	require.NoError(t, s.Begin(ctx, b))
	key := redisstore.IndexKey(prefixOf(t, s, c), "alice")
	require.NoError(t, c.Del(ctx, key).Err())
	require.NoError(t, c.SAdd(ctx, key, a.ID.String(), b.ID.String()).Err())

	all, _ := listAll(t, s, "alice", 10)
	require.Len(t, all, 2)
	assert.Equal(t, []jtiguard.JTI{a.ID, b.ID}, []jtiguard.JTI{all[0].ID, all[1].ID})
	typ, err := c.Type(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "zset", typ)

	require.NoError(t, c.Del(ctx, key).Err())
	require.NoError(t, c.SAdd(ctx, key, a.ID.String(), b.ID.String()).Err())
	n, err := s.EndSubject(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 2, n, "logout-all reaches the families of a set index")
}

// TestListAfterLoss: families of a bucket whose marker was rewritten (a
// loss or a rollback found) are not listed, nor counted by EndOthers.
func TestListAfterLoss(t *testing.T) {
	srv := redistest.Start(t)
	c := standaloneClient(t, srv.Addr())
	s := newStore(t, c, -1)
	ctx := context.Background()
	keep, other := family(t, "alice", time.Now()), family(t, "alice", time.Now())
	require.NoError(t, s.Begin(ctx, keep))
	require.NoError(t, s.Begin(ctx, other))
	all, _ := listAll(t, s, "alice", 10)
	require.Len(t, all, 2)

	// Another process found a loss and wrote the marker anew: a higher g.
	marker := redisstore.MarkerKey(prefixOf(t, s, c), "alice")
	require.NoError(t, c.HIncrBy(ctx, marker, "g", 1).Err())
	all, _ = listAll(t, s, "alice", 10)
	assert.Empty(t, all)
	n, err := s.EndOthers(ctx, "alice", keep.ID)
	require.NoError(t, err)
	assert.Zero(t, n, "families of a lost generation are not live")

	// A missing marker (the bucket's data gone) lists nothing either.
	require.NoError(t, c.FlushAll(ctx).Err())
	page, next, err := s.List(ctx, "alice", "", 10)
	require.NoError(t, err)
	assert.Empty(t, page)
	assert.Empty(t, next)
}

func TestListCursor(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, standaloneClient(t, srv.Addr()), -1)
	ctx := context.Background()
	for _, bad := range []string{"x", "12", "12.", "a.AAAAAAAAAAAAAAAAAAAAAA", "12." + strings.Repeat("A", 23)} {
		_, _, err := s.List(ctx, "alice", bad, 10)
		assert.ErrorIs(t, err, jtiguard.ErrConfig, bad)
	}
	for i := range 3 {
		require.NoError(t, s.Begin(ctx, family(t, "alice", time.Now().Add(time.Duration(i)*time.Millisecond))))
	}
	page, next, err := s.List(ctx, "alice", "", 0)
	require.NoError(t, err)
	assert.Len(t, page, 3, "limit 0: the default page size")
	assert.Empty(t, next)
}

// TestEndSessionAcrossReplicas: a device ended through one replica's
// Sessions is refused by the other's Verifier at once; another subject
// cannot end it; end-others keeps the caller's session only.
func TestEndSessionAcrossReplicas(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			var a, b store.Store
			if mode == "cluster" {
				addrs := redistest.StartCluster(t).Addrs()
				sa := newStore(t, clusterClient(t, addrs), 0)
				sb, err := redisstore.New(context.Background(), redisstore.Config{Client: clusterClient(t, addrs), Prefix: prefixOfCluster(t, addrs), MaxClockSkew: testSkew})
				require.NoError(t, err)
				t.Cleanup(sb.Close)
				a, b = sa, sb
			} else {
				srv := redistest.Start(t)
				c := standaloneClient(t, srv.Addr())
				sa := newStore(t, c, 0)
				sb, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefixOf(t, sa, c), MaxClockSkew: testSkew})
				require.NoError(t, err)
				t.Cleanup(sb.Close)
				a, b = sa, sb
			}
			keys := testKeys(t)
			ra, rb := newReplica(t, keys, a), newReplica(t, keys, b)
			ctx := context.Background()
			login := func(subject, label string) *jtiguard.TokenPair {
				p, err := ra.sess.Login(ctx, jtiguard.Login{Subject: subject, ACR: "pwd", Device: jtiguard.Device{Label: label, IP: "203.0.113.0/24"}})
				require.NoError(t, err)
				return p
			}
			laptop, phone, tablet := login("alice", "laptop"), login("alice", "phone"), login("alice", "tablet")
			bob := login("bob", "bob's")

			page, err := rb.sess.List(ctx, "alice", "", 2)
			require.NoError(t, err)
			require.Len(t, page.Sessions, 2)
			rest, err := rb.sess.List(ctx, "alice", page.Next, 2)
			require.NoError(t, err)
			require.Len(t, rest.Sessions, 1)
			assert.Empty(t, rest.Next)
			labels := map[string]string{} // sid -> label
			for _, s := range append(page.Sessions, rest.Sessions...) {
				labels[s.ID] = s.Device.Label
				assert.Equal(t, "203.0.113.0/24", s.Device.IP)
				assert.Equal(t, "pwd", s.ACR)
			}
			assert.Equal(t, map[string]string{laptop.Access.Session: "laptop", phone.Access.Session: "phone", tablet.Access.Session: "tablet"}, labels)

			require.NoError(t, rb.sess.EndSession(ctx, "bob", phone.Access.Session))
			_, err = ra.ver.Verify(ctx, phone.AccessToken)
			require.NoError(t, err, "another subject cannot end it")
			require.NoError(t, rb.sess.EndSession(ctx, "alice", phone.Access.Session))
			_, err = ra.ver.Verify(ctx, phone.AccessToken)
			require.ErrorIs(t, err, jtiguard.ErrSessionEnded, "ended on B, refused on A at once")

			n, err := ra.sess.EndOthers(ctx, laptop.AccessToken)
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			_, err = rb.ver.Verify(ctx, tablet.AccessToken)
			require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
			_, err = rb.ver.Verify(ctx, laptop.AccessToken)
			require.NoError(t, err)
			_, err = rb.ver.Verify(ctx, bob.AccessToken)
			require.NoError(t, err)
		})
	}
}

// prefixOfCluster finds the key prefix of the only store on a cluster.
func prefixOfCluster(t *testing.T, addrs []string) string {
	t.Helper()
	c := clusterClient(t, addrs)
	key := redisstore.MarkerKey("", "x")
	var (
		mu    sync.Mutex
		found []string
	)
	require.NoError(t, c.ForEachMaster(context.Background(), func(ctx context.Context, n *redis.Client) error {
		keys, err := n.Keys(ctx, "*"+key[:len(key)-2]+":e").Result()
		mu.Lock()
		found = append(found, keys...)
		mu.Unlock()
		return err
	}))
	require.Len(t, found, 1)
	return strings.TrimSuffix(found[0], key)
}
