# containerd-shim-sandbox-v2
BINARY   := containerd-shim-sandbox-v2
PREFIX   ?= /usr/local
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)

.PHONY: all build install test unit demo bench proto clean

all: build

build: bin/$(BINARY)

# The project's packages the binary is built from, as go list says: a new
# package cannot be forgotten here.
SHIM_DIRS := $(shell $(GO) list -deps -f '{{.Dir}}' ./cmd/$(BINARY) 2>/dev/null | grep '^$(CURDIR)/')

# Static and stripped: the binary's pages are what every pod's shim maps.
bin/$(BINARY): $(shell find $(SHIM_DIRS) -maxdepth 1 -name '*.go' -not -name '*_test.go') go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(BINARY)

install: bin/$(BINARY)
	install -D -m 0755 bin/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)

# Every check and test, as CI runs them (needs root for the end-to-end part).
test: bin/$(BINARY)
	bash tests/run-tests.sh

unit:
	$(GO) test -race ./cmd/... ./service/... ./sandbox/... ./process/... ./ociruntime/... ./stdio/... ./rootfs/... ./reaper/... ./cgroups/... ./internal/...

# Build the shim and run a small pod through a private containerd.
demo: bin/$(BINARY)
	bash tests/demo.sh

# Side by side with containerd-shim-runc-v2 (tests/bench; root); writes
# README.md's benchmark table from the run. Flags go through BENCH_FLAGS,
# e.g. make bench BENCH_FLAGS='-n 50 -json bench.json'.
bench: bin/$(BINARY)
	bash tests/install-deps.sh
	$(GO) run ./tests/bench -readme README.md $(BENCH_FLAGS)

# Regenerate internal/api's .pb.go from its trimmed .proto copies (needs
# protoc; builds and CI use the checked-in files).
proto:
	GO=$(GO) bash internal/api/generate.sh

clean:
	rm -rf bin
