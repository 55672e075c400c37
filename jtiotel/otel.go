// Package jtiotel reports what a jtiguard Verifier does to OpenTelemetry:
// metrics (verifications by class and reason, cache lookups, store latency
// and errors per operation, events, key set fetches) and spans (one per
// verification, store call and key fetch, parented on the request's span,
// and an event on the request's span for each jtiguard event). It is its
// own module, so that jtiguard itself never depends on OpenTelemetry.
//
//	obs, err := jtiotel.New(jtiotel.Options{}) // the global providers
//	ver, err := jtiguard.NewVerifier(keys, jtiguard.VerifierConfig{..., Observer: obs})
//
// No metric attribute, span attribute, span name or status ever holds a
// token: metric attributes come from fixed sets (jtiguard.Reasons, the
// classes, the store operations, the event kinds); spans and span events
// carry those, and jti, sid and client id, which identify a token or a
// session without being one. The subject is personal data and is added
// only with Options.Subjects. docs/observability.md lists the names.
package jtiotel

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jtiguard/jtiguard"
)

// ScopeName is the instrumentation scope of the meter and the tracer.
const ScopeName = "github.com/jtiguard/jtiguard/jtiotel"

// The attribute keys. They are stable.
const (
	AttrClass     = attribute.Key("jtiguard.token.class")     // access, one_time, refresh, step
	AttrReason    = attribute.Key("jtiguard.reason")          // jtiguard.Reason: ok, expired, revoked, ...
	AttrCache     = attribute.Key("jtiguard.cache.result")    // hit, miss, none
	AttrStoreOp   = attribute.Key("jtiguard.store.operation") // check, consume, rotate, ...
	AttrEvent     = attribute.Key("jtiguard.event")           // login, refresh_reused, ...
	AttrJTI       = attribute.Key("jtiguard.jti")
	AttrSession   = attribute.Key("jtiguard.sid")
	AttrClientID  = attribute.Key("jtiguard.client_id")
	AttrNext      = attribute.Key("jtiguard.next_jti")
	AttrCount     = attribute.Key("jtiguard.count")
	AttrSubject   = attribute.Key("enduser.id")            // only with Options.Subjects
	AttrResult    = attribute.Key("jtiguard.keys.result")  // ok, error
	AttrKeys      = attribute.Key("jtiguard.keys.count")   // keys in the set after a fetch
	AttrChanged   = attribute.Key("jtiguard.keys.changed") // the fetch changed the set
	AttrURL       = attribute.Key("url.full")              // the key set's URL, without credentials
	AttrErrorText = attribute.Key("jtiguard.error")        // an event's cause (store or key fetch failure)
)

// Options configures New. The zero value uses the global providers.
type Options struct {
	// MeterProvider makes the instruments: default otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// TracerProvider makes the spans: default otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// RootSpans makes spans for calls whose context carries no span (a
	// verification outside a traced request, a scheduled key fetch) as
	// roots of traces of their own. Default false: spans are made only
	// as children of a span already in the context, so a path that is
	// not traced makes no traces, and a verification costs no span.
	RootSpans bool
	// Subjects adds the subject (enduser.id) to span events. Default
	// false: a subject is personal data, and metrics never carry it.
	Subjects bool
}

// durationBuckets are the boundaries, in seconds, of the duration
// histograms: from 10 µs to 1 s.
var durationBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}

// classes is one more than the largest token class, TypeStep (4); class
// 0 stands for any class this module does not know.
const classes = 5

type observer struct {
	tracer    trace.Tracer
	rootSpans bool
	subjects  bool

	verifications metric.Int64Counter
	verifyLatency metric.Float64Histogram
	cacheLookups  metric.Int64Counter
	storeLatency  metric.Float64Histogram
	storeErrors   metric.Int64Counter
	events        metric.Int64Counter
	fetches       metric.Int64Counter
	fetchLatency  metric.Float64Histogram
	keys          metric.Int64Gauge

	// Attribute sets made once, in option slices made once, so that
	// recording allocates nothing (a variadic argument passed to an
	// interface method escapes: a slice of its own per call).
	byReason [classes]map[string][]metric.AddOption // class, reason
	byClass  [classes][]metric.RecordOption
	classKV  [classes]attribute.KeyValue
	cacheHit []metric.AddOption
	cacheMis []metric.AddOption
	byOp     map[jtiguard.StoreOp]opOptions
	byEvent  map[jtiguard.EventKind][]metric.AddOption
	fetchOK  []metric.AddOption
	fetchErr []metric.AddOption
}

type opOptions struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// add and record make option slices of one attribute set.
func add(kvs ...attribute.KeyValue) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

func record(kvs ...attribute.KeyValue) []metric.RecordOption {
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
}

