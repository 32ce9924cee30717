#!/usr/bin/env bash
# run.sh runs end-to-end tests on a pure cgroup v2 host: a qemu guest
# (software emulation; this host is cgroup v1/hybrid and has no KVM) that
# boots a stock Debian cloud kernel with cgroup_no_v1=all and runs
# containerd 2.4.2, runc and the shim (tests/README.md, "The cgroup v2
# lane"). It streams the guest's test output here and fails if a lane
# failed in the guest, if the guest's markers are missing (it crashed or
# did not boot) or if the guest ran out of time.
#
# It boots the guest twice from one image (each boot on a copy-on-write
# snapshot of it): "plain", busybox's shell as init (tests/vm/guest-init.sh)
# and the cgroupfs driver, for the set below; then "systemd", systemd as
# init and SystemdCgroup = true, for cgroupv2_systemd_test.go. Each boot
# runs one lane per runtime.
#
#   VM_BOOTS         the boots (default: plain systemd)
#   VM_RUNTIMES      runtimes, one lane each per boot (default: this
#                    shim, then the runc shim)
#   VM_RUN, VM_SKIP  the plain boot's -test.run and -test.skip (default:
#                    the set below)
#   VM_SYSTEMD_RUN   the systemd boot's -test.run
#   VM_TIMEOUT       seconds each boot may run (default 900)
#   VM_TEST_TIMEOUT  each lane's -test.timeout (default 10m)
#   VM_MEMORY        guest memory in MiB (default 2048)
#   VM_KEEP=1        keep the work directory (image, console log)
#   VM_BUILD_ONLY=1  make the image and stop (kept; nothing boots)
#   SHIM_TEST_SHIM   the shim to test (default: built here, as make does)
#   VM_CMD           a shell command the guest runs instead of the tests
#                    (as a lane named cmd), in /shimtest/tests with the
#                    tests' environment: to look around in the guest
#                    (with VM_BOOTS=systemd, under systemd)
#
# Examples:
#   bash tests/vm/run.sh
#   VM_BOOTS=plain VM_RUNTIMES=io.containerd.sandbox.v2 VM_RUN='^TestCgroupV2OOM$' bash tests/vm/run.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${VM_RUNTIMES:=io.containerd.sandbox.v2 io.containerd.runc.v2}"
# Lifecycle and exit codes, exec, pause/resume/kill, stats, update, the
# leak test, crun, CRI stats and OOMKilled, the shim-held pod's
# (sandboxer = "shim") stats and update, stop and remove, and namespaces
# (they skip for the runc shim, which cannot hold a pod), and the v2
# tests (cgroupv2_test.go). TestLifecycle is
# cut to its 2.4.2 subtest: the guest has no other daemon.
: "${VM_RUN:=^(TestCgroupV2.*|TestLifecycle|TestExitCodes|TestSIGTERMTrap|TestExec|TestExitStatusAnswerable|TestInitKilledBeforeStart|TestInitExitRefusesExecStart|TestInitExitDuringExecStart|TestSharedPidNamespaceExit|TestEventOrder|TestExecEventOrder|TestTaskControl|TestKillAfterExit|TestKillDeletedByRuntime|TestKillPaused|TestDirectStartDelete|TestPodShimNoLeaks|TestCrunLifecycle|TestRuntimeOptions|TestCRIContainerStats|TestCRIOOMKilled|TestCRISandboxerStatsUpdate|TestCRISandboxerStopRemove|TestCRISandboxerNamespaces)\$}"
: "${VM_SKIP:=^TestLifecycle\$/^(2\.2|1\.6)\$}"
: "${VM_SYSTEMD_RUN:=^TestCgroupV2Systemd\$}"
: "${VM_BOOTS:=plain systemd}"
: "${VM_TIMEOUT:=900}"
: "${VM_TEST_TIMEOUT:=10m}"
: "${VM_MEMORY:=2048}"
: "${VM_KEEP:=}"
: "${VM_CMD:=}"
if [[ -n "$VM_CMD" ]]; then
	VM_RUNTIMES=cmd
fi
: "${VM_BUILD_ONLY:=}"
[[ -z "$VM_BUILD_ONLY" ]] || VM_KEEP=1

