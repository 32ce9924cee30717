// Command containerd-shim-sandbox-v2-exec is the helper of the shim's
// libcontainer exec engine (package ociruntime/lcexec), installed beside
// the shim. `containerd-shim-sandbox-v2-exec init` is libcontainer's
// container-side init, which runs from a sealed copy of this binary; the
// nsenter import puts libcontainer's C namespace setup (cgo) in this
// binary, and so keeps it out of the daemon's.
package main

import (
	"os"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime/lcexec"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		// Does not return.
		libcontainer.Init()
	}
	os.Exit(lcexec.Main(os.Args[1:]))
}
