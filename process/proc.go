package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// Status is a snapshot of a process for State and Delete.
type Status struct {
	// ID is the container id for an init process, the exec id for an exec.
	ID         string
	Bundle     string
	Pid        int
	State      State
	ExitStatus int
	ExitedAt   time.Time
	Stdio      stdio.Stdio
}

// proc is what every process of a container has, init or exec: its place
// in the state machine, its pid and pidfd, its exit and its streams.
type proc struct {
	id     string
	bundle string
	stdio  stdio.Stdio

	// exited is closed when the exit is recorded; Wait callers select on it.
	exited chan struct{}

	mu sync.Mutex
	// state, pid, pidfd, exitStatus, exitedAt and io are guarded by mu.
	state      State
	pid        int
	pidfd      int // -1 when there is none (not started, exited, or denied)
	exitStatus int
	exitedAt   time.Time
	io         *stdio.IO
	// stdinClosed remembers a CloseIO that came before the streams were
	// attached (an exec's Start still running): containerd's client sends
	// it as soon as its input ends, which can be that early.
	stdinClosed bool
}

func (p *proc) init(id, bundle string, s stdio.Stdio) {
	p.id, p.bundle, p.stdio = id, bundle, s
	p.exited = make(chan struct{})
	p.pidfd = -1
}

// setPidLocked records the pid of a process known to be alive and not yet
// reaped, pinning it with a pidfd so no signal can reach a recycled pid.
func (p *proc) setPidLocked(pid int, pio *stdio.IO) {
	p.pid, p.io = pid, pio
	if p.stdinClosed && pio != nil {
		pio.CloseStdin()
	}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.pidfd = fd
	}
}

// dupPidfd returns a copy of the pidfd, for the caller to close, or -1
// when there is none: the original is closed when the exit is recorded,
// which may happen while the caller still uses its copy.
func (p *proc) dupPidfd() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return -1
	}
	fd, err := unix.FcntlInt(uintptr(p.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// moveLocked moves the process to next through the transition table; it
// is the one place a state changes.
func (p *proc) moveLocked(next State, op string) error {
	return transition(&p.state, next, op, p.id)
}

// SetExited records the process's exit, reported by the reaper. It moves
// the process to Stopped (a Deleting process keeps its state: the delete
// itself caused the exit) and wakes Wait callers. A second exit for the
// same process is ignored, and so is one for a process already deleted
// (its delete recorded the exit it reported).
func (p *proc) SetExited(status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exitedAt.IsZero() {
		return
	}
	switch {
	case p.state == Deleting:
	case p.state.live():
		// Every live state may become Stopped (state.go).
		_ = p.moveLocked(Stopped, "exit")
	default:
		return
	}
	p.recordExitLocked(status, at)
}

// recordExitLocked is the one place an exit is recorded: the pidfd goes
// (the pid may be reused from now on) and Wait callers wake.
func (p *proc) recordExitLocked(status int, at time.Time) {
	p.exitStatus, p.exitedAt = status, at
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	close(p.exited)
}

// errFinished is what a signal to a process that has exited returns, as
// the runc shim answers it: containerd and its clients (CRI's
// StopContainer, ctr task kill) take NotFound for "already gone".
func errFinished(name string) error {
	return fmt.Errorf("kill %s: process already finished: %w", name, errdefs.ErrNotFound)
}

// signal sends sig through the pidfd while the process is alive. sent is
// false when there is no pidfd to use (not started, exited, or none was
// granted) and the caller must decide. A process that has died but whose
// exit is not recorded yet (a zombie, or reaped with its exit on the way
// to the Manager) is finished: that is errFinished, as runc's own kill
// says of a zombie ("container not running").
func (p *proc) signal(sig int, name string) (sent bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 || !p.state.live() {
		return false, nil
	}
	if zombie(p.pidfd) {
		return true, errFinished(name)
	}
	if err := unix.PidfdSendSignal(p.pidfd, unix.Signal(sig), nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			// Reaped already; the exit is on its way.
			return true, errFinished(name)
		}
		return true, fmt.Errorf("kill %s: %w", name, err)
	}
	return true, nil
}

// zombie reports whether the process behind pidfd has exited and waits to
// be reaped. It does not reap it (WNOWAIT): that stays the reaper's job.
// A process that is not the shim's child cannot be asked and counts as
// alive; a reaped one makes the signal fail with ESRCH instead.
func zombie(pidfd int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo == int32(unix.SIGCHLD)
}

// CloseStdin closes the process's stdin (CloseIO).
func (p *proc) CloseStdin() {
	p.mu.Lock()
	pio := p.io
	p.stdinClosed = true
	p.mu.Unlock()
	if pio != nil {
		pio.CloseStdin()
	}
}

// Wait blocks until the process has exited or ctx is done.
func (p *proc) Wait(ctx context.Context) (Status, error) {
	select {
	case <-p.exited:
		return p.Status(), nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// Status returns a snapshot of the process.
func (p *proc) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked()
}

func (p *proc) statusLocked() Status {
	return Status{
		ID:         p.id,
		Bundle:     p.bundle,
		Pid:        p.pid,
		State:      p.state,
		ExitStatus: p.exitStatus,
		ExitedAt:   p.exitedAt,
		Stdio:      p.stdio,
	}
}

// CloseAllIO closes the process's streams whatever its state, for a
// process whose container is gone.
func (p *proc) CloseAllIO() {
	p.mu.Lock()
	pio := p.io
	p.io = nil
	p.mu.Unlock()
	if pio != nil {
		pio.Close()
	}
}

// ResizePty sets the window size of the process's terminal.
func (p *proc) ResizePty(width, height uint32) error {
	p.mu.Lock()
	pio := p.io
	p.mu.Unlock()
	if pio == nil {
		return fmt.Errorf("resize pty of %q: not started or already deleted: %w", p.id, errdefs.ErrFailedPrecondition)
	}
	return pio.Resize(width, height)
}
