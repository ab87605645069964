# meshd make targets. `make test` is the README's test command and what CI runs.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin

.PHONY: all build test unit e2e lab-deps vet fuzz clean bench demo

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/... ./packaging/...
	$(GO) vet -tags 'e2e bench' ./e2e/bench/

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# The lab needs root, /dev/net/tun and the packages lab-deps installs.
lab-deps:
	bash scripts/lab-deps.sh

e2e: lab-deps build
	$(GO) test -tags e2e -count=1 -p 1 -timeout 15m ./e2e/... ./packaging/...
	$(GO) test -tags 'e2e bench' -count=1 -skip TestBench ./e2e/bench/

test: lab-deps vet unit e2e

# The main job: a coordinator and two nodes behind different NATs in network
# namespaces, real meshd/meshctl, status, peers and a ping across; always torn down.
demo: lab-deps
	$(GO) test -tags e2e -count=1 -v -run '^TestDemo$$' ./e2e/demo/

# Short fuzzing of every target (CI runs the seed corpora as part of `unit`).
# FUZZMEM is the heap limit (GOMEMLIMIT) of the fuzz processes. It is soft:
# it keeps the workers' GC tight so the fuzzer stays within a CI box, and an
# input that sizes memory absurdly still kills its worker, which the fuzzer
# records as a failing input. What decides "bounded" are the targets'
# own checks that every decoded count and length (and the client's snapshot,
# registry and record version) stay within the documented limits. Not
# `ulimit -v`: Go reserves far more address space than it uses.
FUZZTIME ?= 20s
FUZZMEM  ?= 512MiB
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; GOMEMLIMIT=$(FUZZMEM) $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done
	@# The bench report's parsers build only with the e2e and bench tags.
	@for f in $$($(GO) test -tags 'e2e bench' -list '^Fuzz' ./e2e/bench/ | grep '^Fuzz'); do \
	  echo "== e2e/bench $$f"; GOMEMLIMIT=$(FUZZMEM) $(GO) test -tags 'e2e bench' -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./e2e/bench/ || exit 1; \
	done

clean:
	rm -rf $(BIN) dist e2e/artifacts

# .deb and .rpm with nfpm (a well-kept Go packager, fetched through the module proxy).
NFPM    ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.44.0
ARCH    ?= $(shell $(GO) env GOARCH)
PKGVER  ?= 0.1.0

.PHONY: package
package: build
	rm -rf dist/completion dist/man
	mkdir -p dist/completion dist/man
	$(BIN)/meshctl completion bash > dist/completion/meshctl.bash
	$(BIN)/meshctl completion zsh > dist/completion/_meshctl
	$(BIN)/meshctl completion fish > dist/completion/meshctl.fish
	$(BIN)/meshctl man dist/man
	$(GO) run ./packaging/mangen docs/configuration.md > dist/man/meshd.toml.5
	cp packaging/man/meshd.8 dist/man/
	gzip -9n dist/man/*
	VERSION=$(PKGVER) ARCH=$(ARCH) $(NFPM) pkg --packager deb --config packaging/nfpm.yaml --target dist/
	VERSION=$(PKGVER) ARCH=$(ARCH) $(NFPM) pkg --packager rpm --config packaging/nfpm.yaml --target dist/

# meshd vs the underlay, wireguard-go and Nebula in the lab (~6-7 min); rewrites docs/performance-lab.md.
bench:
	bash scripts/lab-deps.sh --bench
	$(GO) test -tags 'e2e bench' -run TestBench -count=1 -timeout 20m -v ./e2e/bench/
