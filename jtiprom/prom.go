// Package jtiprom exports what a jtiguard Verifier does as Prometheus
// metrics (client_golang): verifications by class and reason, the
// verified-token cache's hits and misses, store latency and errors per
// operation, events (logins, rotations, reuse and replay detections, data
// loss, ...) and key set fetches. It is its own module, so that jtiguard
// itself never depends on client_golang.
//
//	obs, err := jtiprom.New(prometheus.DefaultRegisterer, jtiprom.Options{})
//	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{..., Observer: obs})
//	remote, err := jtiguard.NewRemoteKeys(ctx, url, jtiguard.RemoteKeysConfig{Observer: obs})
//
// Every label value comes from a fixed set (jtiguard.Reasons, the token
// classes, the store operations, the event kinds): no label ever holds a
// token, a jti, a subject or any other value a client chooses, so the
// number of series is bounded whatever the traffic. docs/observability.md
// lists the metrics.
package jtiprom

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jtiguard/jtiguard"
)

// defaultBuckets are the latency buckets, in seconds, of the duration
// histograms unless Options.Buckets is set.
var defaultBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// Options configures New. The zero value is usable.
type Options struct {
	// Namespace prefixes every metric name: default "jtiguard".
	Namespace string
	// ConstLabels are added to every metric, e.g. the service name.
	ConstLabels prometheus.Labels
	// Buckets are the duration histograms' buckets in seconds. Default:
	// 10, 25, 50, 100, 250 and 500 µs, 1, 2.5, 5, 10, 25, 50, 100 and 250
	// ms, and 1 s: a warm verification on the memory store takes well
	// under 10 µs, a Redis round trip tens of µs, a store timing out up
	// to its timeout.
	Buckets []float64
}

// The label values of fetches.
const (
	resultOK    = "ok"
	resultError = "error"
)

// metrics holds the collectors and the series resolved in advance, so
// that an observation on the hot path is a map read and an atomic add.
type metrics struct {
	verifications *prometheus.CounterVec   // class, reason
	verifyLatency *prometheus.HistogramVec // class
	cache         *prometheus.CounterVec   // result
	storeLatency  *prometheus.HistogramVec // op
	storeErrors   *prometheus.CounterVec   // op
	events        *prometheus.CounterVec   // event
	fetches       *prometheus.CounterVec   // result
	fetchLatency  prometheus.Histogram
	keys          prometheus.Gauge

	byClass  [classes]classSeries
	cacheHit prometheus.Counter
	cacheMis prometheus.Counter
	byOp     [len(storeOps)]opSeries
	byEvent  map[jtiguard.EventKind]prometheus.Counter
	fetchOK  prometheus.Counter
	fetchErr prometheus.Counter
}

// classes is one more than the largest token class: TypeAccess (1) to
// TypeStep (4), and 0 for a class this module does not know.
const classes = 5

type classSeries struct {
	latency prometheus.Observer
	ok      prometheus.Counter // reason "ok", the common case, without a map read
	// reasons maps each reason to its counter, created at its first use:
	// a class sees a handful of the reasons, and a series that can never
	// move would only be noise.
	reasons map[string]*lazyCounter
}

type lazyCounter struct {
	c atomic.Pointer[prometheus.Counter]
}

type opSeries struct {
	latency prometheus.Observer
	errors  prometheus.Counter
}

// events are the kinds whose counters exist from the start, at zero, so
// that an alert on a rate sees the first one.
var events = []jtiguard.EventKind{
	jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRenew, jtiguard.EventLogout, jtiguard.EventLogoutAll,
	jtiguard.EventRevoke, jtiguard.EventSessionEnded, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked,
	jtiguard.EventReplayRefused, jtiguard.EventDPoPReplayRefused, jtiguard.EventDPoPBindingRefused,
	jtiguard.EventStoreUnavailable, jtiguard.EventStateLost, jtiguard.EventKeysFetchFailed, jtiguard.EventKeysExpired,
}

