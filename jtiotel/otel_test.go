package jtiotel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/jtiotel"
	"github.com/jtiguard/jtiguard/store"
)

// sdk is an SDK meter and tracer provider with in-memory readers.
type sdk struct {
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	obs    *jtiguard.Observer
}

func newSDK(t testing.TB, opts jtiotel.Options) *sdk {
	t.Helper()
	s := &sdk{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	opts.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	opts.TracerProvider = s.tp
	var err error
	s.obs, err = jtiotel.New(opts)
	require.NoError(t, err)
	return s
}

// request returns a context carrying a recording span, as an HTTP
// server's instrumentation makes, and the span.
func (s *sdk) request(ctx context.Context) (context.Context, trace.Span) {
	return s.tp.Tracer("test").Start(ctx, "GET /orders")
}

func (s *sdk) collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.reader.Collect(context.Background(), &rm))
	return rm
}

// points returns the data points of the metric name, each as its
// attributes and value (a sum's value, a histogram's count, a gauge's
// value).
func points(t testing.TB, rm metricdata.ResourceMetrics, name string) map[attribute.Distinct]float64 {
	t.Helper()
	out := map[attribute.Distinct]float64{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, jtiotel.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Equivalent()] = float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Equivalent()] = float64(p.Count)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[p.Attributes.Equivalent()] = float64(p.Value)
				}
			default:
				t.Fatalf("%s: unexpected data %T", name, m.Data)
			}
		}
	}
	return out
}

func set(kvs ...attribute.KeyValue) attribute.Distinct {
	s := attribute.NewSet(kvs...)
	return s.Equivalent()
}

// sentinels are the errors a verification can end with, and the reason
// each must be recorded under.
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
	classes := []jtiguard.TokenType{jtiguard.TypeAccess, jtiguard.TypeOneTime, jtiguard.TypeRefresh, jtiguard.TypeStep}
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range sentinels {
		t.Run(tc.reason+"/"+fmt.Sprint(tc.err), func(t *testing.T) {
			s := newSDK(t, jtiotel.Options{})
			ctx, req := s.request(context.Background())
			for i, class := range classes {
				for range i + 1 {
					s.obs.Verified(ctx, jtiguard.Verification{Class: class, Reason: jtiguard.Reason(tc.err), Err: tc.err, Cache: jtiguard.CacheMiss, Start: start, Duration: 3 * time.Microsecond})
				}
			}
			req.End()

			rm := s.collect(t)
			counts, latency := points(t, rm, "jtiguard.verifications"), points(t, rm, "jtiguard.verification.duration")
			assert.Len(t, counts, len(classes), "one series per class: no other reason")
			for i, class := range classes {
				assert.Equal(t, float64(i+1), counts[set(jtiotel.AttrClass.String(class.Label()), jtiotel.AttrReason.String(tc.reason))], class)
				assert.Equal(t, float64(i+1), latency[set(jtiotel.AttrClass.String(class.Label()))], class)
			}
			assert.Equal(t, 10.0, points(t, rm, "jtiguard.cache.lookups")[set(jtiotel.AttrCache.String("miss"))])

			var verifySpans int
			for _, sp := range s.spans.Ended() {
				if sp.Name() != "jtiguard.verify" {
					continue
				}
				verifySpans++
				assert.Equal(t, req.SpanContext().SpanID(), sp.Parent().SpanID(), "a child of the request's span")
				assert.Equal(t, req.SpanContext().TraceID(), sp.SpanContext().TraceID())
				assert.Equal(t, start, sp.StartTime())
				assert.Equal(t, start.Add(3*time.Microsecond), sp.EndTime())
				attrs := attribute.NewSet(sp.Attributes()...)
				reason, _ := attrs.Value(jtiotel.AttrReason)
				assert.Equal(t, tc.reason, reason.AsString())
				cache, _ := attrs.Value(jtiotel.AttrCache)
				assert.Equal(t, "miss", cache.AsString())
				if tc.err == nil {
					assert.Equal(t, codes.Unset, sp.Status().Code)
				} else {
					assert.Equal(t, codes.Error, sp.Status().Code)
					assert.Equal(t, tc.reason, sp.Status().Description, "the reason, not the error's text")
				}
			}
			assert.Equal(t, 10, verifySpans)
		})
	}
}

