# containerd-shim-sandbox-v2
BINARY   := containerd-shim-sandbox-v2
PREFIX   ?= /usr/local
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)
# The libcontainer exec engine's helper (ociruntime/engine.go), installed
# beside the shim.
HELPER   := containerd-shim-sandbox-v2-exec

.PHONY: all build helper install test unit demo bench proto clean

all: build

# The shim alone: pure Go, no C toolchain needed.
build: bin/$(BINARY)

# The exec helper, for engine = "libcontainer" only (needs gcc and
# libseccomp-dev).
helper: bin/$(HELPER)

# The project's packages the binary is built from, as go list says: a new
# package cannot be forgotten here.
SHIM_DIRS := $(shell $(GO) list -deps -f '{{.Dir}}' ./cmd/$(BINARY) 2>/dev/null | grep '^$(CURDIR)/')

# Static and stripped: the binary's pages are what every pod's shim maps.
bin/$(BINARY): $(shell find $(SHIM_DIRS) -maxdepth 1 -name '*.go' -not -name '*_test.go') go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$(BINARY)

# The exec helper is the one cgo binary: libcontainer's nsenter (C) and
# libseccomp, linked statically, so that its init (a sealed copy of it,
# run for every exec) loads no shared library. Needs libseccomp-dev.
bin/$(HELPER): $(shell find ./cmd/$(HELPER) ./ociruntime/lcexec -maxdepth 1 -name '*.go' -not -name '*_test.go') go.mod go.sum
	CGO_ENABLED=1 $(GO) build -trimpath -tags 'seccomp netgo osusergo' \
		-ldflags '-s -w -linkmode external -extldflags -static' -o $@ ./cmd/$(HELPER)

install: bin/$(BINARY) bin/$(HELPER)
	install -D -m 0755 bin/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)
	install -D -m 0755 bin/$(HELPER) $(DESTDIR)$(PREFIX)/bin/$(HELPER)

# Every check and test, as CI runs them (needs root for the end-to-end part).
test: bin/$(BINARY) bin/$(HELPER)
	bash tests/run-tests.sh

unit:
	$(GO) test -race ./cmd/... ./service/... ./sandbox/... ./process/... ./ociruntime/... ./stdio/... ./rootfs/... ./reaper/... ./cgroups/... ./internal/...

# Build the shim and run a small pod through a private containerd.
demo: bin/$(BINARY)
	bash tests/demo.sh

# Side by side with containerd-shim-runc-v2 (tests/bench; root); writes
# README.md's benchmark table from the run. Flags go through BENCH_FLAGS,
# e.g. make bench BENCH_FLAGS='-n 50 -json bench.json'.
bench: bin/$(BINARY) bin/$(HELPER)
	bash tests/install-deps.sh
	$(GO) run ./tests/bench -readme README.md $(BENCH_FLAGS)

# Regenerate internal/api's .pb.go from its trimmed .proto copies (needs
# protoc; builds and CI use the checked-in files).
proto:
	GO=$(GO) bash internal/api/generate.sh

clean:
	rm -rf bin