// New returns an Observer that records to opts' providers. Give it to
// jtiguard.VerifierConfig.Observer and, for the key set's metrics and
// spans, RemoteKeysConfig.Observer. It fails only if the meter refuses an
// instrument.
//
// A verification records two or three measurements (a counter, a
// histogram, the cache counter) with attribute sets made in advance, and
// a span only when the context carries a span (or RootSpans). Spans are
// made after the fact with the times jtiguard measured: a store call's
// span is a sibling of its verification's span, under the request's.
func New(opts Options) (*jtiguard.Observer, error) {
	mp, tp := opts.MeterProvider, opts.TracerProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	meter := mp.Meter(ScopeName)
	o := &observer{tracer: tp.Tracer(ScopeName), rootSpans: opts.RootSpans, subjects: opts.Subjects}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	o.verifications, err = meter.Int64Counter("jtiguard.verifications", metric.WithUnit("{verification}"),
		metric.WithDescription("Verifications of presented tokens, by the class the verification accepts and the outcome (reason: ok, or why the token was refused)."))
	must(err)
	o.verifyLatency, err = meter.Float64Histogram("jtiguard.verification.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Time taken by verifications of presented tokens, store calls included."))
	must(err)
	o.cacheLookups, err = meter.Int64Counter("jtiguard.cache.lookups", metric.WithUnit("{lookup}"),
		metric.WithDescription("Lookups of the verified-token cache: hit (no signature check) or miss."))
	must(err)
	o.storeLatency, err = meter.Float64Histogram("jtiguard.store.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Time taken by calls to the token store, by operation, failed calls included."))
	must(err)
	o.storeErrors, err = meter.Int64Counter("jtiguard.store.errors", metric.WithUnit("{call}"),
		metric.WithDescription("Calls to the token store that failed (unreachable, timed out, full): each refused its request with 503."))
	must(err)
	o.events, err = meter.Int64Counter("jtiguard.events", metric.WithUnit("{event}"),
		metric.WithDescription("Security and audit events, by kind (refresh_reused, replay_refused, state_lost, login, refresh, ...)."))
	must(err)
	o.fetches, err = meter.Int64Counter("jtiguard.keys.fetches", metric.WithUnit("{fetch}"),
		metric.WithDescription("Fetches of a remote key set (JWKS), by result: ok, or error (the last good keys are kept)."))
	must(err)
	o.fetchLatency, err = meter.Float64Histogram("jtiguard.keys.fetch.duration", metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(durationBuckets...),
		metric.WithDescription("Time taken by fetches of a remote key set."))
	must(err)
	o.keys, err = meter.Int64Gauge("jtiguard.keys", metric.WithUnit("{key}"),
		metric.WithDescription("Keys in the remote key set after its last fetch (0: dropped or never loaded)."))
	must(err)
	if len(errs) > 0 {
		return nil, fmt.Errorf("jtiotel: %v", errs)
	}

	reasons := jtiguard.Reasons()
	for class := range classes {
		kv := AttrClass.String(jtiguard.TokenType(class).Label())
		o.classKV[class] = kv
		o.byClass[class] = record(kv)
		o.byReason[class] = make(map[string][]metric.AddOption, len(reasons))
		for _, r := range reasons {
			o.byReason[class][r] = add(kv, AttrReason.String(r))
		}
	}
	o.cacheHit = add(AttrCache.String(jtiguard.CacheHit.String()))
	o.cacheMis = add(AttrCache.String(jtiguard.CacheMiss.String()))
	o.byOp = make(map[jtiguard.StoreOp]opOptions)
	for _, op := range []jtiguard.StoreOp{
		jtiguard.StoreCheck, jtiguard.StoreConsume, jtiguard.StoreCheckConsume, jtiguard.StoreRevoke, jtiguard.StoreBegin,
		jtiguard.StoreRotate, jtiguard.StoreEnd, jtiguard.StoreEndSubject, jtiguard.StoreList, jtiguard.StoreEndOthers,
	} {
		o.byOp[op] = opOptions{add: add(AttrStoreOp.String(string(op))), record: record(AttrStoreOp.String(string(op)))}
	}
	o.byEvent = make(map[jtiguard.EventKind][]metric.AddOption)
	for _, k := range []jtiguard.EventKind{
		jtiguard.EventLogin, jtiguard.EventRefresh, jtiguard.EventRenew, jtiguard.EventLogout, jtiguard.EventLogoutAll,
		jtiguard.EventRevoke, jtiguard.EventSessionEnded, jtiguard.EventRefreshReused, jtiguard.EventFamilyRevoked,
		jtiguard.EventReplayRefused, jtiguard.EventDPoPReplayRefused, jtiguard.EventDPoPBindingRefused,
		jtiguard.EventStoreUnavailable, jtiguard.EventStateLost, jtiguard.EventKeysFetchFailed, jtiguard.EventKeysExpired,
	} {
		o.byEvent[k] = add(AttrEvent.String(string(k)))
	}
	o.fetchOK = add(AttrResult.String("ok"))
	o.fetchErr = add(AttrResult.String("error"))
	return &jtiguard.Observer{
		Verified:    o.verified,
		Store:       o.store,
		Event:       o.event,
		KeysFetched: o.fetched,
	}, nil
}