func TestNoSpanOutsideATrace(t *testing.T) {
	ctx := context.Background()
	s := newSDK(t, jtiotel.Options{})
	s.obs.Verified(ctx, jtiguard.Verification{Class: jtiguard.TypeAccess, Reason: "ok", Start: time.Now()})
	s.obs.Store(ctx, jtiguard.StoreCall{Op: jtiguard.StoreCheck, Start: time.Now()})
	s.obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks", Keys: 1, Start: time.Now()})
	assert.Empty(t, s.spans.Ended(), "no trace of its own for an untraced call")
	assert.Equal(t, 1.0, points(t, s.collect(t), "jtiguard.verifications")[set(jtiotel.AttrClass.String("access"), jtiotel.AttrReason.String("ok"))], "metrics all the same")

	roots := newSDK(t, jtiotel.Options{RootSpans: true})
	roots.obs.Verified(ctx, jtiguard.Verification{Class: jtiguard.TypeAccess, Reason: "ok", Start: time.Now()})
	roots.obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks?api_key=s3cret", Keys: 1, Start: time.Now()})
	ended := roots.spans.Ended()
	require.Len(t, ended, 2)
	assert.False(t, ended[0].Parent().IsValid(), "a root")
	urlAttrs := attribute.NewSet(ended[1].Attributes()...)
	url, _ := urlAttrs.Value(jtiotel.AttrURL)
	assert.Equal(t, "https://auth.example.com/jwks", url.AsString(), "no query, where a key could be")
}

