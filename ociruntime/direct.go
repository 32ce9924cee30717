package ociruntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// execFifo is the fifo in runc's state directory that a created
// container's init blocks on, opening it for writing, until `runc start`
// opens it for reading; the init then writes one byte and execs the
// container's process, which closes its end. runc (and crun) remove it
// once read: its presence is what makes the container "created".
const execFifo = "exec.fifo"

// startCreated does what `runc start` does for a created container: it
// reads the exec fifo to its end and removes it. It declines (done false,
// nothing changed) when the runtime does not use an exec fifo or the
// container has poststart hooks (which some runc versions run at start).
//
// `runc start` also relays the container's sd_notify READY=1 when
// NOTIFY_SOCKET is in its environment; go-runc removes NOTIFY_SOCKET from
// every runc it runs (command_linux.go), as it does for the runc shim, so
// runc never does that here and the direct start skips nothing.
func (r *Runc) startCreated(ctx context.Context, id string, pidfd int) (done bool, err error) {
	dir := r.stateDir(id)
	st, err := r.state(id)
	if err != nil || !st.noHook("poststart", r.probe.hooksOmitted()) {
		return false, nil
	}
	path := filepath.Join(dir, execFifo)
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return false, nil
	}
	// Non-blocking, so the open returns at once; our reader is what lets
	// the init's blocking open for writing through.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil
	}
	defer unix.Close(fd)
	n, err := readExecFifo(ctx, fd, pidfd)
	if err != nil {
		return true, fmt.Errorf("start %q: %w", id, err)
	}
	if n == 0 {
		return true, fmt.Errorf("start %q: its process exited before it was started: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return true, fmt.Errorf("start %q: %w", id, err)
	}
	return true, nil
}

// readExecFifo reads the exec fifo until its writer, the init, has come
// and gone (POLLHUP: it has exec'd the container's process), the init has
// died, or ctx is done, and returns how many bytes it read. Poll sees no
// hangup before a writer has connected, so there is no race with the init
// opening its end.
func readExecFifo(ctx context.Context, fd, pidfd int) (int, error) {
	cancel, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return 0, err
	}
	defer unix.Close(cancel)
	stop := context.AfterFunc(ctx, func() {
		_, _ = unix.Write(cancel, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	})
	defer stop()
	var total int
	buf := make([]byte, 16)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(cancel), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return total, fmt.Errorf("poll exec fifo: %w", err)
		}
		if fds[0].Revents != 0 {
			n, err := unix.Read(fd, buf)
			switch {
			case n > 0:
				total += n
				continue
			case n == 0 && err == nil:
				return total, nil // EOF: the init has exec'd or died
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
				continue
			default:
				return total, fmt.Errorf("read exec fifo: %w", err)
			}
		}
		if fds[1].Revents != 0 {
			// The init is gone; whatever it wrote is in the fifo.
			if n, _ := unix.Read(fd, buf); n > 0 {
				total += n
			}
			return total, nil
		}
		if fds[2].Revents != 0 {
			return total, ctx.Err()
		}
	}
}

// deleteStopped does what `runc delete` does for a container whose init
// has exited: remove its cgroups and its state directory. It declines
// (done false) for anything more: poststop hooks to run, processes that
// may outlive the init (no PID namespace of its own), systemd or rootless
// cgroups, an Intel RDT group, or a container never started. What it
// could not remove is left for `runc delete`.
func (r *Runc) deleteStopped(ctx context.Context, id string) (done bool, err error) {
	if r.client.SystemdCgroup {
		return false, nil
	}
	dir := r.stateDir(id)
	st, err := r.state(id)
	if err != nil || !st.noHook("poststop", r.probe.hooksOmitted()) || !st.ownPidNamespace() || !st.plainCgroups() {
		return false, nil
	}
	if _, err := os.Lstat(filepath.Join(dir, execFifo)); err == nil {
		return false, nil
	}
	paths, ok := r.cgroupDirs(st.CgroupPaths)
	if !ok {
		return false, nil
	}
	for _, p := range paths {
		if err := removeCgroup(ctx, p); err != nil {
			// Left for runc, which also removes what the container
			// nested under its cgroup.
			return false, nil
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, nil
	}
	r.forget(id)
	return true, nil
}

// cgroupDirs returns the distinct cgroup directories of a container,
// deepest first, refusing anything outside the cgroup root.
func (r *Runc) cgroupDirs(paths map[string]string) ([]string, bool) {
	root := r.cgroupRoot
	if root == "" {
		root = cgroups.DefaultRoot
	}
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if filepath.Clean(p) != p || !strings.HasPrefix(p, root+"/") {
			return nil, false
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out, true
}

// removeCgroup removes one cgroup directory. A cgroup still counting a
// task that is being torn down is busy for a moment: retry briefly, as
// runc does, then give up.
func removeCgroup(ctx context.Context, path string) error {
	delay := time.Millisecond
	for attempt := 0; ; attempt++ {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || attempt == 4 {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}
