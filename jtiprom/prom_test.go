package jtiprom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/jtiprom"
	"github.com/jtiguard/jtiguard/store"
)

func newObserver(t testing.TB) (*prometheus.Registry, *jtiguard.Observer) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	obs, err := jtiprom.New(reg, jtiprom.Options{})
	require.NoError(t, err)
	return reg, obs
}

// value returns the value of the counter (or the sample count of the
// histogram) name with exactly labels, and whether the series exists.
func value(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// num returns the value of the series name with the label pairs kv, and
// fails if there is none.
func num(t testing.TB, reg prometheus.Gatherer, name string, kv ...string) float64 {
	t.Helper()
	labels := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		labels[kv[i]] = kv[i+1]
	}
	v, ok := value(t, reg, name, labels)
	require.True(t, ok, "no series %s%v", name, labels)
	return v
}

// sentinels are the errors a verification can end with, and the reason
// label each must get.
var sentinels = []struct {
	err    error
	reason string
}{
	{nil, "ok"},
	{jtiguard.ErrTokenTooLarge, "token_too_large"},
	{jtiguard.ErrMalformed, "malformed"},
	{jtiguard.ErrWrongTokenType, "wrong_token_type"},
	{jtiguard.ErrUnknownKey, "unknown_key"},
	{jtiguard.ErrAlgorithm, "algorithm"},
	{jtiguard.ErrSignature, "signature"},
	{jtiguard.ErrInvalidClaims, "invalid_claims"},
	{jtiguard.ErrMissingClaim, "missing_claim"},
	{jtiguard.ErrInvalidJTI, "invalid_jti"},
	{jtiguard.ErrInvalidIssuer, "invalid_issuer"},
	{jtiguard.ErrInvalidAudience, "invalid_audience"},
	{jtiguard.ErrWrongPurpose, "wrong_purpose"},
	{jtiguard.ErrExpired, "expired"},
	{jtiguard.ErrNotYetValid, "not_yet_valid"},
	{jtiguard.ErrIssuedInFuture, "issued_in_future"},
	{jtiguard.ErrLifetime, "lifetime"},
	{jtiguard.ErrRevoked, "revoked"},
	{jtiguard.ErrReplayed, "replayed"},
	{jtiguard.ErrSessionEnded, "session_ended"},
	{jtiguard.ErrRefreshReused, "refresh_reused"},
	{jtiguard.ErrSuperseded, "superseded"},
	{jtiguard.ErrWrongClient, "wrong_client"},
	{jtiguard.ErrForeignSession, "foreign_session"},
	{jtiguard.ErrDPoPRequired, "dpop_required"},
	{jtiguard.ErrDPoPKeyMismatch, "dpop_key_mismatch"},
	{jtiguard.ErrNotDPoPBound, "not_dpop_bound"},
	{jtiguard.ErrStateLost, "state_lost"},
	{jtiguard.ErrInvalidDPoPProof, "invalid_dpop_proof"},
	{jtiguard.ErrDPoPReplayed, "dpop_replayed"},
	{jtiguard.ErrUseDPoPNonce, "use_dpop_nonce"},
	{jtiguard.ErrStoreUnavailable, "store_unavailable"},
	{jtiguard.ErrStoreFull, "store_full"},
	{fmt.Errorf("redis: i/o timeout: %w", jtiguard.ErrStoreUnavailable), "store_unavailable"},
	{context.DeadlineExceeded, "other"},
}

