package redisstore_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
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

var dpopURL, _ = url.Parse("https://api.example.com/orders")

var dpopRequest = jtiguard.DPoPRequest{Method: "GET", URL: dpopURL.String()}

// dpopClient is a DPoP client: its key's transport signs proofs.
func dpopClient(t testing.TB) *jtiguard.DPoPTransport {
	t.Helper()
	k, err := jtiguard.GenerateKey("client", jtiguard.ES256)
	require.NoError(t, err)
	tr, err := jtiguard.NewDPoPTransport(k, nil)
	require.NoError(t, err)
	// A store refuses proofs that a verifier's clock, up to the leeway
	// behind the client's, may have accepted before its memory began: a
	// client clock the leeway ahead makes proofs acceptable to a store
	// just created.
	tr.Now = func() time.Time { return time.Now().Add(jtiguard.DefaultLeeway) }
	return tr
}

func dpopProof(t testing.TB, c *jtiguard.DPoPTransport, token string) string {
	t.Helper()
	p, err := c.Proof(dpopRequest.Method, dpopURL, token)
	require.NoError(t, err)
	return p
}

func dpopVerifier(t testing.TB, r *replica) *jtiguard.DPoPVerifier {
	t.Helper()
	d, err := jtiguard.NewDPoPVerifier(r.ver, jtiguard.DPoPConfig{})
	require.NoError(t, err)
	return d
}

// TestDPoPRoundTrips: a DPoP-bound token and its proof are checked and
// consumed in one round trip, on Cluster too (the proof's entry is in the
// token's slot, or the script would fail with CROSSSLOT).
func TestDPoPRoundTrips(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			rt := &roundTrips{}
			var client redis.UniversalClient
			if mode == "cluster" {
				client = clusterClient(t, redistest.StartCluster(t).Addrs(), rt)
			} else {
				client = standaloneClient(t, redistest.Start(t).Addr(), rt)
			}
			r := newReplica(t, testKeys(t), newStore(t, client, -1))
			d := dpopVerifier(t, r)
			c := dpopClient(t)
			ctx := context.Background()
			plain, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: c.JKT()})
			require.NoError(t, err)
			p, err := r.sess.Login(ctx, jtiguard.Login{Subject: "bob", JKT: c.JKT()})
			require.NoError(t, err)
			// Warm up: scripts and cluster slots are known before counting.
			_, err = d.Verify(ctx, plain, dpopProof(t, c, plain), dpopRequest)
			require.NoError(t, err)

			for _, tok := range []struct{ name, token string }{{"no session", plain}, {"session", p.AccessToken}} {
				proof := dpopProof(t, c, tok.token)
				n := rt.count(func() { _, err = d.Verify(ctx, tok.token, proof, dpopRequest) })
				require.NoError(t, err, tok.name)
				assert.EqualValues(t, 1, n, "verify (%s): round trips", tok.name)

				n = rt.count(func() { _, err = d.Verify(ctx, tok.token, proof, dpopRequest) })
				require.ErrorIs(t, err, jtiguard.ErrDPoPReplayed, tok.name)
				assert.EqualValues(t, 1, n, "replay (%s): round trips", tok.name)
			}

			// A dead token is refused for what it is, in one round trip.
			require.NoError(t, r.ver.Revoke(ctx, plain))
			proof := dpopProof(t, c, plain)
			n := rt.count(func() { _, err = d.Verify(ctx, plain, proof, dpopRequest) })
			require.ErrorIs(t, err, jtiguard.ErrRevoked)
			assert.EqualValues(t, 1, n, "revoked: round trips")
			require.NoError(t, r.sess.Logout(ctx, p.AccessToken))
			_, err = d.Verify(ctx, p.AccessToken, dpopProof(t, c, p.AccessToken), dpopRequest)
			require.ErrorIs(t, err, jtiguard.ErrSessionEnded)
		})
	}
}

