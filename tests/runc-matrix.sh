#!/usr/bin/env bash
# runc-matrix.sh runs the runc matrix of the end-to-end tests (the lane
# run-tests.sh runs after the full lanes; tests/README.md): for each runc
# in $SHIM_TEST_RUNCS, for each runtime in $SHIM_TEST_RUNTIMES, against
# containerd 2.4.2 only, the tests whose outcome depends most on the OCI
# runtime ($MATRIX_RUN: lifecycle and exit codes, exec, hooks and the
# direct start/delete paths, pause and kill, delete, exit and event order,
# terminals, runtime wrappers), with SHIM_TEST_RUNC naming that runc: every
# container names it as BinaryName and every wrapper runtime execs it.
# Debian's runc stays the runc of the full lanes.
#
#   SHIM_TEST_RUNCS   runc binaries, space-separated; unset: every
#                     $SHIMTEST_ROOT/runc-v*/runc (install-deps.sh builds
#                     them), oldest first; set but empty: nothing runs
#   MATRIX_ENGINES    this shim's exec engines, each a lane of its own
#                     (SHIM_TEST_ENGINE); default "runc libcontainer";
#                     the runc shim runs its only one
#   MATRIX_RUN, MATRIX_SKIP, MATRIX_TIMEOUT   the tests' -test.run,
#                     -test.skip, -test.timeout
#
# It prints each lane's time and fails if any lane failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${SHIM_TEST_RUNTIMES:=io.containerd.sandbox.v2 io.containerd.runc.v2}"
: "${SHIM_TEST_STRICT:=1}"
export SHIM_TEST_STRICT
# About 30 s per runc per runtime here. TestLifecycle is cut to its 2.4.2
# subtest: the matrix runs on that daemon only.
: "${MATRIX_RUN:=^(TestLifecycle|TestExitCodes|TestSIGTERMTrap|TestExec|TestDirectStartDelete|TestKillAfterExit|TestKillDeletedByRuntime|TestKillPaused|TestTaskControl|TestExitStatusAnswerable|TestInitKilledBeforeStart|TestInitExitRefusesExecStart|TestInitExitDuringExecStart|TestSharedPidNamespaceExit|TestEventOrder|TestExecEventOrder|TestTerminal|TestTerminalExecResize|TestCtrRunTerminal|TestRuntimeOptions|TestRuntimeRunsInBundle)\$}"
: "${MATRIX_SKIP:=^TestLifecycle\$/^(2\.2|1\.6)\$}"
: "${MATRIX_TIMEOUT:=10m}"
: "${MATRIX_ENGINES:=runc libcontainer}"

step() { printf '\n==> %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
	echo "runc matrix: not root, skipped (it needs containerd, runc and overlay mounts)"
	exit 0
fi
if [[ -z "${SHIM_TEST_RUNCS+set}" ]]; then
	SHIM_TEST_RUNCS=$(find "$SHIMTEST_ROOT" -maxdepth 2 -path "$SHIMTEST_ROOT/runc-v*/runc" 2>/dev/null | sort -V | tr '\n' ' ')
	if [[ -z "$SHIM_TEST_RUNCS" ]]; then
		echo "runc matrix: no $SHIMTEST_ROOT/runc-v*/runc: run tests/install-deps.sh (SHIM_TEST_RUNCS= skips the matrix)"
		exit 1
	fi
fi
if [[ -z "${SHIM_TEST_RUNCS// /}" ]]; then
	echo "runc matrix: SHIM_TEST_RUNCS is empty, nothing to run"
	exit 0
fi

# One test binary for every lane (go test would relink and vet it each
# time); it runs in tests/, as under go test.
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
step "go test -c ./tests/"
go test -c -o "$bindir/tests.test" ./tests/

failed=() timings=()
for runc in $SHIM_TEST_RUNCS; do
	# The tests run in tests/: a relative path would name another file.
	if ! abs=$(readlink -e -- "$runc") || [[ ! -x "$abs" ]]; then
		echo "runc matrix: $runc is not an executable file"
		failed+=("$runc")
		continue
	fi
	runc=$abs
	for runtime in $SHIM_TEST_RUNTIMES; do
		engines=runc
		[[ $runtime == io.containerd.sandbox.v2 ]] && engines=$MATRIX_ENGINES
		for engine in $engines; do
			step "runc matrix: $runc, runtime $runtime, engine $engine, containerd 2.4.2"
			start=$SECONDS
			result=ok
			if ! (cd tests && SHIM_TEST_RUNC="$runc" SHIM_TEST_RUNTIME="$runtime" SHIM_TEST_CONTAINERD=2.4.2 \
				SHIM_TEST_ENGINE="$engine" \
				"$bindir/tests.test" -test.v -test.count=1 -test.timeout "$MATRIX_TIMEOUT" \
				-test.run "$MATRIX_RUN" -test.skip "$MATRIX_SKIP"); then
				failed+=("$runc/$runtime/$engine")
				result=FAIL
			fi
			timings+=("$(printf '%-4s %4d s  %s  %s  %s' "$result" $((SECONDS - start)) "$runc" "$runtime" "$engine")")
		done
	done
done

if [[ ${#timings[@]} -gt 0 ]]; then
	step "runc matrix lanes"
	printf '%s\n' "${timings[@]}"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "runc matrix FAILED for: ${failed[*]}"
	exit 1
fi