func TestVerificationsBySentinel(t *testing.T) {
	ctx := context.Background()
	classes := []jtiguard.TokenType{jtiguard.TypeAccess, jtiguard.TypeOneTime, jtiguard.TypeRefresh, jtiguard.TypeStep}
	for _, tc := range sentinels {
		t.Run(tc.reason+"/"+fmt.Sprint(tc.err), func(t *testing.T) {
			reg, obs := newObserver(t)
			for i, class := range classes {
				for range i + 1 {
					obs.Verified(ctx, jtiguard.Verification{Class: class, Reason: jtiguard.Reason(tc.err), Err: tc.err, Duration: 3 * time.Microsecond})
				}
			}
			for i, class := range classes {
				n, ok := value(t, reg, "jtiguard_verifications_total", map[string]string{"class": class.Label(), "reason": tc.reason})
				require.True(t, ok, "series of %v", class)
				assert.Equal(t, float64(i+1), n)
				n, _ = value(t, reg, "jtiguard_verification_duration_seconds", map[string]string{"class": class.Label()})
				assert.Equal(t, float64(i+1), n)
			}
			// Beside the reason's series, only the "ok" ones exist (from
			// the start, at zero): no other reason moved.
			mfs, err := reg.Gather()
			require.NoError(t, err)
			for _, mf := range mfs {
				if mf.GetName() != "jtiguard_verifications_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					var reason string
					for _, l := range m.GetLabel() {
						if l.GetName() == "reason" {
							reason = l.GetValue()
						}
					}
					assert.Contains(t, []string{"ok", tc.reason}, reason)
					if reason != tc.reason {
						assert.Zero(t, m.GetCounter().GetValue())
					}
				}
			}
		})
	}
}

func TestCacheStoreEventsFetches(t *testing.T) {
	ctx := context.Background()
	reg, obs := newObserver(t)
	for _, c := range []jtiguard.CacheResult{jtiguard.CacheHit, jtiguard.CacheHit, jtiguard.CacheMiss, jtiguard.CacheNone} {
		obs.Verified(ctx, jtiguard.Verification{Class: jtiguard.TypeAccess, Reason: "ok", Cache: c})
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jtiguard_verify_cache_total Lookups of the verified-token cache: hit (no signature check) or miss.
# TYPE jtiguard_verify_cache_total counter
jtiguard_verify_cache_total{result="hit"} 2
jtiguard_verify_cache_total{result="miss"} 1
`), "jtiguard_verify_cache_total"))

	ops := []jtiguard.StoreOp{jtiguard.StoreCheck, jtiguard.StoreConsume, jtiguard.StoreCheckConsume, jtiguard.StoreRevoke, jtiguard.StoreBegin,
		jtiguard.StoreRotate, jtiguard.StoreEnd, jtiguard.StoreEndSubject, jtiguard.StoreList, jtiguard.StoreEndOthers}
	for _, op := range ops {
		obs.Store(ctx, jtiguard.StoreCall{Op: op, Duration: time.Millisecond})
		obs.Store(ctx, jtiguard.StoreCall{Op: op, Duration: time.Second, Err: errors.New("down")})
	}
	for _, op := range ops {
		n, ok := value(t, reg, "jtiguard_store_duration_seconds", map[string]string{"op": string(op)})
		require.True(t, ok, op)
		assert.Equal(t, 2.0, n, op)
		n, _ = value(t, reg, "jtiguard_store_errors_total", map[string]string{"op": string(op)})
		assert.Equal(t, 1.0, n, op)
	}

	kinds := []jtiguard.EventKind{
		jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRenew, jtiguard.EventLogout, jtiguard.EventLogoutAll,
		jtiguard.EventRevoke, jtiguard.EventSessionEnded, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked,
		jtiguard.EventReplayRefused, jtiguard.EventDPoPReplayRefused, jtiguard.EventDPoPBindingRefused,
		jtiguard.EventStoreUnavailable, jtiguard.EventStateLost, jtiguard.EventKeysFetchFailed, jtiguard.EventKeysExpired,
	}
	for _, k := range kinds {
		n, ok := value(t, reg, "jtiguard_events_total", map[string]string{"event": string(k)})
		require.True(t, ok, "%s exists before its first event, at zero", k)
		assert.Zero(t, n)
	}
	for i, k := range kinds {
		for range i + 1 {
			obs.Event(ctx, jtiguard.Event{Kind: k, JTI: "uzrkYUovBTONR5GMAcIOJw", Subject: "alice"})
		}
	}
	for i, k := range kinds {
		n, _ := value(t, reg, "jtiguard_events_total", map[string]string{"event": string(k)})
		assert.Equal(t, float64(i+1), n, k)
	}

	obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks", Keys: 2, Changed: true})
	obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks", Keys: 2, Err: errors.New("503")})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jtiguard_key_fetches_total Fetches of a remote key set (JWKS), by result: ok, or error (the last good keys are kept).
# TYPE jtiguard_key_fetches_total counter
jtiguard_key_fetches_total{result="error"} 1
jtiguard_key_fetches_total{result="ok"} 1
# HELP jtiguard_keys Keys in the remote key set after its last fetch (0: dropped or never loaded).
# TYPE jtiguard_keys gauge
jtiguard_keys 2
`), "jtiguard_key_fetches_total", "jtiguard_keys"))
	n, err := testutil.GatherAndCount(reg, "jtiguard_key_fetch_duration_seconds")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	lint(t, reg)
}

