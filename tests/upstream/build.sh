#!/usr/bin/env bash
# build.sh builds, once, what tests/upstream runs from containerd's own
# module, unmodified: the test binary of integration/client (go test -c)
# and the failpoint runtime integration/failpoint/cmd/runc-fp, into
# $SHIMTEST_ROOT/upstream-client-$CONTAINERD_VERSION. A throwaway module
# there requires containerd at that version, so this repo's go.mod never
# takes in containerd's test dependencies. Idempotent: a binary built from
# that version is kept (tests/install-deps.sh runs this; so does run.sh).
set -euo pipefail

: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${CONTAINERD_VERSION:=v2.4.2}"
dir="${SHIMTEST_ROOT}/upstream-client-${CONTAINERD_VERSION}"
mod=github.com/containerd/containerd/v2

log() { printf 'upstream build: %s\n' "$*" >&2; }

# built BIN: BIN exists and was built from $mod at $CONTAINERD_VERSION.
built() {
	[[ -x "$1" ]] && go version -m "$1" 2>/dev/null |
		awk -v m="$mod" -v v="$CONTAINERD_VERSION" '($1 == "mod" || $1 == "dep") && $2 == m && $3 == v { found = 1 } END { exit !found }'
}

if built "$dir/client.test" && built "$dir/runc-fp"; then
	log "present in $dir"
	exit 0
fi
mkdir -p "$dir/mod"
cd "$dir/mod"
if [[ ! -f go.mod ]] || ! grep -q "$mod $CONTAINERD_VERSION" go.mod; then
	rm -f go.mod go.sum
	go mod init shimtest.local/upstream-client >/dev/null 2>&1
	go mod edit -require="$mod@$CONTAINERD_VERSION"
fi
export GOFLAGS="-mod=mod -buildvcs=false"
# Each binary is built beside its final name and renamed into place, so a
# concurrent run never sees half a file.
if ! built "$dir/client.test"; then
	log "go test -c $mod/integration/client@$CONTAINERD_VERSION -> $dir/client.test"
	go test -c -o "$dir/client.test.tmp" "$mod/integration/client"
	mv -f "$dir/client.test.tmp" "$dir/client.test"
fi
if ! built "$dir/runc-fp"; then
	log "go build $mod/integration/failpoint/cmd/runc-fp@$CONTAINERD_VERSION -> $dir/runc-fp"
	go build -o "$dir/runc-fp.tmp" "$mod/integration/failpoint/cmd/runc-fp"
	mv -f "$dir/runc-fp.tmp" "$dir/runc-fp"
fi
