package rootfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// openUserns returns an fd of a new user namespace carrying m's maps, for
// mount_setattr(MOUNT_ATTR_IDMAP). A multi-threaded process cannot
// unshare(CLONE_NEWUSER), so a child is cloned into one: Go writes its
// uid_map and gid_map before letting it exec, PTRACE_TRACEME makes it
// stop at that exec before running any of the binary, and the fd opened
// on /proc/<pid>/ns/user keeps the namespace alive after the child is
// killed. This is containerd's way too (core/mount GetUsernsFD).
//
// The child is started and waited through mon, which in the shim is the
// reaper: a child started behind its back would have its exit stolen by
// the reaper's wait4(-1) (containerd #9218). The binary is /proc/self/exe,
// which must be executable by others (the child's uid is the mapped one):
// it never runs past the ptrace stop.
func openUserns(mon runc.ProcessMonitor, m *idMapping) (_ *os.File, retErr error) {
	// Pdeathsig fires when the creating thread exits, not the process;
	// keep the thread until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	pidfd := -1
	cmd := &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{"containerd-shim-sandbox-v2 [userns]"},
		Env:  []string{},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER,
			UidMappings: m.uids,
			GidMappings: m.gids,
			Ptrace:      true,
			Pdeathsig:   unix.SIGKILL,
			PidFD:       &pidfd,
		},
	}
	ch, err := mon.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start user namespace holder for %s: %w", m, err)
	}
	if pidfd < 0 {
		_ = cmd.Process.Kill()
		_, _ = mon.Wait(cmd, ch)
		return nil, fmt.Errorf("start user namespace holder: no pidfd to pin it (Linux 5.3+): %w", errdefs.ErrNotImplemented)
	}
	defer func() {
		if err := stopHolder(mon, cmd, ch, pidfd); err != nil && retErr == nil {
			retErr = err
		}
	}()

	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("open user namespace of holder %d: %w", cmd.Process.Pid, err)
	}
	// The pid could have been reaped and reused before the open: it was
	// not if the pidfd, pinned at clone, still reaches the child now.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("user namespace holder %d gone before its namespace was pinned: %w", cmd.Process.Pid, err)
	}
	return f, nil
}

// stopHolder kills the ptrace-stopped holder and waits for it through mon.
//
// go-runc's default monitor (what runs when the reaper is not installed,
// as in unit tests) waits with exec.Cmd.Wait, and waitid reports a ptrace
// stop to the tracer whatever the flags: its Wait may return on the stop
// and leave the killed child unreaped. So the pidfd is waited on too;
// when the monitor did reap the child (the reaper always does: it skips
// stops) that wait is ECHILD at once, and since a pidfd names one process
// it can never reap another child.
func stopHolder(mon runc.ProcessMonitor, cmd *exec.Cmd, ch chan runc.Exit, pidfd int) error {
	defer unix.Close(pidfd)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill user namespace holder %d: %w", cmd.Process.Pid, err)
	}
	_, _ = mon.Wait(cmd, ch)
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil)
		switch {
		case err == nil, errors.Is(err, unix.ECHILD):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return fmt.Errorf("wait for user namespace holder %d: %w", cmd.Process.Pid, err)
		}
	}
}