// lint fails on any problem promlint finds in what reg exposes.
func lint(t testing.TB, reg prometheus.Gatherer) {
	t.Helper()
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestNewRefusesASecondRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := jtiprom.New(reg, jtiprom.Options{})
	require.NoError(t, err)
	_, err = jtiprom.New(reg, jtiprom.Options{})
	require.Error(t, err)
	_, err = jtiprom.New(reg, jtiprom.Options{Namespace: "other", ConstLabels: prometheus.Labels{"service": "api"}})
	require.NoError(t, err, "another namespace registers beside it")
}

// world is a token server and resource server on one memory store, on a
// manual clock, whose Verifier reports to a Prometheus registry and logs
// to a buffer, with a switch to make the store fail.
type world struct {
	mu     sync.Mutex
	now    time.Time
	reg    *prometheus.Registry
	iss    *jtiguard.Issuer
	ver    *jtiguard.Verifier
	sess   *jtiguard.Sessions
	faulty *faultyStore
	logs   bytes.Buffer
	tokens []string
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	w.now = w.now.Add(d)
	w.mu.Unlock()
}

type faultyStore struct {
	*jtiguard.MemoryStore
	mu  sync.Mutex
	err error
}

func (s *faultyStore) fail(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *faultyStore) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *faultyStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	if err := s.failure(); err != nil {
		return 0, err
	}
	return s.MemoryStore.Check(ctx, t)
}

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func newWorld(t testing.TB, obs func(reg *prometheus.Registry) *jtiguard.Observer) *world {
	t.Helper()
	w := &world{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), reg: prometheus.NewPedanticRegistry()}
	key, err := jtiguard.GenerateKey("k1", jtiguard.EdDSA)
	require.NoError(t, err)
	keys, err := jtiguard.NewKeySet(key)
	require.NoError(t, err)
	mem, err := jtiguard.NewMemoryStore(jtiguard.MemoryConfig{Now: w.clock})
	require.NoError(t, err)
	w.faulty = &faultyStore{MemoryStore: mem}
	w.iss, err = jtiguard.NewIssuer(keys, jtiguard.IssuerConfig{Issuer: "https://auth.example.com", Now: w.clock})
	require.NoError(t, err)
	var logMu sync.Mutex
	w.ver, err = jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{
		Issuer: "https://auth.example.com", Audience: "https://api.example.com", Store: w.faulty, Now: w.clock,
		Logger:   slog.New(slog.NewTextHandler(syncWriter{&logMu, &w.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer: obs(w.reg),
	})
	require.NoError(t, err)
	t.Cleanup(w.ver.Close)
	w.sess, err = jtiguard.NewSessions(w.iss, w.ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	return w
}

func (w *world) access(t testing.TB) string {
	t.Helper()
	tok, _, err := w.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}})
	require.NoError(t, err)
	w.tokens = append(w.tokens, tok)
	return tok
}

