package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
cpu: Test CPU
BenchmarkVerify/EdDSA/floor-2          	    1000	     40000 ns/op	    1096 B/op	      15 allocs/op
BenchmarkVerify/EdDSA/floor-2          	    1000	     42000 ns/op	    1096 B/op	      15 allocs/op
BenchmarkVerify/EdDSA/golang-jwt-2     	    1000	     50000 ns/op	    3680 B/op	      81 allocs/op
BenchmarkVerify/EdDSA/jtiguard-warm-2  	    1000	       500 ns/op	     357 B/op	       1 allocs/op
BenchmarkVerifyParallel/golang-jwt     	    1000	     46000 ns/op
BenchmarkVerifyParallel/golang-jwt-2   	    1000	     23000 ns/op
BenchmarkMemoryPerEntry/token-2        	    1000	         0.3 ns/op	        84.00 B/entry
`

func TestReport(t *testing.T) {
	dir := t.TempDir()
	in, md, svg, readme := filepath.Join(dir, "b.txt"), filepath.Join(dir, "b.md"), filepath.Join(dir, "b.svg"), filepath.Join(dir, "README.md")
	for path, data := range map[string]string{in: sample, readme: "intro\n<!-- bench:start -->\nold\n<!-- bench:end -->\noutro\n"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(in, md, svg, readme, "docs/bench.svg", "make bench"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(md)
	for _, want := range []string{
		"| EdDSA | floor | 41.0 µs | 15 | 1096 | 0.82× | 1.00× |", // median of two samples
		"| EdDSA | jtiguard-warm | 500 ns | 1 | 357 | 0.01× | 0.01× |",
		"| golang-jwt | 46.0 µs | 23.0 µs |",
		"| revoked or used token | 84 |",
		"Test CPU",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	r, _ := os.ReadFile(readme)
	if !strings.HasPrefix(string(r), "intro\n<!-- bench:start -->\n![benchmark chart](docs/bench.svg)") || !strings.HasSuffix(string(r), "<!-- bench:end -->\noutro\n") || strings.Contains(string(r), "\nold\n") {
		t.Errorf("README section not replaced:\n%s", r)
	}
	chart, _ := os.ReadFile(svg)
	if !strings.HasPrefix(string(chart), "<svg") || !strings.Contains(string(chart), "jtiguard-warm") {
		t.Errorf("chart: %s", chart)
	}
	if err := run(filepath.Join(dir, "missing.txt"), "", "", "", "", ""); err == nil {
		t.Error("a missing input must be an error")
	}
}