// traced reports whether a span should be made for a call with ctx.
func (o *observer) traced(ctx context.Context) bool {
	return o.rootSpans || trace.SpanContextFromContext(ctx).IsValid()
}

func (o *observer) verified(ctx context.Context, v jtiguard.Verification) {
	class := int(v.Class)
	if class < 0 || class >= classes {
		class = 0
	}
	r := v.Reason
	reason, ok := o.byReason[class][r]
	if !ok { // a reason jtiguard.Reasons does not list: none should exist
		r = jtiguard.ReasonOther
		reason = o.byReason[class][r]
	}
	o.verifications.Add(ctx, 1, reason...)
	o.verifyLatency.Record(ctx, v.Duration.Seconds(), o.byClass[class]...)
	switch v.Cache {
	case jtiguard.CacheHit:
		o.cacheLookups.Add(ctx, 1, o.cacheHit...)
	case jtiguard.CacheMiss:
		o.cacheLookups.Add(ctx, 1, o.cacheMis...)
	}
	if !o.traced(ctx) {
		return
	}
	_, span := o.tracer.Start(ctx, "jtiguard.verify", trace.WithTimestamp(v.Start), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(o.classKV[class], AttrReason.String(r), AttrCache.String(v.Cache.String())))
	if v.Err != nil {
		span.SetStatus(codes.Error, r) // the reason, a fixed word: never the error's text
	}
	span.End(trace.WithTimestamp(v.Start.Add(v.Duration)))
}

func (o *observer) store(ctx context.Context, c jtiguard.StoreCall) {
	opts, ok := o.byOp[c.Op]
	if !ok {
		opts = opOptions{add: add(AttrStoreOp.String(string(c.Op))), record: record(AttrStoreOp.String(string(c.Op)))}
	}
	o.storeLatency.Record(ctx, c.Duration.Seconds(), opts.record...)
	if c.Err != nil {
		o.storeErrors.Add(ctx, 1, opts.add...)
	}
	if !o.traced(ctx) {
		return
	}
	_, span := o.tracer.Start(ctx, "jtiguard.store."+string(c.Op), trace.WithTimestamp(c.Start), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrStoreOp.String(string(c.Op))))
	if c.Err != nil {
		// A store's error names the store's trouble (a timeout, a refused
		// connection), never a token: the store gets none but from an
		// IntrospectionStore, which does not quote it.
		span.SetStatus(codes.Error, c.Err.Error())
	}
	span.End(trace.WithTimestamp(c.Start.Add(c.Duration)))
}

func (o *observer) event(ctx context.Context, e jtiguard.Event) {
	kind, ok := o.byEvent[e.Kind]
	if !ok { // a kind added to jtiguard since: still a fixed set
		kind = add(AttrEvent.String(string(e.Kind)))
	}
	o.events.Add(ctx, 1, kind...)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, AttrEvent.String(string(e.Kind)))
	for _, kv := range [...]struct {
		k attribute.Key
		v string
	}{{AttrJTI, e.JTI}, {AttrSession, e.Session}, {AttrClientID, e.ClientID}, {AttrNext, e.Next}} {
		if kv.v != "" {
			attrs = append(attrs, kv.k.String(kv.v))
		}
	}
	if e.Subject != "" && o.subjects {
		attrs = append(attrs, AttrSubject.String(e.Subject))
	}
	if e.Count != 0 {
		attrs = append(attrs, AttrCount.Int(e.Count))
	}
	if e.Err != nil {
		attrs = append(attrs, AttrErrorText.String(e.Err.Error()))
	}
	span.AddEvent("jtiguard."+string(e.Kind), trace.WithAttributes(attrs...))
}

func (o *observer) fetched(ctx context.Context, f jtiguard.KeysFetch) {
	result := o.fetchOK
	if f.Err != nil {
		result = o.fetchErr
	}
	o.fetches.Add(ctx, 1, result...)
	o.fetchLatency.Record(ctx, f.Duration.Seconds())
	o.keys.Record(ctx, int64(f.Keys))
	if !o.traced(ctx) {
		return
	}
	_, span := o.tracer.Start(ctx, "jtiguard.keys.fetch", trace.WithTimestamp(f.Start), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(AttrURL.String(stripQuery(f.URL)), AttrKeys.Int(f.Keys), AttrChanged.Bool(f.Changed)))
	if f.Err != nil {
		span.SetStatus(codes.Error, f.Err.Error())
	}
	span.End(trace.WithTimestamp(f.Start.Add(f.Duration)))
}

// stripQuery drops a URL's query and fragment, where a key set URL could
// carry an API key.
func stripQuery(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		return u[:i]
	}
	return u
}
