// Command benchreport turns the output of the bench module's benchmarks
// (go test -bench, any -count) into the report: a Markdown table of medians
// with ratios to golang-jwt and to the physical floor, an SVG bar chart, and
// the README section between <!-- bench:start --> and <!-- bench:end -->.
// It uses only the standard library.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "", "benchmark output")
	md := flag.String("md", "", "Markdown report to write")
	svg := flag.String("svg", "", "SVG chart to write")
	readme := flag.String("readme", "", "README whose bench section to replace")
	chart := flag.String("chart", "docs/bench.svg", "the chart's path as the README links it")
	command := flag.String("command", "make bench", "the command that reproduces the report")
	flag.Parse()
	if err := run(*in, *md, *svg, *readme, *chart, *command); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// result holds every sample of one benchmark's metrics.
type result struct {
	samples map[string][]float64 // unit -> values
}

func (r *result) median(unit string) float64 {
	v := slices.Clone(r.samples[unit])
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

var procsSuffix = regexp.MustCompile(`-(\d+)$`)

// parse reads benchmark lines; names keep a "@N" procs suffix when N > 1.
func parse(path string) (map[string]*result, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	results := map[string]*result{}
	var machine []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, p := range []string{"goos:", "goarch:", "cpu:"} {
			if strings.HasPrefix(line, p) && !seen[p] {
				seen[p] = true
				machine = append(machine, strings.TrimSpace(strings.TrimPrefix(line, p)))
			}
		}
		fields := strings.Fields(line)
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(fields[0], "Benchmark")
		procs := 1
		if m := procsSuffix.FindStringSubmatch(name); m != nil {
			procs, _ = strconv.Atoi(m[1])
			name = strings.TrimSuffix(name, m[0])
		}
		if strings.HasPrefix(name, "VerifyParallel") || strings.HasPrefix(name, "WarmParallel") {
			name += "@" + strconv.Itoa(procs)
		}
		r := results[name]
		if r == nil {
			r = &result{samples: map[string][]float64{}}
			results[name] = r
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			r.samples[fields[i+1]] = append(r.samples[fields[i+1]], v)
		}
	}
	return results, machine, sc.Err()
}

var (
	algs        = []string{"HS256", "ES256", "EdDSA"}
	contenders  = []string{"floor", "golang-jwt", "jwx", "jtiguard-cold", "jtiguard-warm"}
	barColors   = map[string]string{"floor": "#9e9e9e", "golang-jwt": "#5b8def", "jwx": "#f2a541", "jtiguard-cold": "#2e7d32", "jtiguard-warm": "#81c784"}
	contendNote = map[string]string{
		"floor":         "base64url + crypto/* signature check + claims decode",
		"golang-jwt":    "golang-jwt v5 Parse, method, iss, aud, exp, iat, strict base64",
		"jwx":           "lestrrat-go/jwx v3 jwt.Parse with key and validation",
		"jtiguard-cold": "first presentation: strict parse, signature, claims, store check",
		"jtiguard-warm": "same token again: cache hit, time and store checks",
	}
)