log() { printf 'vm: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it builds the guest under $SHIMTEST_ROOT)"
command -v qemu-system-x86_64 >/dev/null ||
	die "qemu-system-x86_64 not found: run tests/install-deps.sh (it installs qemu-system-x86)"
command -v mke2fs >/dev/null || die "mke2fs not found (e2fsprogs)"

start=$SECONDS
base=$(SHIMTEST_ROOT="$SHIMTEST_ROOT" bash tests/vm/build-guest.sh)
[[ -f "$base/complete" ]] || die "build-guest.sh printed $base, which is not a finished guest"
log "guest base $base ($(head -1 "$base/manifest"))"

work=$(mktemp -d /var/tmp/shimtest-vm.XXXXXX)
cleanup() {
	if [[ -n "$VM_KEEP" ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# --- the run's layer: shim, test binary, guest init, job ------------------------

layer="$work/layer/shimtest"
mkdir -p "$layer/bin" "$layer/tests"
shim="${SHIM_TEST_SHIM:-}"
if [[ -z "$shim" ]]; then
	log "go build the shim"
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$layer/bin/containerd-shim-sandbox-v2" ./cmd/containerd-shim-sandbox-v2
else
	cp "$shim" "$layer/bin/containerd-shim-sandbox-v2"
fi
# The CRI suite's pause image is built from it; the guest has no Go.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$layer/bin/pause" ./tests/cmd/pause
# Static (no cgo), so it needs no library in the guest.
log "go test -c ./tests/"
CGO_ENABLED=0 go test -c -o "$layer/tests.test" ./tests/
cp tests/known-differences.toml "$layer/tests/"
cp -r tests/cri "$layer/tests/"
install -m 0755 tests/vm/guest-init.sh "$layer/init"
# job_env BOOT writes the environment of a boot's lanes.
job_env() {
	local run=$VM_RUN skip=$VM_SKIP
	if [[ $1 == systemd ]]; then
		run=$VM_SYSTEMD_RUN skip=
	fi
	printf 'VM_RUNTIMES=%q\n' "$VM_RUNTIMES"
	printf 'VM_RUN=%q\n' "$run"
	printf 'VM_SKIP=%q\n' "$skip"
	printf 'VM_TEST_TIMEOUT=%q\n' "$VM_TEST_TIMEOUT"
	printf 'VM_CMD=%q\n' "$VM_CMD"
	printf 'export SHIMTEST_ROOT=%q\n' "$SHIMTEST_ROOT"
	echo 'export SHIM_TEST_CONTAINERD=2.4.2 SHIM_TEST_STRICT=1 SHIM_TEST_CGROUPV2=1 SHIM_TEST_LEAK_CYCLES=10'
	echo 'export SHIM_TEST_SHIM=/shimtest/bin/containerd-shim-sandbox-v2 SHIM_TEST_PAUSE=/shimtest/bin/pause'
	[[ $1 != systemd ]] || echo 'export SHIM_TEST_SYSTEMD=1'
	# The daemons' roots on the ext4 disk, not in memory: a container's
	# writes then show in its io.stat.
	echo 'export TMPDIR=/var/tmp'
}
for b in $VM_BOOTS; do
	case $b in
	plain | systemd) job_env "$b" >"$layer/job-$b.env" ;;
	*) die "VM_BOOTS: unknown boot $b (plain, systemd)" ;;
	esac
done

# --- the image: base + layer, filled by mke2fs -d ----------------------------------

# Hard links: the base is only read, and only new files are added.
cp -al "$base/rootfs" "$work/rootfs"
cp -a "$work/layer/shimtest/." "$work/rootfs/shimtest/"
used=$(du -sm "$work/rootfs" | cut -f1)
# Room for the daemons' roots, snapshots and logs (sparse on this host).
size=$((used + 3072))
truncate -s "${size}M" "$work/root.img"
mke2fs -q -t ext4 -L shimtest -m 0 -E root_owner=0:0 -d "$work/rootfs" "$work/root.img"
rm -rf "$work/rootfs" "$work/layer"
log "image ${size} MiB (${used} MiB used), ready after $((SECONDS - start)) s"
if [[ -n "$VM_BUILD_ONLY" ]]; then
	log "VM_BUILD_ONLY: $work/root.img, kernel $base/vmlinuz, initrd $base/initrd.img"
	exit 0
fi

# --- boots ---------------------------------------------------------------------------

failed=() summary=()
for b in $VM_BOOTS; do
	console="$work/console-$b.log"
	append="console=ttyS0 cgroup_no_v1=all loglevel=1 panic=-1 rw shimtest.boot=$b"
	if [[ $b == systemd ]]; then
		[[ -x "$base/rootfs/lib/systemd/systemd" ]] ||
			die "the guest base has no systemd (systemd is not installed here): run tests/install-deps.sh"
		append+=" systemd.unit=shimtest.target systemd.show_status=error systemd.log_target=kmsg"
	fi
	printf '\n==> cgroup v2 guest, boot %s\n' "$b"
	boot=$SECONDS
	set +e
	timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 \
		-accel tcg,thread=multi -smp 2 -m "$VM_MEMORY" \
		-nic none -no-reboot -display none -monitor none -serial stdio \
		-drive "file=$work/root.img,format=raw,if=virtio,snapshot=on" \
		-device virtio-rng-pci \
		-kernel "$base/vmlinuz" -initrd "$base/initrd.img" -append "$append" \
		</dev/null 2>&1 | sed -u 's/\r$//' | tee "$console"
	qemu_rc=${PIPESTATUS[0]}
	set -e
	log "boot $b ran $((SECONDS - boot)) s (qemu exit $qemu_rc); $((SECONDS - start)) s so far"

	if [[ $qemu_rc -eq 124 || $qemu_rc -eq 137 ]]; then
		failed+=("$b: guest timed out after ${VM_TIMEOUT} s")
	elif [[ $qemu_rc -ne 0 ]]; then
		failed+=("$b: qemu exited $qemu_rc")
	fi
	if grep -q '^@@SHIMTEST GUEST FAILED' "$console"; then
		failed+=("$b: $(grep -m1 '^@@SHIMTEST GUEST FAILED' "$console")")
	fi
	if ! grep -q '^@@SHIMTEST GUEST UP' "$console"; then
		failed+=("$b: the guest never came up")
	fi
	for runtime in $VM_RUNTIMES; do
		end=$(grep -m1 "^@@SHIMTEST LANE END $runtime " "$console" || true)
		if [[ -z "$end" ]]; then
			failed+=("$b/$runtime: no end marker (the guest died or timed out in the lane)")
			summary+=("$(printf '%-5s %6s  %-8s %s' MISS - "$b" "$runtime")")
			continue
		fi
		rc=$(sed -n 's/.* rc=\([0-9]*\).*/\1/p' <<<"$end")
		secs=$(sed -n 's/.* seconds=\([0-9]*\).*/\1/p' <<<"$end")
		if awk -v r="$runtime" '$0 == "@@SHIMTEST LANE BEGIN " r { p = 1; next } index($0, "@@SHIMTEST LANE END " r " ") == 1 { p = 0 } p' "$console" |
			grep -q '^testing: warning: no tests to run'; then
			failed+=("$b/$runtime: no test matched -test.run (VM_RUN or VM_SYSTEMD_RUN)")
			summary+=("$(printf '%-5s %4s s  %-8s %s' NONE "$secs" "$b" "$runtime")")
		elif [[ "$rc" != 0 ]]; then
			failed+=("$b/$runtime: tests failed in the guest (rc=$rc)")
			summary+=("$(printf '%-5s %4s s  %-8s %s' FAIL "$secs" "$b" "$runtime")")
		else
			summary+=("$(printf '%-5s %4s s  %-8s %s' ok "$secs" "$b" "$runtime")")
		fi
	done
done

printf '\ncgroup v2 lane (qemu guest), %d s in all:\n' $((SECONDS - start))
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
	printf 'cgroup v2 lane FAILED:\n'
	printf '  %s\n' "${failed[@]}"
	[[ -n "$VM_KEEP" ]] || log "rerun with VM_KEEP=1 to keep the image and console logs"
	exit 1
fi