// run drives the world through many outcomes: accepted, cached, tampered,
// revoked, replayed, reused, ended, store down.
func (w *world) run(t *testing.T) {
	ctx := context.Background()
	tok := w.access(t)
	for range 3 {
		_, err := w.ver.Verify(ctx, tok)
		require.NoError(t, err)
	}
	_, err := w.ver.Verify(ctx, tok[:len(tok)-4]+"AAAA")
	require.ErrorIs(t, err, jtiguard.ErrSignature)
	require.NoError(t, w.ver.Revoke(ctx, tok))
	_, err = w.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)

	once, _, err := w.iss.OneTime(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}, Purpose: "confirm"})
	require.NoError(t, err)
	w.tokens = append(w.tokens, once)
	_, err = w.ver.Consume(ctx, once, "confirm")
	require.NoError(t, err)
	_, err = w.ver.Consume(ctx, once, "confirm")
	require.ErrorIs(t, err, jtiguard.ErrReplayed)

	p, err := w.sess.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "web"})
	require.NoError(t, err)
	np, err := w.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	w.tokens = append(w.tokens, p.AccessToken, p.RefreshToken, np.AccessToken, np.RefreshToken)
	w.advance(time.Minute)
	_, err = w.sess.Refresh(ctx, p.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	_, err = w.ver.Verify(ctx, np.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused)

	p2, err := w.sess.Login(ctx, jtiguard.Login{Subject: "alice"})
	require.NoError(t, err)
	w.tokens = append(w.tokens, p2.AccessToken, p2.RefreshToken)
	require.NoError(t, w.sess.Logout(ctx, p2.AccessToken))
	_, err = w.ver.Verify(ctx, p2.AccessToken)
	require.ErrorIs(t, err, jtiguard.ErrSessionEnded)

	w.faulty.fail(errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	_, err = w.ver.Verify(ctx, w.access(t))
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	w.faulty.fail(nil)
	_, err = w.ver.Verify(ctx, strings.Repeat("A", 10_000))
	require.ErrorIs(t, err, jtiguard.ErrTokenTooLarge)
}

// Through a real Verifier: each outcome moves its series, and neither the
// exposition nor the log holds any token text.
func TestThroughAVerifier(t *testing.T) {
	w := newWorld(t, func(reg *prometheus.Registry) *jtiguard.Observer {
		obs, err := jtiprom.New(reg, jtiprom.Options{})
		require.NoError(t, err)
		return obs
	})
	w.run(t)
	for _, tc := range []struct {
		class, reason string
		n             float64
	}{
		{"access", "ok", 3}, {"access", "signature", 1}, {"access", "revoked", 1}, {"access", "refresh_reused", 1},
		{"access", "session_ended", 1}, {"access", "store_unavailable", 1}, {"access", "token_too_large", 1},
		{"one_time", "ok", 1}, {"one_time", "replayed", 1}, {"refresh", "ok", 1}, {"refresh", "refresh_reused", 1},
	} {
		assert.Equal(t, tc.n, num(t, w.reg, "jtiguard_verifications_total", "class", tc.class, "reason", tc.reason), "%s %s", tc.class, tc.reason)
	}
	assert.Equal(t, 3.0, num(t, w.reg, "jtiguard_verify_cache_total", "result", "hit"), "twice ok, once revoked")
	for event, n := range map[string]float64{"login": 2, "refresh": 1, "refresh_reused": 1, "family_revoked": 1, "replay_refused": 1, "revoke": 1, "logout": 1, "store_unavailable": 1} {
		assert.Equal(t, n, num(t, w.reg, "jtiguard_events_total", "event", event), event)
	}
	assert.Equal(t, 1.0, num(t, w.reg, "jtiguard_store_errors_total", "op", "check"))
	n, _ := value(t, w.reg, "jtiguard_store_duration_seconds", map[string]string{"op": "rotate"})
	assert.Equal(t, 2.0, n)

	// The exposition as a scraper reads it.
	srv := httptest.NewServer(promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	var body bytes.Buffer
	_, err = body.ReadFrom(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Contains(t, body.String(), `jtiguard_verifications_total{class="access",reason="ok"} 3`)
	assertNoToken(t, w.tokens, body.String(), w.logs.String())
	lint(t, w.reg)
}

// assertNoToken fails if any token, or its payload or signature part,
// appears in any of texts.
func assertNoToken(t *testing.T, tokens []string, texts ...string) {
	t.Helper()
	require.NotEmpty(t, tokens)
	for _, tok := range tokens {
		parts := strings.Split(tok, ".")
		require.Len(t, parts, 3)
		for _, s := range texts {
			for _, n := range []string{tok, parts[1], parts[2]} {
				assert.NotContains(t, s, n, "token text in what is exported")
			}
		}
	}
}