func fmtNs(ns float64) string {
	switch {
	case math.IsNaN(ns):
		return "n/a"
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}

func fmtRatio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func markdown(res map[string]*result, machine []string, command string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %s. Medians of `%s` (each benchmark run 6 times); ratios are time against golang-jwt and against the floor, lower is faster.\n\n", strings.Join(machine, " "), runtime.Version(), command)
	b.WriteString("| alg | contender | time/op | allocs/op | B/op | × golang-jwt | × floor |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, alg := range algs {
		g, fl := res["Verify/"+alg+"/golang-jwt"], res["Verify/"+alg+"/floor"]
		for _, c := range contenders {
			r := res["Verify/"+alg+"/"+c]
			if r == nil || g == nil || fl == nil {
				continue
			}
			ns := r.median("ns/op")
			fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.0f | %s | %s |\n", alg, c, fmtNs(ns), r.median("allocs/op"), r.median("B/op"),
				fmtRatio(ns, g.median("ns/op")), fmtRatio(ns, fl.median("ns/op")))
		}
	}
	b.WriteString("\nContenders: ")
	for i, c := range contenders {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "**%s**: %s", c, contendNote[c])
	}
	b.WriteString(". jtiguard uses the in-memory store.\n\n")

	b.WriteString("Session operations (EdDSA):\n\n| operation | in memory | on loopback Redis |\n|---|---:|---:|\n")
	for _, op := range []string{"login", "login-over-cap", "refresh", "consume", "revoke"} {
		m, r := res["Sessions/memory/"+op], res["Sessions/redis/"+op]
		cell := func(x *result) string {
			if x == nil {
				return "not run"
			}
			return fmt.Sprintf("%s, %.0f allocs", fmtNs(x.median("ns/op")), x.median("allocs/op"))
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", op, cell(m), cell(r))
	}
	b.WriteString("\nParallel verification, every token parsed and its signature checked (EdDSA, 1,024 tokens round-robin, `-cpu 1,2`):\n\n| contender | 1 CPU | 2 CPUs |\n|---|---:|---:|\n")
	for _, c := range []string{"golang-jwt", "jtiguard-nocache"} {
		one, two := res["VerifyParallel/"+c+"@1"], res["VerifyParallel/"+c+"@2"]
		cell := func(x *result) string {
			if x == nil {
				return "not run"
			}
			return fmtNs(x.median("ns/op"))
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c, cell(one), cell(two))
	}
	b.WriteString(localAnswers(res))
	b.WriteString("\nIn-memory store, heap per live entry with 1e6 entries:\n\n| entry | B/entry |\n|---|---:|\n")
	for _, k := range []string{"token", "family"} {
		if r := res["MemoryPerEntry/"+k]; r != nil {
			fmt.Fprintf(&b, "| %s | %.0f |\n", map[string]string{"token": "revoked or used token", "family": "session family"}[k], r.median("B/entry"))
		}
	}
	return b.String()
}

// svgChart draws time/op (log scale) and allocs/op per contender and
// algorithm as grouped horizontal bars.
func svgChart(res map[string]*result, machine []string) string {
	const (
		width, left, rowH, groupGap = 900, 150, 16, 14
		panelW                      = 330
		allocX                      = left + panelW + 120
	)
	rows := len(algs)*len(contenders) + len(algs)
	height := 70 + rows*rowH + len(algs)*groupGap + 60
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="15" font-weight="bold">Token verification: time per op (log scale, shorter is faster) and allocations per op</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="38" fill="#555">%s</text>`+"\n", html.EscapeString(strings.Join(machine, " · ")))
	lo, hi := math.Log10(100), math.Log10(200_000) // 100 ns .. 200 µs
	maxAllocs := 0.0
	for _, r := range res {
		maxAllocs = math.Max(maxAllocs, r.median("allocs/op"))
	}
	maxAllocs = math.Max(maxAllocs, 1)
	y := 60
	for _, tick := range []float64{100, 1e3, 1e4, 1e5} {
		x := left + int((math.Log10(tick)-lo)/(hi-lo)*panelW)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/><text x="%d" y="%d" fill="#777" text-anchor="middle">%s</text>`+"\n", x, y-8, x, height-40, x, height-25, fmtNs(tick))
	}
	for _, alg := range algs {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+rowH-4, alg)
		y += rowH
		for _, c := range contenders {
			r := res["Verify/"+alg+"/"+c]
			if r == nil {
				y += rowH
				continue
			}
			ns, allocs := r.median("ns/op"), r.median("allocs/op")
			w := int((math.Log10(math.Max(ns, 100)) - lo) / (hi - lo) * panelW)
			aw := int(allocs / maxAllocs * 200)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, y+rowH-4, c)
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, left, y+2, max(w, 1), rowH-4, barColors[c])
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`, left+max(w, 1)+4, y+rowH-4, fmtNs(ns))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, allocX, y+2, max(aw, 1), rowH-4, barColors[c])
			fmt.Fprintf(&b, `<text x="%d" y="%d">%.0f allocs</text>`+"\n", allocX+max(aw, 1)+4, y+rowH-4, allocs)
			y += rowH
		}
		y += groupGap
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">allocations per op</text>`+"\n", allocX, height-25)
	b.WriteString("</svg>\n")
	return b.String()
}

