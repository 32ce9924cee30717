#!/usr/bin/env bash
# build-guest.sh builds the base of the cgroup v2 lane's qemu guest (see
# tests/README.md, "The cgroup v2 lane") and prints its directory, which
# holds:
#
#   vmlinuz      a stock Debian cloud kernel (the newest ABI that the
#                linux-image-cloud-amd64 metapackage depends on), taken
#                from its .deb with apt-get download and dpkg-deb -x: never
#                installed on this host
#   initrd.img   busybox-static and the kernel modules the guest needs
#                (virtio-pci, virtio-blk, virtio-rng, overlay), whose /init
#                mounts the ext4 root disk and switch_roots to
#                /shimtest/init on it (tests/vm/initramfs-init.sh)
#   rootfs/      the root file system's base: busybox with its applets,
#                containerd, ctr and containerd-shim-runc-v2 from
#                $CONTAINERD_DIR at the same path, Debian's runc and crun at
#                theirs, the shared libraries they need
#
# run.sh adds the per-run layer (the shim, the test binary, the guest init)
# and makes the ext4 image with mke2fs -d, without loop devices or mounts.
#
# The directory is $SHIMTEST_ROOT/guest-<key>, the key a hash of every
# input: this script, the initramfs init, the kernel package and version,
# and every binary and library copied. An existing one is reused as it is
# (its "complete" file says it was finished); a changed input builds a new
# one, and guest-* directories unused for 14 days are removed.
#
# Nothing is downloaded except the kernel package, through apt.
set -euo pipefail

: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${CONTAINERD_DIR:=${SHIMTEST_ROOT}/containerd-v2.4.2}"
# The kernel package; default: what linux-image-cloud-amd64 depends on.
: "${GUEST_KERNEL_PKG:=}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'build-guest: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get download, $SHIMTEST_ROOT)"
for cmd in apt-get apt-cache dpkg-deb gzip ldd sha256sum flock; do
	command -v "$cmd" >/dev/null || die "$cmd not found"
done
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -x depmod >/dev/null ||
	die "/bin/busybox (busybox-static, with depmod) not found: run tests/install-deps.sh"

# The programs in the guest, at the paths the tests expect: containerd
# under $SHIMTEST_ROOT as on the host (params_test.go), runc and crun on
# PATH.
programs=(
	"$CONTAINERD_DIR/containerd"
	"$CONTAINERD_DIR/ctr"
	"$CONTAINERD_DIR/containerd-shim-runc-v2"
	/usr/sbin/runc
	/usr/bin/crun
)
for p in "${programs[@]}"; do
	[[ -x "$p" ]] || die "$p not found: run tests/install-deps.sh"
done
# systemd as the init of run.sh's systemd boot, taken from this host's
# Debian package as runc is (it need not run here).
for p in /lib/systemd/systemd /bin/systemctl; do
	[[ -x "$p" ]] || die "$p not found (apt-get install systemd; run tests/install-deps.sh)"
	programs+=("$p")
done

# libs_of prints the shared libraries (and the loader) of its arguments,
# resolved, one path a line, sorted.
libs_of() {
	local p
	for p in "$@"; do
		# A static binary: ldd says so and exits 1.
		ldd "$p" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true
	done | sort -u
}

if [[ -z "$GUEST_KERNEL_PKG" ]]; then
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt-get update -q >&2
	fi
	GUEST_KERNEL_PKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }')
	[[ -n "$GUEST_KERNEL_PKG" ]] || die "apt-cache knows no linux-image-cloud-amd64 (apt-get update?)"
fi
kernel_version=$(apt-cache policy "$GUEST_KERNEL_PKG" | awk '$1 == "Candidate:" { print $2 }')
[[ -n "$kernel_version" && "$kernel_version" != "(none)" ]] || die "apt has no $GUEST_KERNEL_PKG"
kernel_release=${GUEST_KERNEL_PKG#linux-image-}

mapfile -t libs < <(libs_of "${programs[@]}")
key=$(
	{
		echo "kernel $GUEST_KERNEL_PKG $kernel_version"
		sha256sum "$here/build-guest.sh" "$here/initramfs-init.sh" /bin/busybox "${programs[@]}" "${libs[@]}"
	} | sha256sum | cut -c1-16
)
out="$SHIMTEST_ROOT/guest-$key"

mkdir -p "$SHIMTEST_ROOT"
exec 9>"$SHIMTEST_ROOT/guest.lock"
flock 9
if [[ -f "$out/complete" ]]; then
	touch "$out/complete"
	echo "$out"
	exit 0
fi

start=$SECONDS
log "building $out ($GUEST_KERNEL_PKG $kernel_version)"
tmp=$(mktemp -d "$SHIMTEST_ROOT/guest-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 0755 "$tmp"

# --- kernel --------------------------------------------------------------------

mkdir "$tmp/deb"
# apt drops privileges to _apt for the download: let it write there.
chmod 0777 "$tmp/deb"
(cd "$tmp/deb" && apt-get download -q "$GUEST_KERNEL_PKG=$kernel_version" >&2)
dpkg-deb -x "$tmp"/deb/*.deb "$tmp/kernel"
cp "$tmp/kernel/boot/vmlinuz-$kernel_release" "$tmp/vmlinuz"
moddir="$tmp/kernel/lib/modules/$kernel_release"
# The package has no modules.dep (the postinst makes it): busybox's
# depmod writes one.
/bin/busybox depmod -b "$tmp/kernel" "$kernel_release"

# modules_in_order prints the modules named and their dependencies, each
# after what it depends on, once, as paths relative to $moddir.
declare -A seen=()
modules_in_order() {
	local name path deps d
	for name in "$@"; do
		path=$(awk -F: -v n="$name" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko$/, "", f); gsub(/-/, "_", f) } f == n { print $1; exit }' "$moddir/modules.dep")
		[[ -n "$path" ]] || die "no module $name in $GUEST_KERNEL_PKG"
		[[ -z "${seen[$path]:-}" ]] || continue
		deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$moddir/modules.dep")
		# modules.dep lists a module's dependencies last-loaded first.
		for d in $(tr ' ' '\n' <<<"$deps" | tac); do
			d=${d##*/}
			modules_in_order "${d%.ko}"
		done
		seen[$path]=1
		echo "$path"
	done
}
# virtio_pci and virtio_blk for the root disk, virtio_rng so that the
# guest's entropy does not wait, overlay for containerd's snapshotter.
mapfile -t modules < <(modules_in_order virtio_pci virtio_blk virtio_rng overlay)

