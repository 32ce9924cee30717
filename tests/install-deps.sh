#!/usr/bin/env bash
# install-deps.sh installs what the end-to-end tests need on a Debian 12
# machine, as root. It is idempotent and fast on a rerun: each step checks
# whether its result is already there first.
#
#   apt:  make runc crun busybox-static containerd (1.6.20: the legacy daemon)
#         libseccomp-dev (for the runc builds below)
#   go:   containerd, ctr, containerd-shim-runc-v2 at $CONTAINERD_V24 and at
#         $CONTAINERD_V22 into /opt/shimtest/containerd-<version>
#         staticcheck into /opt/shimtest/tools
#         runc at $RUNC_V12 $RUNC_V13 $RUNC_V14 $RUNC_V15 (cgo, tag seccomp)
#         into /opt/shimtest/runc-<version>/runc: the runc matrix of
#         run-tests.sh (Debian's runc 1.1.5 is the one of the full lanes)
#         the test binary of containerd's integration/client package and
#         its runc-fp at $CONTAINERD_V24 into
#         /opt/shimtest/upstream-client-<version> (tests/upstream/build.sh)
#   vm:   qemu-system-x86 and systemd (apt; systemd is copied into the
#         guest, it need not run here) and the base of the cgroup v2 lane's
#         guest (tests/vm/build-guest.sh: a Debian cloud kernel from
#         apt-get download, never installed here) into
#         /opt/shimtest/guest-<key>
#
# Nothing is downloaded except through apt and the Go module proxy.
set -euo pipefail

: "${SHIMTEST_ROOT:=/opt/shimtest}"
: "${CONTAINERD_V24:=v2.4.2}"
# The newest v2.2 patch release on the module proxy when this was written
# (go list -m -versions github.com/containerd/containerd/v2).
: "${CONTAINERD_V22:=v2.2.9}"
: "${STATICCHECK_VERSION:=latest}"
# The runc matrix: the newest release (no -rc) of each minor series from
# 1.2 on that the module proxy served when this was written
# (go list -m -versions github.com/opencontainers/runc). A series whose
# go.mod needs a newer Go than the one installed is skipped with a message,
# never built with a downloaded toolchain.
: "${RUNC_V12:=v1.2.8}"
: "${RUNC_V13:=v1.3.7}"
: "${RUNC_V14:=v1.4.4}"
: "${RUNC_V15:=v1.5.3}"

