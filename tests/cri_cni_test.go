package tests

import (
	"os"
	"path/filepath"
)

// The suite's pods use the host network, but for the few that need a
// network namespace of their own (TestCRIPodNetwork) each CRI daemon
// has a CNI network of one stub plugin, written here: on ADD it makes,
// inside the pod's namespace, lo up (as the loopback plugin), or an eth0 (one end of a
// veth pair whose other end stays there too: nothing reaches the host)
// with cniStubIP, and answers with that address; DEL has nothing to undo
// (the namespace's removal takes both ends). No CNI plugin is installed
// on these hosts, and the pod's IP is only reported, never routed.

// cniStubIP is the address every pod network namespace gets (each its
// own: they never meet).
const cniStubIP = "10.88.0.2"

const cniStubPlugin = `#!/bin/sh
# shimtest-stub (and, under that name, loopback): see tests/cri_cni_test.go.
conf=$(cat)
ver=$(printf '%s' "$conf" | sed -n 's/.*"cniVersion" *: *"\([^"]*\)".*/\1/p')
case "$CNI_COMMAND" in
VERSION)
	echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}'
	;;
ADD)
	if [ "$CNI_IFNAME" = lo ]; then
		nsenter --net="$CNI_NETNS" ip link set lo up >&2 || exit 1
		addr=127.0.0.1/8
	else
		nsenter --net="$CNI_NETNS" sh -c '
			ip link add "$0" type veth peer name stub-peer &&
			ip addr add "$1/24" dev "$0" &&
			ip link set stub-peer up && ip link set "$0" up' "$CNI_IFNAME" ` + cniStubIP + ` >&2 || exit 1
		addr=` + cniStubIP + `/24
	fi
	printf '{"cniVersion":"%s","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"version":"4","address":"%s","interface":0}]}\n' \
		"$ver" "$CNI_IFNAME" "$CNI_NETNS" "$addr"
	;;
esac
`

const cniStubConf = `{
  "cniVersion": "0.4.0",
  "name": "shimtest",
  "plugins": [{"type": "shimtest-stub"}]
}
`

// writeCNIStub writes the stub plugin to dir/bin, also as "loopback"
// (the CRI plugin adds a loopback network of that type to every pod
// network namespace), and its network to dir/net.d, the CRI daemon's CNI
// directories.
func writeCNIStub(dir string) error {
	for _, name := range []string{"shimtest-stub", "loopback"} {
		if err := os.WriteFile(filepath.Join(dir, "bin", name), []byte(cniStubPlugin), 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "net.d", "10-shimtest.conflist"), []byte(cniStubConf), 0o644)
}