var storeOps = [...]jtiguard.StoreOp{
	jtiguard.StoreCheck, jtiguard.StoreConsume, jtiguard.StoreCheckConsume, jtiguard.StoreRevoke, jtiguard.StoreBegin,
	jtiguard.StoreRotate, jtiguard.StoreEnd, jtiguard.StoreEndSubject, jtiguard.StoreList, jtiguard.StoreEndOthers,
}

// New registers jtiguard's metrics with reg (prometheus.DefaultRegisterer
// when nil) and returns an Observer that feeds them: give it to
// jtiguard.VerifierConfig.Observer and, for the key set metrics,
// RemoteKeysConfig.Observer. It fails if reg refuses a collector (one
// already registered under the same name: call New once per registry and
// share the Observer, or set Namespace or ConstLabels apart).
//
// The Observer is safe for concurrent use. An observation costs one map
// read and one or two atomic adds per series it moves, and allocates
// nothing once a series exists.
func New(reg prometheus.Registerer, opts Options) (*jtiguard.Observer, error) {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "jtiguard"
	}
	if opts.Buckets == nil {
		opts.Buckets = defaultBuckets
	}
	ns, cl := opts.Namespace, opts.ConstLabels
	m := &metrics{
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "verifications_total", ConstLabels: cl,
			Help: "Verifications of presented tokens, by the class the verification accepts and the outcome (reason: ok, or why the token was refused).",
		}, []string{"class", "reason"}),
		verifyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "verification_duration_seconds", ConstLabels: cl, Buckets: opts.Buckets,
			Help: "Time taken by verifications of presented tokens, store calls included.",
		}, []string{"class"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "verify_cache_total", ConstLabels: cl,
			Help: "Lookups of the verified-token cache: hit (no signature check) or miss.",
		}, []string{"result"}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "store_duration_seconds", ConstLabels: cl, Buckets: opts.Buckets,
			Help: "Time taken by calls to the token store, by operation, failed calls included.",
		}, []string{"op"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "store_errors_total", ConstLabels: cl,
			Help: "Calls to the token store that failed (unreachable, timed out, full): each refused its request with 503.",
		}, []string{"op"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "events_total", ConstLabels: cl,
			Help: "Security and audit events, by kind (refresh_reused, replay_refused, state_lost, login, refresh, ...).",
		}, []string{"event"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "key_fetches_total", ConstLabels: cl,
			Help: "Fetches of a remote key set (JWKS), by result: ok, or error (the last good keys are kept).",
		}, []string{"result"}),
		fetchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "key_fetch_duration_seconds", ConstLabels: cl, Buckets: opts.Buckets,
			Help: "Time taken by fetches of a remote key set.",
		}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "keys", ConstLabels: cl,
			Help: "Keys in the remote key set after its last fetch (0: dropped or never loaded).",
		}),
	}
	for _, c := range []prometheus.Collector{m.verifications, m.verifyLatency, m.cache, m.storeLatency, m.storeErrors, m.events, m.fetches, m.fetchLatency, m.keys} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("jtiprom: %w", err)
		}
	}
	reasons := jtiguard.Reasons()
	for class := range m.byClass {
		label := jtiguard.TokenType(class).Label()
		s := classSeries{reasons: make(map[string]*lazyCounter, len(reasons))}
		for _, r := range reasons {
			s.reasons[r] = &lazyCounter{}
		}
		if class != 0 {
			s.latency = m.verifyLatency.WithLabelValues(label)
			s.ok = m.verifications.WithLabelValues(label, jtiguard.ReasonOK)
		}
		m.byClass[class] = s
	}
	m.cacheHit = m.cache.WithLabelValues(jtiguard.CacheHit.String())
	m.cacheMis = m.cache.WithLabelValues(jtiguard.CacheMiss.String())
	for i, op := range storeOps {
		m.byOp[i] = opSeries{latency: m.storeLatency.WithLabelValues(string(op)), errors: m.storeErrors.WithLabelValues(string(op))}
	}
	m.byEvent = make(map[jtiguard.EventKind]prometheus.Counter, len(events))
	for _, k := range events {
		m.byEvent[k] = m.events.WithLabelValues(string(k))
	}
	m.fetchOK = m.fetches.WithLabelValues(resultOK)
	m.fetchErr = m.fetches.WithLabelValues(resultError)
	return &jtiguard.Observer{
		Verified:    m.verified,
		Store:       m.store,
		Event:       m.event,
		KeysFetched: m.fetched,
	}, nil
}

