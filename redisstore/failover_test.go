package redisstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// TestLaggingReplicaFailover: a cluster with replicas, the replica of the
// shard holding alice's state stops applying its replication stream, the
// primary is killed (-9) and the replica takes over.
//
// With durability on (the default with replicas: WAIT 1), no write is
// acknowledged that the replica lacks: while it lags, writes fail closed,
// and everything acknowledged before is still dead after the failover.
//
// With it off, the primary acknowledges writes the replica never gets. The
// process that saw them notices the rollback (the bucket's write sequence
// went backwards) and treats it as a loss: every token from before is
// refused, by it and, once it has rewritten the marker, by everyone. A
// process that never saw those writes cannot tell on its own: that is
// Redis's asynchronous replication, documented, and asserted here.
func TestLaggingReplicaFailover(t *testing.T) {
	for _, durable := range []bool{true, false} {
		name := map[bool]string{true: "durable", false: "not durable"}[durable]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			cl := redistest.StartClusterWithReplicas(t)
			keys := testKeys(t)
			prefix := "failover" + randomID(t)[:6] + ":"
			replicas := 0 // the default: 1 when every primary has a replica
			if !durable {
				replicas = -1
			}
			open := func() (*replica, func(context.Context)) {
				c := clusterClient(t, cl.Addrs())
				s, err := redisstore.New(ctx, redisstore.Config{Client: c, Prefix: prefix, CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease, Replicas: replicas})
				require.NoError(t, err)
				t.Cleanup(s.Close)
				return newReplica(t, keys, s), c.ReloadState
			}
			a, reloadA := open()
			before := killTokens(t, a) // acknowledged while replication is healthy
			require.NoError(t, cl.WaitReplicasSynced(ctx))

			marker := redisstore.MarkerKey(prefix, "alice")
			primary, lagging := cl.PrimaryOf(marker), cl.ReplicaOf(marker)
			lagging.StallReplication()
			var after deadTokens
			if durable {
				_, err := a.ver.Consume(ctx, a.once(t), "transfer")
				require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
				require.ErrorIs(t, err, redisstore.ErrNotReplicated, "a consume the replica lacks is not acknowledged")
				err = a.ver.Revoke(ctx, a.plain(t))
				require.ErrorIs(t, err, redisstore.ErrNotReplicated, "nor is a revocation")
				_, err = a.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
				require.ErrorIs(t, err, redisstore.ErrNotReplicated)
			} else {
				after = killTokens(t, a) // acknowledged; the replica never gets them
			}

			primary.Stop()
			cl.Takeover(lagging)
			reloadA(ctx)
			b, _ := open() // a process started after the failover

			if durable {
				assertDead(t, b, before)
				assertDead(t, a, before)
				return
			}
			// The limitation: the fresh process accepts what was lost.
			_, err := b.ver.Consume(ctx, after.used, "transfer")
			assert.NoError(t, err, "a process that never saw the lost writes cannot tell (asynchronous replication)")
			// The process that saw them detects the rollback...
			_, err = a.ver.Verify(ctx, after.revoked)
			require.ErrorIs(t, err, jtiguard.ErrStateLost, "the rollback is detected")
			// ...and from then on nobody accepts anything from before it.
			assertDead(t, a, after)
			assertDead(t, b, after)
			assertDead(t, b, before)
			p, err := b.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
			require.NoError(t, err, "new logins work")
			_, err = a.ver.Verify(ctx, p.AccessToken)
			require.False(t, errors.Is(err, jtiguard.ErrStateLost), "%v", err)
		})
	}
}