func TestStoreCallsEventsFetches(t *testing.T) {
	s := newSDK(t, jtiotel.Options{})
	ctx, req := s.request(context.Background())
	ops := []jtiguard.StoreOp{jtiguard.StoreCheck, jtiguard.StoreConsume, jtiguard.StoreCheckConsume, jtiguard.StoreRevoke, jtiguard.StoreBegin,
		jtiguard.StoreRotate, jtiguard.StoreEnd, jtiguard.StoreEndSubject, jtiguard.StoreList, jtiguard.StoreEndOthers}
	start := time.Now()
	for _, op := range ops {
		s.obs.Store(ctx, jtiguard.StoreCall{Op: op, Start: start, Duration: time.Millisecond})
		s.obs.Store(ctx, jtiguard.StoreCall{Op: op, Start: start, Duration: time.Second, Err: errors.New("dial tcp 10.0.0.7:6379: connection refused")})
	}
	kinds := []jtiguard.EventKind{
		jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRenew, jtiguard.EventLogout, jtiguard.EventLogoutAll,
		jtiguard.EventRevoke, jtiguard.EventSessionEnded, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked,
		jtiguard.EventReplayRefused, jtiguard.EventDPoPReplayRefused, jtiguard.EventDPoPBindingRefused,
		jtiguard.EventStoreUnavailable, jtiguard.EventStateLost, jtiguard.EventKeysFetchFailed, jtiguard.EventKeysExpired,
	}
	for _, k := range kinds {
		for range 2 {
			s.obs.Event(ctx, jtiguard.Event{Kind: k, Subject: "alice", Session: "2Yd-zm02iqwab0GexifHaw", JTI: "G_sfo3xBoR6kat1qSNiUdA", ClientID: "web", Count: 2})
		}
	}
	s.obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks", Keys: 2, Changed: true, Start: start})
	s.obs.KeysFetched(ctx, jtiguard.KeysFetch{URL: "https://auth.example.com/jwks", Keys: 2, Err: errors.New("status 503"), Start: start})
	req.End()

	rm := s.collect(t)
	latency, errs := points(t, rm, "jtiguard.store.duration"), points(t, rm, "jtiguard.store.errors")
	for _, op := range ops {
		assert.Equal(t, 2.0, latency[set(jtiotel.AttrStoreOp.String(string(op)))], op)
		assert.Equal(t, 1.0, errs[set(jtiotel.AttrStoreOp.String(string(op)))], op)
	}
	events := points(t, rm, "jtiguard.events")
	assert.Len(t, events, len(kinds))
	for _, k := range kinds {
		assert.Equal(t, 2.0, events[set(jtiotel.AttrEvent.String(string(k)))], k)
	}
	fetches := points(t, rm, "jtiguard.keys.fetches")
	assert.Equal(t, 1.0, fetches[set(jtiotel.AttrResult.String("ok"))])
	assert.Equal(t, 1.0, fetches[set(jtiotel.AttrResult.String("error"))])
	assert.Equal(t, 2.0, points(t, rm, "jtiguard.keys")[set()])
	assert.Equal(t, 2.0, points(t, rm, "jtiguard.keys.fetch.duration")[set()])

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, sp := range s.spans.Ended() {
		byName[sp.Name()] = append(byName[sp.Name()], sp)
	}
	for _, op := range ops {
		spans := byName["jtiguard.store."+string(op)]
		require.Len(t, spans, 2, op)
		assert.Equal(t, trace.SpanKindClient, spans[0].SpanKind())
		assert.Equal(t, req.SpanContext().SpanID(), spans[0].Parent().SpanID())
		assert.Equal(t, codes.Unset, spans[0].Status().Code)
		assert.Equal(t, codes.Error, spans[1].Status().Code)
		assert.Equal(t, time.Second, spans[1].EndTime().Sub(spans[1].StartTime()))
	}
	require.Len(t, byName["jtiguard.keys.fetch"], 2)
	// Events go on the request's span, named by kind, with ids but no
	// subject unless asked for.
	reqSpan := byName["GET /orders"][0]
	require.Equal(t, 2*len(kinds), len(reqSpan.Events()))
	e := reqSpan.Events()[0]
	assert.Equal(t, "jtiguard.login", e.Name)
	attrs := attribute.NewSet(e.Attributes...)
	for k, want := range map[attribute.Key]string{jtiotel.AttrEvent: "login", jtiotel.AttrJTI: "G_sfo3xBoR6kat1qSNiUdA", jtiotel.AttrSession: "2Yd-zm02iqwab0GexifHaw", jtiotel.AttrClientID: "web"} {
		v, ok := attrs.Value(k)
		assert.True(t, ok, k)
		assert.Equal(t, want, v.AsString(), k)
	}
	assert.False(t, attrs.HasValue(jtiotel.AttrSubject), "no subject by default")

	withSubject := newSDK(t, jtiotel.Options{Subjects: true})
	ctx, req = withSubject.request(context.Background())
	withSubject.obs.Event(ctx, jtiguard.Event{Kind: jtiguard.EventLogin, Subject: "alice"})
	req.End()
	subjectAttrs := attribute.NewSet(withSubject.spans.Ended()[0].Events()[0].Attributes...)
	v, ok := subjectAttrs.Value(jtiotel.AttrSubject)
	assert.True(t, ok)
	assert.Equal(t, "alice", v.AsString())
}

