# One command runs every check a change must pass: `make test`.
# It installs what a fresh machine lacks (redis-server), so CI and newcomers
# run exactly the same thing.

GO ?= go
PKGS := ./...

.PHONY: test deps fmt-check vet staticcheck gotest build fuzz-smoke bench clients

test: deps fmt-check vet staticcheck gotest fuzz-smoke clients

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$$(git describe --tags --always --dirty 2>/dev/null || echo dev)" -o bin/notifybridge .

deps:
	@./scripts/install-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi; echo "gofmt: ok"

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) tool staticcheck $(PKGS)

gotest:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# A short run of every fuzz target (the long runs are recorded in docs/reliability.md).
fuzz-smoke:
	@./scripts/fuzz-smoke.sh 5s

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# The JS SDK (unit and against the real binary), the demo in real Chromium,
# and the Python producers; installs node, chromium and python packages when missing.
clients:
	@./scripts/test-clients.sh