// TestDPoPConcurrentPresentationsAcceptOne: of 1,000 concurrent
// presentations of one proof with one token, through two stores (two
// processes) on one server, exactly one is accepted.
func TestDPoPConcurrentPresentationsAcceptOne(t *testing.T) {
	srv := redistest.Start(t)
	direct := standaloneClient(t, srv.Addr())
	first := newStore(t, direct, 0)
	second, err := redisstore.New(context.Background(), redisstore.Config{Client: standaloneClient(t, srv.Addr()), Prefix: prefixOf(t, first, direct), MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(second.Close)
	keys := testKeys(t)
	verifiers := []*jtiguard.DPoPVerifier{dpopVerifier(t, newReplica(t, keys, first)), dpopVerifier(t, newReplica(t, keys, second))}
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
	require.NoError(t, err)
	presentAll(t, 1000, verifiers, iss)
}

// TestDPoPConcurrentPresentationsMemoryStore: the same through one
// MemoryStore (its CheckAndConsume), 1,000 presentations.
func TestDPoPConcurrentPresentationsMemoryStore(t *testing.T) {
	ms, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{})
	require.NoError(t, err)
	var _ store.ProofStore = ms
	keys := testKeys(t)
	verifiers := []*jtiguard.DPoPVerifier{dpopVerifier(t, newReplica(t, keys, ms)), dpopVerifier(t, newReplica(t, keys, ms))}
	iss, err := jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: testIssuer})
	require.NoError(t, err)
	presentAll(t, 1000, verifiers, iss)
}

func presentAll(t *testing.T, n int, verifiers []*jtiguard.DPoPVerifier, iss *jtiguard.Issuer) {
	c := dpopClient(t)
	tok, _, err := iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: c.JKT()})
	require.NoError(t, err)
	proof := dpopProof(t, c, tok)
	var accepted, replayed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := verifiers[i%len(verifiers)].Verify(context.Background(), tok, proof, dpopRequest)
			switch {
			case err == nil:
				accepted.Add(1)
			case errors.Is(err, jtiguard.ErrDPoPReplayed):
				replayed.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	assert.EqualValues(t, 1, accepted.Load())
	assert.EqualValues(t, n-1, replayed.Load())
}

// TestDPoPRetryIsNotReplay: a CheckAndConsume whose reply is lost is
// retried by the client and recognizes its own write: the proof is
// accepted, once.
func TestDPoPRetryIsNotReplay(t *testing.T) {
	srv := redistest.Start(t)
	direct := standaloneClient(t, srv.Addr())
	st := newStore(t, direct, -1)
	keys := testKeys(t)
	r := newReplica(t, keys, st)
	proxy := newDropFirstReply(t, srv.Addr(), "evalsha")
	proxy.armed.Store(false)
	ctx := context.Background()
	lossy, err := redisstore.New(ctx, redisstore.Config{Client: standaloneClient(t, proxy.Addr()), Prefix: prefixOf(t, st, direct), CacheSize: -1, MaxClockSkew: testSkew, Lease: testLease})
	require.NoError(t, err)
	t.Cleanup(lossy.Close)
	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{Issuer: testIssuer, Audience: testAudience, Store: lossy, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(ver.Close)
	d, err := jtiguard.NewDPoPVerifier(ver, jtiguard.DPoPConfig{})
	require.NoError(t, err)

	c := dpopClient(t)
	tok, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}, JKT: c.JKT()})
	require.NoError(t, err)
	proof := dpopProof(t, c, tok)
	proxy.armed.Store(true)
	_, err = d.Verify(ctx, tok, proof, dpopRequest)
	require.NoError(t, err, "the retried call is the first use, not a replay")
	require.EqualValues(t, 1, proxy.dropped.Load(), "a reply was lost")
	_, err = dpopVerifier(t, r).Verify(ctx, tok, proof, dpopRequest)
	require.ErrorIs(t, err, jtiguard.ErrDPoPReplayed)
}
