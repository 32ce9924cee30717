package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// CleanupResult is what the `delete` action reports to containerd.
type CleanupResult struct {
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
}

// Cleanup is the `delete` action, run by containerd when a container's
// shim is gone: it force-deletes the container from the runtime and
// unmounts its rootfs. Running it again finds nothing to do and succeeds.
//
// The bundle may be the runc shim's (bundle.go says when): its options
// name the runtime, and the init's exit it recorded is reported as the
// runc shim's `delete` would; otherwise the init was killed (137), now.
//
// A sandbox bundle (the Sandbox API's, with the pod's record and no
// config.json) tears the whole pod down instead (cleanupPod).
func Cleanup(ctx context.Context, namespace, id, bundle string) (CleanupResult, error) {
	if rec, ok, err := cleanupPod(bundle); err != nil {
		return CleanupResult{}, err
	} else if ok {
		if err := removeDeadSocket(bundle); err != nil {
			return CleanupResult{}, err
		}
		return CleanupResult{Pid: rec.Pid, ExitStatus: process.KilledStatus, ExitedAt: time.Now()}, nil
	}
	st, err := readBundleState(bundle)
	if err != nil {
		// Fall back to the defaults; a broken state file must not keep a
		// dead container around.
		st = bundleState{}
	}
	engine := ociruntime.New(st.Options, namespace, bundle)
	pid, err := process.Cleanup(ctx, engine, id, bundle)
	if err != nil {
		return CleanupResult{}, err
	}
	if e, ok := readExitRecord(bundle); ok {
		return CleanupResult{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.Timestamp}, nil
	}
	return CleanupResult{Pid: pid, ExitStatus: process.KilledStatus, ExitedAt: time.Now()}, nil
}

// removeDeadSocket removes the socket a killed pod shim left behind (the
// one its bundle's address file names) when nothing listens on it:
// containerd does not remove it, and nor does the runc shim's `delete`.
// It holds the socket directory's lock, as a `start` binding a new shim
// there does, so a socket that a new shim has just bound is never taken
// for the dead one's.
func removeDeadSocket(bundle string) error {
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the pod shim's address: %w", err)
	}
	path, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "unix://")
	if !ok || !filepath.IsAbs(path) {
		return nil
	}
	unlock, err := lockDir(filepath.Dir(path))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	c, err := net.Dial("unix", path)
	if err == nil {
		// A live shim: not the dead one's to remove.
		c.Close()
		return nil
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the dead pod shim's socket: %w", err)
	}
	return nil
}
