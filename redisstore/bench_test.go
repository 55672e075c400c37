package redisstore_test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/jtiguard/jtiguard"
	"github.com/jtiguard/jtiguard/redisstore"
	"github.com/jtiguard/jtiguard/redisstore/redistest"
)

// BenchmarkVerify measures full verifications (warm signature cache, so the
// store's round trip dominates) against a loopback redis-server, with 1 and
// 64 concurrent callers, beside a plain GET per call through the same
// client, and logs both against the ceiling: redis-benchmark running the
// verification's own EVALSHA on the same server with as many connections.
func BenchmarkVerify(b *testing.B) {
	srv := redistest.Start(b)
	client := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
	b.Cleanup(func() { client.Close() })
	store := newStore(b, client, -1)
	r := newReplica(b, testKeys(b), store)
	ctx := context.Background()
	tok, _, err := r.iss.Access(jtiguard.Claims{Subject: "alice", Audience: []string{testAudience}})
	if err != nil {
		b.Fatal(err)
	}
	for range 100 {
		if _, err := r.ver.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
	if err := client.Set(ctx, "plain", "1", 0).Err(); err != nil {
		b.Fatal(err)
	}
	for _, callers := range []int{1, 64} {
		perSec := map[string]float64{}
		run := func(name string, op func() error) {
			b.Run(fmt.Sprintf("%s/callers=%d", name, callers), func(b *testing.B) {
				if callers == 1 {
					for b.Loop() {
						if err := op(); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism((callers + 1) / 2) // 2 cores here: GOMAXPROCS x this = callers
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := op(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				perSec[name] = float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(perSec[name], "ops/s")
			})
		}
		run("jtiguard-verify", func() error { _, err := r.ver.Verify(ctx, tok); return err })
		run("plain-GET", func() error { return client.Get(ctx, "plain").Err() })
		ceiling := redisBenchmarkEvalsha(b, srv, callers)
		if ceiling > 0 && perSec["jtiguard-verify"] > 0 {
			b.Logf("callers=%d: verify %.0f/s, plain GET %.0f/s, redis-benchmark EVALSHA ceiling %.0f/s: verify at %.0f%% of the ceiling",
				callers, perSec["jtiguard-verify"], perSec["plain-GET"], ceiling, 100*perSec["jtiguard-verify"]/ceiling)
		}
	}
}

var rpsLine = regexp.MustCompile(`([0-9.]+) requests per second`)

// redisBenchmarkEvalsha runs redis-benchmark with the verification's script
// (a session-less token, so the jti key, its bucket marker and its signal) and returns
// its requests per second, or 0 when redis-benchmark is not installed.
func redisBenchmarkEvalsha(b *testing.B, srv *redistest.Server, clients int) float64 {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		b.Log("redis-benchmark not installed (Debian package redis-tools): no ceiling")
		return 0
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	sha, err := c.ScriptLoad(context.Background(), redisstore.CheckSource).Result()
	if err != nil {
		b.Fatal(err)
	}
	// The bucket's marker exists, as in a store in use: the script reads it,
	// the jti entry and the stamp, like a verification.
	if err := c.HSet(context.Background(), "bench{b00}:e", "m", 0, "g", 1, "q", 1, "w1", "s").Err(); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(bin, "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port()), "-c", strconv.Itoa(clients),
		"-n", "100000", "-q", "evalsha", sha, "3", "bench{b00}:j:x", "bench{b00}:e", "bench{b00}:m", "1", "", "0", "0").CombinedOutput()
	if err != nil {
		b.Fatalf("redis-benchmark: %v: %s", err, out)
	}
	m := rpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("redis-benchmark output: %s", out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
