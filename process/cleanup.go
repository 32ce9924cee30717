package process

import (
	"context"
	"path/filepath"
	"strconv"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// KilledStatus is the exit status of a process killed by SIGKILL, which
// is how a container whose shim died is reported.
const KilledStatus = 128 + int(unix.SIGKILL)

// Cleanup force-deletes container id from the runtime and unmounts its
// rootfs; a container or mount already gone is success. It returns the
// init pid from the bundle's pid file, or 0.
//
// containerd runs it after every shim exit, a clean one too, when the
// shim has long deleted the container: then the runtime is not run only
// to say so.
func Cleanup(ctx context.Context, engine Engine, id, bundle string) (int, error) {
	if d, ok := engine.(DirectEngine); !ok || !d.Forgotten(id) {
		if err := engine.Delete(ctx, id, &runc.DeleteOpts{Force: true}); err != nil && !isRuntimeNotFound(err) {
			return 0, runtimeError(err, filepath.Join(bundle, "log.json"), "delete "+strconv.Quote(id))
		}
	}
	if err := unmountAll(filepath.Join(bundle, "rootfs")); err != nil {
		return 0, err
	}
	pid, _ := readPidFile(filepath.Join(bundle, "init.pid"))
	return pid, nil
}
