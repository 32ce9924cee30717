#!/usr/bin/env bash
# run.sh runs six tests of containerd's own integration/client package
# (v2.4.2, its test binary unmodified) against a private containerd 2.4.2,
# once with TEST_RUNTIME=io.containerd.sandbox.v2 (this shim) and once
# with io.containerd.runc.v2 (the reference), prints each test's result
# per runtime, and fails if any fails. As root. See tests/README.md.
#
#   SHIM_BINARY        shim under test (default bin/containerd-shim-sandbox-v2,
#                      built with `make build` when missing)
#   UPSTREAM_RUNTIMES  runtimes, in order (default both)
#   UPSTREAM_TESTS     top-level tests (default the six)
#   UPSTREAM_FLAGS     more flags for the runner (tests/upstream), e.g. -keep
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${CONTAINERD_VERSION:=v2.4.2}"
: "${SHIM_BINARY:=bin/containerd-shim-sandbox-v2}"
: "${UPSTREAM_RUNTIMES:=io.containerd.sandbox.v2 io.containerd.runc.v2}"
: "${UPSTREAM_TESTS:=TestContainerKill TestContainerWait TestKillContainerDeletedByRunc TestContainerExecLargeOutputWithTTY TestIssue9103 TestIssue10589}"
export SHIMTEST_ROOT CONTAINERD_VERSION

if [[ "$SHIM_BINARY" == bin/containerd-shim-sandbox-v2 ]]; then
	make -s build
fi
bash tests/upstream/build.sh
cached="${SHIMTEST_ROOT}/upstream-client-${CONTAINERD_VERSION}"

runner=$(mktemp -d)
trap 'rm -rf "$runner"' EXIT
go build -o "$runner/upstream" ./tests/upstream
# shellcheck disable=SC2086 # UPSTREAM_FLAGS is a list of flags
"$runner/upstream" \
	-client-test "$cached/client.test" \
	-runc-fp "$cached/runc-fp" \
	-containerd "${SHIMTEST_ROOT}/containerd-${CONTAINERD_VERSION}" \
	-shim "$(realpath "$SHIM_BINARY")" \
	-runtimes "$UPSTREAM_RUNTIMES" \
	-tests "$UPSTREAM_TESTS" \
	${UPSTREAM_FLAGS:-}