func run(in, md, svg, readme, chart, command string) error {
	if in == "" {
		return fmt.Errorf("-in is required")
	}
	res, machine, err := parse(in)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return fmt.Errorf("%s: no benchmark results", in)
	}
	table := markdown(res, machine, command)
	if md != "" {
		if err := os.WriteFile(md, []byte("# Benchmarks\n\n"+table), 0o644); err != nil {
			return err
		}
	}
	if svg != "" {
		if err := os.WriteFile(svg, []byte(svgChart(res, machine)), 0o644); err != nil {
			return err
		}
	}
	if readme != "" {
		data, err := os.ReadFile(readme)
		if err != nil {
			return err
		}
		const start, end = "<!-- bench:start -->", "<!-- bench:end -->"
		s := string(data)
		i, j := strings.Index(s, start), strings.Index(s, end)
		if i < 0 || j < i {
			return fmt.Errorf("%s: no %s ... %s section", readme, start, end)
		}
		section := start + "\n![benchmark chart](" + chart + ")\n\n" + table + "\n" + end
		if err := os.WriteFile(readme, []byte(s[:i]+section+s[j+len(end):]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// localAnswers is the report's section on the warm path and the Redis
// store's local answers (issue 12's figures).
func localAnswers(res map[string]*result) string {
	var b strings.Builder
	cell := func(x *result, unit string) float64 {
		if x == nil {
			return math.NaN()
		}
		return x.median(unit)
	}
	mem := cell(res["Warm/memory"], "ns/op")
	b.WriteString("\nWarm verification (EdDSA, the same token again, one core: `-cpu 1`) per store, with the commands sent to Redis per verification:\n\n| store | time/op | × memory | round trips/op | allocs/op |\n|---|---:|---:|---:|---:|\n")
	for _, st := range []string{"memory", "redis-local", "redis-roundtrip"} {
		r := res["Warm/"+st]
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %.0f |\n", st, fmtNs(r.median("ns/op")), fmtRatio(r.median("ns/op"), mem), r.median("rt/op"), r.median("allocs/op"))
	}
	b.WriteString("\nParallel warm verification, 1,024 tokens round-robin (`-cpu 1,2`):\n\n| store | 1 CPU | 2 CPUs | 2 CPUs / 1 CPU |\n|---|---:|---:|---:|\n")
	for _, st := range []string{"memory", "redis-local"} {
		one, two := cell(res["WarmParallel/"+st+"@1"], "ns/op"), cell(res["WarmParallel/"+st+"@2"], "ns/op")
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", st, fmtNs(one), fmtNs(two), fmtRatio(two, one))
	}
	on, off := cell(res["Repeated64/lease"], "cmds/op"), cell(res["Repeated64/no-lease"], "cmds/op")
	if !math.IsNaN(on) && !math.IsNaN(off) && off > 0 {
		fmt.Fprintf(&b, "\n64 callers presenting their tokens again and again: %.3f commands to Redis per verification with local answers, %.3f without (%.1f%% fewer).\n", on, off, 100*(1-on/off))
	}
	con, coff := cell(res["Churn/lease"], "cmds/op"), cell(res["Churn/no-lease"], "cmds/op")
	if !math.IsNaN(con) && !math.IsNaN(coff) {
		fmt.Fprintf(&b, "\n4,096 users' tokens verified in turn while another process logs a new user in after every 64 verifications (each login writes one of the 256 buckets the users are spread over): %.3f commands per verification with local answers, %.3f without. Invalidation is per key: other users' writes leave an answer in place.\n", con, coff)
	}
	b.WriteString("\nRevoke on Redis (a kill waits out the lease, 150 ms by default):\n\n| lease | p50 | p99 |\n|---|---:|---:|\n")
	for _, l := range []string{"lease", "no-lease"} {
		r := res["Revoke/"+l]
		if r == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms |\n", l, r.median("p50-ms"), r.median("p99-ms"))
	}
	return b.String()
}
