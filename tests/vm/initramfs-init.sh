#!/bin/sh
# The /init of the cgroup v2 guest's initramfs (build-guest.sh puts it
# there with busybox and the modules of /modules.load): load the modules,
# mount the root disk (/dev/vda, ext4, made by run.sh) and switch_root to
# the run's init on it, /shimtest/init (tests/vm/guest-init.sh). Any
# failure says why on the console and powers off, so that the host sees
# it at once instead of at its timeout.

fail() {
	echo "@@SHIMTEST GUEST FAILED initramfs: $*"
	poweroff -f
	reboot -f
	sleep 1000
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
while read -r m; do
	insmod "/lib/modules/$m" || fail "insmod $m"
done </modules.load

# The disk's node appears once virtio-blk has probed it.
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ $i -le 100 ] || fail "no /dev/vda after 10 s"
	sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "mount /dev/vda"
[ -x /newroot/shimtest/init ] || fail "no /shimtest/init on the root disk"

umount /dev /sys /proc
exec switch_root /newroot /shimtest/init
fail "switch_root"