log() { printf 'install-deps: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
	log "must run as root (apt-get, /opt/shimtest)"
	exit 1
fi

# A stable Go cache, so reruns and CI runs on a kept machine are fast.
if [[ -z "${GOCACHE:-}" ]]; then
	if [[ -n "${HOME:-}" && -d "${HOME}" ]]; then
		GOCACHE="$(go env GOCACHE)"
	else
		GOCACHE="${SHIMTEST_ROOT}/cache/go-build"
	fi
fi
if [[ -z "${GOMODCACHE:-}" ]]; then
	if [[ -n "${HOME:-}" && -d "${HOME}" ]]; then
		GOMODCACHE="$(go env GOMODCACHE)"
	else
		GOMODCACHE="${SHIMTEST_ROOT}/cache/mod"
	fi
fi
export GOCACHE GOMODCACHE

# --- apt ---------------------------------------------------------------------

apt_missing() {
	local pkg missing=()
	for pkg in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$pkg")
		fi
	done
	echo "${missing[@]:-}"
}

# containerd_pids prints the pids of running /usr/bin/containerd daemons.
containerd_pids() {
	local p exe
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		[[ "$exe" == /usr/bin/containerd ]] && echo "${p#/proc/}"
	done
	return 0
}

install_apt() {
	local missing
	missing=$(apt_missing make runc crun busybox-static containerd libseccomp-dev)
	if [[ -z "$missing" ]]; then
		log "apt packages present"
		return
	fi
	log "apt-get install $missing"
	if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
		apt-get update -q
	fi
	local before after p
	before=$(containerd_pids)
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; then
		# The lists may be stale (a package version gone from the mirror).
		apt-get update -q
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
	fi
	# Debian's containerd postinst starts the daemon only under systemd;
	# should any init system have started one, stop it: the tests run
	# private daemons and must not share the default socket with another.
	after=$(containerd_pids)
	for p in $after; do
		if ! grep -qx "$p" <<<"$before"; then
			log "stopping containerd daemon pid $p started by the package"
			kill "$p" 2>/dev/null || true
		fi
	done
}

# --- go install ---------------------------------------------------------------

# have_go_binary BIN MODULE VERSION succeeds when BIN was built from
# MODULE at VERSION.
have_go_binary() {
	local bin=$1 mod=$2 ver=$3
	[[ -x "$bin" ]] || return 1
	go version -m "$bin" 2>/dev/null | awk -v m="$mod" -v v="$ver" \
		'$1 == "mod" && $2 == m && $3 == v { found = 1 } END { exit !found }'
}

install_containerd() {
	local ver=$1 dir="${SHIMTEST_ROOT}/containerd-$1" cmd need=()
	for cmd in containerd ctr containerd-shim-runc-v2; do
		if ! have_go_binary "$dir/$cmd" github.com/containerd/containerd/v2 "$ver"; then
			need+=("github.com/containerd/containerd/v2/cmd/$cmd@$ver")
		fi
	done
	if [[ ${#need[@]} -eq 0 ]]; then
		log "containerd $ver present in $dir"
		return
	fi
	log "go install ${need[*]} -> $dir"
	mkdir -p "$dir"
	(cd / && GOBIN="$dir" GOFLAGS=-buildvcs=false go install "${need[@]}")
}

install_staticcheck() {
	local dir="${SHIMTEST_ROOT}/tools"
	if [[ -x "$dir/staticcheck" ]] && "$dir/staticcheck" -version >/dev/null 2>&1; then
		if [[ "$STATICCHECK_VERSION" == latest ]] || have_go_binary "$dir/staticcheck" honnef.co/go/tools "$STATICCHECK_VERSION"; then
			log "staticcheck present in $dir"
			return
		fi
	fi
	log "go install staticcheck@$STATICCHECK_VERSION -> $dir"
	mkdir -p "$dir"
	(cd / && GOBIN="$dir" GOFLAGS=-buildvcs=false go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}")
}

# have_runc BIN VERSION succeeds when BIN says it is runc VERSION (no
# leading v) and was built with seccomp (it then names its libseccomp).
have_runc() {
	local out
	[[ -x "$1" ]] || return 1
	out=$("$1" --version 2>/dev/null) || return 1
	grep -qx "runc version $2" <<<"$out" && grep -q '^libseccomp: ' <<<"$out"
}

# install_runc VERSION builds runc at VERSION into
# $SHIMTEST_ROOT/runc-VERSION/runc (the path the tests glob:
# $SHIMTEST_ROOT/runc-v*/runc), with cgo and Debian's libseccomp as runc's
# Makefile does (tag seccomp). It builds runc's main package (the module
# root) from a throwaway module that requires runc at VERSION, not with
# `go install runc@VERSION`: 1.2.8's go.mod has a replace directive (a
# go-selinux copy in internal/third_party that the module zip lacks), which
# go install refuses. Built so, 1.2.x gets go-selinux v1.12.0, the
# version its go.mod requires, without that copy's CVE-2025-52881 patch
# (SELinux labels only; this host has no SELinux); 1.3 and later use no
# replace directive and build exactly as go install would.
install_runc() {
	local ver=$1 dir="${SHIMTEST_ROOT}/runc-$1" mod=github.com/opencontainers/runc
	local json src need have ldflags=() start
	if have_runc "$dir/runc" "${ver#v}"; then
		log "runc $ver present in $dir"
		return
	fi
	json=$(cd / && GOTOOLCHAIN=local go mod download -json "$mod@$ver")
	src=$(awk -F'"' '$2 == "Dir" { print $4 }' <<<"$json")
	need=$(awk '$1 == "go" { print $2; exit }' "$src/go.mod")
	have=$(go env GOVERSION)
	have=${have#go}
	if [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -1)" != "$have" ]]; then
		log "SKIP runc $ver: its go.mod needs go $need, this is go $have"
		return
	fi
	# Before 1.3, main.version is "unknown" unless the Makefile sets it;
	# from 1.3 on it is the embedded VERSION file.
	if grep -q '^var version = "unknown"' "$src/main.go"; then
		ldflags=(-ldflags "-X main.version=${ver#v}")
	fi
	log "go build -tags seccomp $mod@$ver -> $dir/runc"
	start=$SECONDS
	mkdir -p "$dir"
	(
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		cd "$tmp"
		export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=1
		go mod init shimtest.local/runc-build >/dev/null 2>&1
		if ! out=$(go get "$mod@$ver" 2>&1); then
			printf '%s\n' "$out" >&2
			exit 1
		fi
		go build -tags seccomp "${ldflags[@]}" -o "$dir/runc.tmp" "$mod"
	)
	mv -f "$dir/runc.tmp" "$dir/runc"
	if ! have_runc "$dir/runc" "${ver#v}"; then
		log "built $dir/runc does not report runc ${ver#v} with libseccomp:"
		"$dir/runc" --version >&2 || true
		return 1
	fi
	log "runc $ver built in $((SECONDS - start)) s"
}

# The tests of containerd's own integration/client package that
# tests/upstream/run.sh runs (a few minutes to build on a cold cache).
install_upstream_client() {
	SHIMTEST_ROOT="$SHIMTEST_ROOT" CONTAINERD_VERSION="$1" \
		bash "$(dirname "${BASH_SOURCE[0]}")/upstream/build.sh"
}

# The cgroup v2 lane (tests/vm/run.sh): qemu, systemd for the guest's
# systemd boot, and the guest's base, which holds the containerd v2.4.2
# installed above (the path the tests name).
install_guest() {
	local missing
	missing=$(apt_missing qemu-system-x86 systemd)
	if [[ -n "$missing" ]]; then
		log "apt-get install $missing"
		# shellcheck disable=SC2086 # word splitting of the package list is wanted
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing; then
			apt-get update -q
			# shellcheck disable=SC2086
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
		fi
	else
		log "qemu-system-x86 and systemd present"
	fi
	SHIMTEST_ROOT="$SHIMTEST_ROOT" bash "$(dirname "${BASH_SOURCE[0]}")/vm/build-guest.sh" >/dev/null
}

if ! command -v go >/dev/null; then
	log "go is not on PATH"
	exit 1
fi

install_apt
install_containerd "$CONTAINERD_V24"
install_containerd "$CONTAINERD_V22"
install_staticcheck
for v in "$RUNC_V12" "$RUNC_V13" "$RUNC_V14" "$RUNC_V15"; do
	install_runc "$v"
done
install_upstream_client "$CONTAINERD_V24"
install_guest
log "done"