func (m *metrics) verified(_ context.Context, v jtiguard.Verification) {
	class := int(v.Class)
	if class < 0 || class >= classes {
		class = 0
	}
	s := &m.byClass[class]
	if v.Reason == jtiguard.ReasonOK && s.ok != nil {
		s.ok.Inc()
	} else {
		m.reason(s, class, v.Reason).Inc()
	}
	if s.latency != nil {
		s.latency.Observe(v.Duration.Seconds())
	} else {
		m.verifyLatency.WithLabelValues(v.Class.Label()).Observe(v.Duration.Seconds())
	}
	switch v.Cache {
	case jtiguard.CacheHit:
		m.cacheHit.Inc()
	case jtiguard.CacheMiss:
		m.cacheMis.Inc()
	}
}

// reason returns the counter of reason for a class, creating its series
// at first use. A reason jtiguard.Reasons does not list (none should
// exist) is counted as "other", so that the label stays a fixed set.
func (m *metrics) reason(s *classSeries, class int, reason string) prometheus.Counter {
	l, ok := s.reasons[reason]
	if !ok {
		reason = jtiguard.ReasonOther
		l = s.reasons[reason]
	}
	if c := l.c.Load(); c != nil {
		return *c
	}
	c := m.verifications.WithLabelValues(jtiguard.TokenType(class).Label(), reason)
	l.c.Store(&c) // racing stores hold the same series
	return c
}

func (m *metrics) store(_ context.Context, c jtiguard.StoreCall) {
	var s opSeries
	if i := opIndex(c.Op); i >= 0 {
		s = m.byOp[i]
	} else {
		s = opSeries{latency: m.storeLatency.WithLabelValues(string(c.Op)), errors: m.storeErrors.WithLabelValues(string(c.Op))}
	}
	s.latency.Observe(c.Duration.Seconds())
	if c.Err != nil {
		s.errors.Inc()
	}
}

// opIndex returns the index of op in storeOps, or -1.
func opIndex(op jtiguard.StoreOp) int {
	switch op {
	case jtiguard.StoreCheck:
		return 0
	case jtiguard.StoreConsume:
		return 1
	case jtiguard.StoreCheckConsume:
		return 2
	case jtiguard.StoreRevoke:
		return 3
	case jtiguard.StoreBegin:
		return 4
	case jtiguard.StoreRotate:
		return 5
	case jtiguard.StoreEnd:
		return 6
	case jtiguard.StoreEndSubject:
		return 7
	case jtiguard.StoreList:
		return 8
	case jtiguard.StoreEndOthers:
		return 9
	}
	return -1
}

func (m *metrics) event(_ context.Context, e jtiguard.Event) {
	if c, ok := m.byEvent[e.Kind]; ok {
		c.Inc()
		return
	}
	m.events.WithLabelValues(string(e.Kind)).Inc() // a kind added to jtiguard since: still a fixed set
}

func (m *metrics) fetched(_ context.Context, f jtiguard.KeysFetch) {
	m.fetchLatency.Observe(f.Duration.Seconds())
	m.keys.Set(float64(f.Keys))
	if f.Err != nil {
		m.fetchErr.Inc()
		return
	}
	m.fetchOK.Inc()
}
