# jtiguard: `make run` runs the example token server, `make test` runs everything CI runs.
GO         ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Every module in the repository: the root, redisstore, examples and bench.
MODULES    := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
FUZZTIME   ?= 10s
# Fuzz targets as package:target pairs; each runs for FUZZTIME.
FUZZ       := .:FuzzVerify .:FuzzParseJTI .:FuzzParseJWK .:FuzzParsePEM .:FuzzClaimsJSON .:FuzzHeader .:FuzzBearerHeader .:FuzzChallenge .:FuzzDPoPProof

.PHONY: test check vet lint unit fuzz faults bench bench-core run run-quickstart

test: check unit fuzz

check: vet lint
	@test -z "$$(gofmt -l $(MODULES))" || { echo "gofmt needed:"; gofmt -l $(MODULES); exit 1; }

vet:
	@for m in $(MODULES); do echo "go vet $$m"; (cd $$m && $(GO) vet ./...) || exit 1; done

lint:
	@for m in $(MODULES); do echo "staticcheck $$m"; (cd $$m && $(STATICCHECK) ./...) || exit 1; done

unit:
	@for m in $(MODULES); do echo "go test -race $$m"; (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; done

# Go 1.26's fuzz coordinator can report "context deadline exceeded" as the
# -fuzztime deadline passes, with no failing input (golang/go#75804, fixed
# in Go 1.27): a run that says so and wrote no new input to testdata/fuzz is
# not a failure; any other failure is.
fuzz:
	@for f in $(FUZZ); do pkg=$${f%%:*}; target=$${f##*:}; dir=$$pkg/testdata/fuzz/$$target; \
		echo "fuzz $$target for $(FUZZTIME)"; \
		before=$$(ls $$dir 2>/dev/null | wc -l); \
		out=$$($(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg 2>&1); rc=$$?; echo "$$out"; \
		if [ $$rc -ne 0 ]; then \
			after=$$(ls $$dir 2>/dev/null | wc -l); \
			if [ "$$after" = "$$before" ] && echo "$$out" | grep -q '^    context deadline exceeded$$'; then \
				echo "fuzz $$target: the coordinator's deadline race (golang/go#75804), no failing input: not a failure"; \
			else exit 1; fi; \
		fi; done

# The Redis fault scenarios again and again (they also run once in unit):
# kill -9 and restarts, clock skew, failover to a lagging replica, lost
# replies through a proxy, logins racing logout-all; and local answers
# under a lease, 1,000 trials each (250 in unit): kills on one process
# seen on another, tracking paused or cut, restart, FLUSHALL and failover.
# FAULTS_COUNT=10 for a longer soak.
FAULTS_COUNT ?= 3
FAULTS_RUN    = Fault|Failover|LostReplies|ClockSkew|SameSecond|Racing|NodeLoss|Evicting|RevokeIDAcross|RetryIsNotReuse|SlowRedis|KillOnOneProcess|TrackingConnection|LocalState|Migrat
faults:
	cd redisstore && JTIGUARD_TRIALS=1000 $(GO) test -race -count=$(FAULTS_COUNT) -timeout=60m -run '$(FAULTS_RUN)' .

# The root module's own benchmarks (store at 1e6 entries, sessions), with
# what each one logs (-v).
bench-core:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -v . | grep -v '^=== RUN'

# The comparison with peers (bench/ module): medians of 6 runs into
# docs/bench.txt, benchstat's table into docs/benchstat.txt, and the report
# into docs/bench.md, docs/bench.svg and README.md.
BENCHSTAT_VERSION = v0.0.0-20260908200009-22c9c6c9d4da
bench:
	@command -v redis-server >/dev/null 2>&1 || echo "bench: redis-server not found (Debian package redis-server): the Redis rows will be skipped"
	@command -v benchstat >/dev/null 2>&1 || test -x "$$($(GO) env GOPATH)/bin/benchstat" || { \
		echo "bench: benchstat not found: installing golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION) with go install"; \
		$(GO) install golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION); }
	cd bench && $(GO) test -run '^$$' -bench 'Verify$$|Sessions|MemoryPerEntry' -benchmem -count=6 -benchtime=400ms . > ../docs/bench.txt
	cd bench && $(GO) test -run '^$$' -bench 'VerifyParallel|WarmParallel' -benchmem -count=6 -cpu=1,2 -benchtime=400ms . >> ../docs/bench.txt
	cd bench && $(GO) test -run '^$$' -bench 'Warm$$' -benchmem -count=6 -cpu=1 -benchtime=400ms . >> ../docs/bench.txt
	cd bench && $(GO) test -run '^$$' -bench 'Repeated64|Churn' -benchmem -count=6 -benchtime=400ms . >> ../docs/bench.txt
	cd bench && $(GO) test -run '^$$' -bench 'Revoke$$' -count=1 -benchtime=200x . >> ../docs/bench.txt
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" benchstat docs/bench.txt > docs/benchstat.txt
	cd bench && $(GO) run ./cmd/benchreport -in ../docs/bench.txt -md ../docs/bench.md -svg ../docs/bench.svg -readme ../README.md
	@echo "bench: wrote docs/bench.txt, docs/benchstat.txt, docs/bench.md, docs/bench.svg and the README section"

# The example token server, on the in-memory store unless ARGS says
# otherwise: make run ARGS="-addr 127.0.0.1:9090 -redis 127.0.0.1:6379".
# It is built into bin/ and run from here (not with go run, which exits 1
# when interrupted), so Ctrl-C stops it cleanly: the server shuts down and
# exits 0, and make reports no error.
ARGS ?=
run:
	$(GO) -C examples build -o $(CURDIR)/bin/passwordflow ./passwordflow
	bin/passwordflow $(ARGS)

run-quickstart:
	$(GO) -C examples run ./quickstart
