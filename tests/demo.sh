#!/usr/bin/env bash
# demo.sh (`make demo`) shows the shim at work: it builds the shim, starts a
# private containerd v2.4.2 in a temp dir with the shim on its PATH, imports
# a busybox image built locally (no registry), runs a pod of three
# containers that share io.kubernetes.cri.sandbox-id through ctr, prints
# their output, shows that one shim process serves all three, then stops
# everything and removes the temp dir. Needs root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${SHIMTEST_ROOT:=/opt/shimtest}"
CTRD_DIR="${SHIMTEST_ROOT}/containerd-v2.4.2"
RUNTIME=io.containerd.sandbox.v2
SHIM=containerd-shim-sandbox-v2
IMAGE=docker.io/library/busybox:shimtest
POD=demo-pod
NS=demo

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# alive PID: the process exists and is not a zombie (kill -0 succeeds on
# zombies, and an exited shim may wait a while for init to reap it).
alive() { [[ -r /proc/$1/stat ]] && [[ $(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1) != Z ]]; }

if [[ $(id -u) -ne 0 ]]; then
	echo "demo: needs root (containerd, runc, overlay mounts)" >&2
	exit 1
fi
if [[ ! -x "$CTRD_DIR/containerd" ]] || ! command -v runc >/dev/null || [[ ! -x /bin/busybox ]]; then
	say "installing dependencies"
	bash tests/install-deps.sh
fi
say "building the shim"
make -s build
test -x "bin/$SHIM"

DIR=$(mktemp -d /tmp/shimdemo-XXXXXX)
CTRD_PID=""
SOCK="$DIR/containerd.sock"
# ctr against the private daemon; its notice that cgroup v1 is deprecated
# is dropped from stderr.
ctr() { "$CTRD_DIR/ctr" --address "$SOCK" --namespace "$NS" "$@" 2> >(grep -v 'DEPRECATION' >&2); }
RUN_PIDS=()

cleanup() {
	local rc=$?
	set +e
	if [[ -n "$CTRD_PID" ]] && kill -0 "$CTRD_PID" 2>/dev/null; then
		for c in $(ctr containers ls -q 2>/dev/null); do
			ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1
			ctr tasks delete -f "$c" >/dev/null 2>&1
			ctr containers delete "$c" >/dev/null 2>&1
		done
		for p in "${RUN_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
		kill "$CTRD_PID"
		wait "$CTRD_PID" 2>/dev/null
	fi
	# Detach whatever is still mounted below the demo dir, deepest first.
	awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r mp; do umount -l "$mp"; done
	rmdir /sys/fs/cgroup/*/"$NS" 2>/dev/null
	rmdir "/run/containerd/runc/$NS" 2>/dev/null
	rm -rf "$DIR"
	if [[ $rc -ne 0 ]]; then
		echo "demo failed (exit $rc)" >&2
	fi
	exit $rc
}
trap cleanup EXIT

say "starting a private containerd $("$CTRD_DIR/containerd" --version | awk '{print $3}') in $DIR"
mkdir -p "$DIR/bin"
cp "bin/$SHIM" "$DIR/bin/$SHIM"
cat >"$DIR/config.toml" <<EOF
version = 3
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DIR/opt"
EOF
PATH="$DIR/bin:$PATH" "$CTRD_DIR/containerd" --config "$DIR/config.toml" >"$DIR/containerd.log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 100); do
	ctr version >/dev/null 2>&1 && break
	kill -0 "$CTRD_PID" 2>/dev/null || { cat "$DIR/containerd.log"; exit 1; }
	sleep 0.1
done
ctr version >/dev/null

say "building and importing the busybox image (no registry)"
go run ./tests/cmd/mkimage -rootfs "$DIR/rootfs" -archive "$DIR/busybox.tar" -ref "$IMAGE"
ctr images import "$DIR/busybox.tar" >/dev/null
ctr images ls -q

say "running pod $POD: three containers with $RUNTIME, annotation io.kubernetes.cri.sandbox-id=$POD"
# Each `ctr run` stays attached in the background, streaming its
# container's stdout (through the shim and containerd's fifos) to a file.
for c in web worker sidecar; do
	ctr run --rm --runtime "$RUNTIME" --annotation "io.kubernetes.cri.sandbox-id=$POD" "$IMAGE" "$c" \
		sh -c "echo \"$c: hello from pid \$\$, uid \$(id -u)\"; exec sleep 3600" >"$DIR/$c.out" &
	RUN_PIDS+=($!)
	for _ in $(seq 100); do [[ -s "$DIR/$c.out" ]] && break; sleep 0.1; done
	printf '%-8s says: %s\n' "$c" "$(cat "$DIR/$c.out")"
done

say "one shim process serves the pod"
printf '%-8s %-9s %-9s %s\n' CONTAINER INIT-PID SHIM-PID SHIM
shims=()
for c in web worker sidecar; do
	pid=$(ctr tasks ls | awk -v c="$c" '$1 == c { print $2 }')
	shim=$(awk '{ sub(/^.*\) /, ""); print $2 }' "/proc/$pid/stat")
	shims+=("$shim")
	printf '%-8s %-9s %-9s %s\n' "$c" "$pid" "$shim" "$(tr '\0' ' ' <"/proc/$shim/cmdline" | cut -c1-60)"
done
if [[ "${shims[0]}" == "${shims[1]}" && "${shims[1]}" == "${shims[2]}" ]]; then
	echo "=> all three containers run under shim pid ${shims[0]}"
else
	echo "=> UNEXPECTED: the containers run under different shims: ${shims[*]}" >&2
	exit 1
fi

say "a fourth, short-lived container in the same pod (foreground, output streamed)"
ctr run --rm --runtime "$RUNTIME" --annotation "io.kubernetes.cri.sandbox-id=$POD" "$IMAGE" once \
	sh -c 'echo "once: the time in the pod is $(date -u +%H:%M:%S)"; exit 0'

say "stopping the pod"
i=0
for c in web worker sidecar; do
	ctr tasks kill -s SIGKILL "$c"
	# The attached `ctr run --rm` sees the exit, deletes task and container.
	rc=0
	wait "${RUN_PIDS[$i]}" || rc=$?
	echo "$c: exit status $rc (137 = 128 + SIGKILL); task and container removed"
	i=$((i + 1))
done
RUN_PIDS=()
for _ in $(seq 100); do alive "${shims[0]}" || break; sleep 0.1; done
if alive "${shims[0]}"; then
	echo "=> UNEXPECTED: shim ${shims[0]} still running after the pod's last task was deleted" >&2
	exit 1
fi
echo "=> shim ${shims[0]} exited with the pod's last task"
