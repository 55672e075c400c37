package jtiotel_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/jtiotel"
)

// BenchmarkWarmVerify measures a warm Verify (a cache hit and one memory
// store read) without an Observer, with this package's recording to the
// metrics SDK outside a trace (no span is made), and inside a sampled
// trace (a span per verification and per store call, to a no-op
// processor). The differences are what the adapter adds per verification.
func BenchmarkWarmVerify(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	for _, tc := range []struct {
		name   string
		obs    bool
		traced bool
	}{{"observer=none", false, false}, {"observer=otel/untraced", true, false}, {"observer=otel/traced", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			var obs *jtiguard.Observer
			if tc.obs {
				var err error
				obs, err = jtiotel.New(jtiotel.Options{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())), TracerProvider: tp})
				if err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			if tc.traced {
				c, s := tp.Tracer("bench").Start(ctx, "request")
				defer s.End()
				ctx = c
			}
			w := newWorld(b, obs)
			tok, _, err := w.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{"https://api.example.com"}, Scope: "read write"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.ver.Verify(ctx, tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.ver.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