# --- initramfs ------------------------------------------------------------------

ird="$tmp/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
# The kernel opens it for /init's stdin, stdout and stderr.
mknod -m 0600 "$ird/dev/console" c 5 1
cp /bin/busybox "$ird/bin/busybox"
for applet in sh mount umount insmod switch_root mkdir sleep cat echo poweroff reboot; do
	ln -s busybox "$ird/bin/$applet"
done
for m in "${modules[@]}"; do
	cp "$moddir/$m" "$ird/lib/modules/"
	echo "${m##*/}" >>"$ird/modules.load"
done
install -m 0755 "$here/initramfs-init.sh" "$ird/init"
(cd "$ird" && find . | /bin/busybox cpio -o -H newc -R 0:0 2>/dev/null) | gzip -1 >"$tmp/initrd.img"

# --- root file system base -------------------------------------------------------

root="$tmp/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,run,tmp,var/tmp,root,mnt,shimtest}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
cp /bin/busybox "$root/bin/busybox"
while read -r applet; do
	[[ "$applet" == bin/busybox || "$applet" == linuxrc ]] && continue
	[[ -e "$root/$applet" || -L "$root/$applet" ]] && continue
	mkdir -p "$root/$(dirname "$applet")"
	ln -s /bin/busybox "$root/$applet"
done < <(/bin/busybox --list-full)
for p in "${programs[@]}" "${libs[@]}"; do
	mkdir -p "$root$(dirname "$p")"
	cp -L "$p" "$root$p"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
echo shimtest-guest >"$root/etc/hostname"
ln -s /proc/self/mounts "$root/etc/mtab"
# systemd makes a machine id of its own at boot (an empty file is the
# first-boot state) and starts shimtest.target (run.sh names it on the
# kernel command line): shimtest.service runs the lanes (guest-init.sh
# lanes) on the console, and powers the guest off when they are done.
: >"$root/etc/machine-id"
mkdir -p "$root/etc/systemd/system"
cat >"$root/etc/systemd/system/shimtest.target" <<'EOF'
[Unit]
Description=shimtest cgroup v2 lanes
Requires=shimtest.service
After=shimtest.service
AllowIsolate=yes
EOF
cat >"$root/etc/systemd/system/shimtest.service" <<'EOF'
[Unit]
Description=shimtest cgroup v2 lanes
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/shimtest/init lanes
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity
LimitNOFILE=1048576
TasksMax=infinity
EOF
cat >"$root/etc/os-release" <<EOF
PRETTY_NAME="shimtest cgroup v2 guest ($GUEST_KERNEL_PKG $kernel_version)"
ID=shimtest
EOF

{
	echo "kernel $GUEST_KERNEL_PKG $kernel_version"
	echo "modules ${modules[*]##*/}"
	echo "programs ${programs[*]}"
	echo "libs ${libs[*]}"
} >"$tmp/manifest"
rm -rf "$tmp/deb" "$tmp/kernel" "$ird"

touch "$tmp/complete"
mv -T "$tmp" "$out"
trap - EXIT
log "built $out in $((SECONDS - start)) s ($(du -sh "$out" | cut -f1))"

# Old bases nobody has used for 14 days.
find "$SHIMTEST_ROOT" -maxdepth 1 -name 'guest-*' ! -name "guest-$key" ! -name 'guest-build.*' -type d |
	while read -r d; do
		if [[ ! -f "$d/complete" ]] || [[ -n $(find "$d/complete" -mtime +14) ]]; then
			log "removing unused $d"
			rm -rf "$d"
		fi
	done
echo "$out"
