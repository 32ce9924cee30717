#!/bin/sh
# guest-init.sh is PID 1 of the cgroup v2 guest (run.sh installs it as
# /shimtest/init; the initramfs switch_roots to it). In the systemd boot
# it execs systemd, and shimtest.service runs it again as "init lanes".
# In the plain boot it sets up a pure cgroup v2 host itself:
# /sys/fs/cgroup is cgroup2 (the kernel runs with cgroup_no_v1=all) with
# every controller enabled for the root's children, tmpfs /run and /tmp,
# devtmpfs, loopback up and no other network. Then it runs the end-to-end test binary once per runtime of
# /shimtest/job-<boot>.env, in /shimtest/tests as go test would, and writes
# everything to the console (the host's run.sh reads it) between markers:
#
#   @@SHIMTEST LANE BEGIN <runtime>
#   ... the test binary's -test.v output ...
#   @@SHIMTEST LANE END <runtime> rc=<exit code> seconds=<n>
#   @@SHIMTEST GUEST DONE
#
# and powers off. A lane that failed is followed by the kernel log's tail.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

fail() {
	echo "@@SHIMTEST GUEST FAILED init: $*"
	halt_guest
}

halt_guest() {
	sync
	poweroff -f
	reboot -f
	echo o >/proc/sysrq-trigger
	sleep 1000
}

# boot prints the boot's name (run.sh's shimtest.boot=, on the kernel's
# command line): plain or systemd.
boot() {
	sed -n 's/.*shimtest\.boot=\([a-z]*\).*/\1/p' /proc/cmdline
}

# setup makes the plain boot's host, as described above.
setup() {
	mount -t sysfs sysfs /sys || fail "mount /sys"
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2 on /sys/fs/cgroup"
	mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
	mkdir -p /dev/pts /dev/shm /dev/mqueue
	mount -t devpts -o ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts || fail "mount /dev/pts"
	mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount /dev/shm"
	mount -t mqueue mqueue /dev/mqueue || fail "mount /dev/mqueue"
	ln -sf /proc/self/fd /dev/fd
	ln -sf /proc/self/fd/0 /dev/stdin
	ln -sf /proc/self/fd/1 /dev/stdout
	ln -sf /proc/self/fd/2 /dev/stderr
	mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"
	mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
	hostname shimtest-guest
	ip link set lo up || fail "loopback"
	# runc enables the controllers it needs down a container's path, but
	# from the root's subtree_control only what is enabled there.
	for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || fail "enable controller $c"
	done
}

# lanes runs the boot's lanes (/shimtest/job-<boot>.env) and powers off.
lanes() {
	b=$(boot)
	[ -r "/shimtest/job-$b.env" ] || fail "no /shimtest/job-$b.env"
	. "/shimtest/job-$b.env"
	echo "@@SHIMTEST GUEST UP boot $b, init $(cat /proc/1/comm), kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo), /sys/fs/cgroup $([ "$(stat -f -c %t /sys/fs/cgroup)" = 63677270 ] && echo cgroup2 || echo NOT-cgroup2), root controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
	cd /shimtest/tests || fail "cd /shimtest/tests"
	if [ -n "${VM_CMD:-}" ]; then
		# A command instead of the tests (run.sh's VM_CMD), as one lane.
		echo "@@SHIMTEST LANE BEGIN cmd"
		start=$(cut -d. -f1 /proc/uptime)
		sh -c "$VM_CMD" 2>&1
		echo "@@SHIMTEST LANE END cmd rc=$? seconds=$(($(cut -d. -f1 /proc/uptime) - start))"
		VM_RUNTIMES=
	fi
	for runtime in $VM_RUNTIMES; do
		echo "@@SHIMTEST LANE BEGIN $runtime"
		start=$(cut -d. -f1 /proc/uptime)
		dmesg -c >/dev/null
		SHIM_TEST_RUNTIME=$runtime /shimtest/tests.test -test.v -test.count=1 \
			-test.timeout "$VM_TEST_TIMEOUT" -test.run "$VM_RUN" -test.skip "$VM_SKIP" 2>&1
		rc=$?
		if [ $rc -ne 0 ]; then
			echo "--- kernel log of the lane (last 100 lines) ---"
			dmesg | tail -n 100
			echo "--- end of kernel log ---"
		fi
		echo "@@SHIMTEST LANE END $runtime rc=$rc seconds=$(($(cut -d. -f1 /proc/uptime) - start))"
	done
	echo "@@SHIMTEST GUEST DONE"
	halt_guest
}

if [ "${1:-}" = lanes ]; then
	# The systemd boot: shimtest.service runs this, with what systemd
	# mounted; /tmp is not among it.
	grep -q ' /tmp ' /proc/mounts || mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
	lanes
fi

mount -t proc proc /proc || fail "mount /proc"
case $(boot) in
systemd)
	# systemd mounts the rest, brings up loopback and starts
	# shimtest.target (build-guest.sh), whose service runs "init lanes".
	exec /lib/systemd/systemd
	;;
plain | "") ;;
*) fail "unknown shimtest.boot=$(boot)" ;;
esac
setup
lanes
