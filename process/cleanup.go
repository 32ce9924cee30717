package process

import (
	"context"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
)

// KilledStatus is the exit status of a process killed by SIGKILL, which
// is how a container whose shim died is reported.
const KilledStatus = 128 + int(unix.SIGKILL)

// Cleanup force-deletes container id from the runtime and unmounts its
// rootfs (with whatever a shim that died mid-mount left in the bundle: an
// idmap dir, see package rootfs); a container or mount already gone is
// success. It returns the
// init pid from the bundle's pid file, or 0.
//
// containerd runs it after every shim exit, a clean one too, when the
// shim has long deleted the container: then the runtime is not run only
// to say so.
func Cleanup(ctx context.Context, runtime ociruntime.Runtime, id, bundle string) (int, error) {
	if err := runtime.Delete(ctx, id, false); err != nil {
		return 0, err
	}
	if err := rootfs.UnmountAll(filepath.Join(bundle, "rootfs")); err != nil {
		return 0, err
	}
	pid, _ := readPidFile(filepath.Join(bundle, "init.pid"))
	return pid, nil
}
