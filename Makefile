# jtiguard: `make run` runs the example token server, `make test` runs everything CI runs.
GO         ?= go
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Every module in the repository (root, examples, and later redisstore).
MODULES    := $(shell find . -name go.mod -not -path './.git/*' -exec dirname {} \; | sort)
FUZZTIME   ?= 10s
# Fuzz targets as package:target pairs; each runs for FUZZTIME.
FUZZ       := .:FuzzVerify .:FuzzParseJTI .:FuzzParseJWK .:FuzzClaimsJSON .:FuzzHeader .:FuzzBearerHeader .:FuzzChallenge

.PHONY: test check vet lint unit fuzz bench run run-quickstart

test: check unit fuzz

check: vet lint
	@test -z "$$(gofmt -l $(MODULES))" || { echo "gofmt needed:"; gofmt -l $(MODULES); exit 1; }

vet:
	@for m in $(MODULES); do echo "go vet $$m"; (cd $$m && $(GO) vet ./...) || exit 1; done

lint:
	@for m in $(MODULES); do echo "staticcheck $$m"; (cd $$m && $(STATICCHECK) ./...) || exit 1; done

unit:
	@for m in $(MODULES); do echo "go test -race $$m"; (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; done

fuzz:
	@for f in $(FUZZ); do pkg=$${f%%:*}; target=$${f##*:}; \
		echo "fuzz $$target for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; done

# -v shows the ratios each benchmark logs beside its results.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -v . | grep -v '^=== RUN'

# The example token server on the in-memory store (Ctrl-C stops it).
run:
	$(GO) -C examples run ./passwordflow

run-quickstart:
	$(GO) -C examples run ./quickstart