// world is a token server and resource server on one memory store whose
// Verifier reports to OpenTelemetry and logs to a buffer.
type world struct {
	mu     sync.Mutex
	now    time.Time
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

func (s *faultyStore) Check(ctx context.Context, t store.TokenRef) (store.Status, error) {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return s.MemoryStore.Check(ctx, t)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newWorld(t testing.TB, obs *jtiguard.Observer) *world {
	t.Helper()
	w := &world{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
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
		Logger:   slog.New(slog.NewTextHandler(lockedWriter{&logMu, &w.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer: obs,
	})
	require.NoError(t, err)
	t.Cleanup(w.ver.Close)
	w.sess, err = jtiguard.NewSessions(w.iss, w.ver, jtiguard.SessionConfig{})
	require.NoError(t, err)
	return w
}

// Through a real Verifier, within a traced request: each outcome makes its
// spans and events, and no name, attribute, event or status holds any
// token text.
func TestThroughAVerifier(t *testing.T) {
	s := newSDK(t, jtiotel.Options{Subjects: true})
	w := newWorld(t, s.obs)
	ctx, req := s.request(context.Background())
	access := func() string {
		tok, _, err := w.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}})
		require.NoError(t, err)
		w.tokens = append(w.tokens, tok)
		return tok
	}
	tok := access()
	for range 2 {
		_, err := w.ver.Verify(ctx, tok)
		require.NoError(t, err)
	}
	_, err := w.ver.Verify(ctx, tok[:len(tok)-4]+"AAAA")
	require.ErrorIs(t, err, jtiguard.ErrSignature)
	require.NoError(t, w.ver.Revoke(ctx, tok))
	_, err = w.ver.Verify(ctx, tok)
	require.ErrorIs(t, err, jtiguard.ErrRevoked)
	p, err := w.sess.Login(ctx, jtiguard.Login{Subject: "alice", ClientID: "web"})
	require.NoError(t, err)
	np, err := w.sess.Refresh(ctx, p.RefreshToken)
	require.NoError(t, err)
	w.tokens = append(w.tokens, p.AccessToken, p.RefreshToken, np.AccessToken, np.RefreshToken)
	w.mu.Lock()
	w.now = w.now.Add(time.Minute)
	w.mu.Unlock()
	_, err = w.sess.Refresh(ctx, p.RefreshToken)
	require.ErrorIs(t, err, jtiguard.ErrRefreshReused)
	w.faulty.fail(errors.New("dial tcp 10.0.0.7:6379: connection refused"))
	_, err = w.ver.Verify(ctx, access())
	require.ErrorIs(t, err, jtiguard.ErrStoreUnavailable)
	req.End()

	var texts []string
	names := map[string]int{}
	for _, sp := range s.spans.Ended() {
		names[sp.Name()]++
		texts = append(texts, sp.Name(), sp.Status().Description, fmt.Sprint(sp.Attributes()))
		for _, e := range sp.Events() {
			texts = append(texts, e.Name, fmt.Sprint(e.Attributes))
		}
	}
	assert.Equal(t, map[string]int{
		"GET /orders": 1, "jtiguard.verify": 7, "jtiguard.store.check": 4, "jtiguard.store.revoke": 1,
		"jtiguard.store.begin": 1, "jtiguard.store.rotate": 2,
	}, names)
	var reqEvents []string
	for _, e := range s.spans.Ended()[len(s.spans.Ended())-1].Events() {
		reqEvents = append(reqEvents, e.Name)
	}
	assert.Equal(t, []string{"jtiguard.revoke", "jtiguard.login", "jtiguard.refresh", "jtiguard.refresh_reused", "jtiguard.family_revoked", "jtiguard.store_unavailable"}, reqEvents)

	rm := s.collect(t)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			texts = append(texts, fmt.Sprintf("%s %+v", m.Name, m.Data))
		}
	}
	counts := points(t, rm, "jtiguard.verifications")
	for _, c := range []struct {
		class, reason string
		n             float64
	}{{"access", "ok", 2}, {"access", "signature", 1}, {"access", "revoked", 1}, {"refresh", "ok", 1}, {"refresh", "refresh_reused", 1}, {"access", "store_unavailable", 1}} {
		assert.Equal(t, c.n, counts[set(jtiotel.AttrClass.String(c.class), jtiotel.AttrReason.String(c.reason))], "%s %s", c.class, c.reason)
	}
	texts = append(texts, w.logs.String())
	for _, tok := range w.tokens {
		parts := strings.Split(tok, ".")
		require.Len(t, parts, 3)
		for _, text := range texts {
			for _, n := range []string{tok, parts[1], parts[2]} {
				assert.NotContains(t, text, n, "token text exported")
			}
		}
	}
}
