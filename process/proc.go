package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
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
	Stdio      Stdio
}

// proc is what every process of a container has, init or exec: its place
// in the state machine, its pid and pidfd, its exit and its streams.
type proc struct {
	id     string
	bundle string
	stdio  Stdio

	// exited is closed when the exit is recorded; Wait callers select on it.
	exited chan struct{}

	mu sync.Mutex
	// state, pid, pidfd, exitStatus, exitedAt and io are guarded by mu.
	state      State
	pid        int
	pidfd      int // -1 when there is none (not started, exited, or denied)
	exitStatus int
	exitedAt   time.Time
	io         *processIO
	// stdinClosed remembers a CloseIO that came before the streams were
	// attached (an exec's Start still running): containerd's client sends
	// it as soon as its input ends, which can be that early.
	stdinClosed bool
}

func (p *proc) init(id, bundle string, stdio Stdio) {
	p.id, p.bundle, p.stdio = id, bundle, stdio
	p.exited = make(chan struct{})
	p.pidfd = -1
}

// setPidLocked records the pid of a process known to be alive and not yet
// reaped, pinning it with a pidfd so no signal can reach a recycled pid.
func (p *proc) setPidLocked(pid int, pio *processIO) {
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

// SetExited records the process's exit, reported by the reaper. It moves
// the process to Stopped (a Deleting process keeps its state: the delete
// itself caused the exit) and wakes Wait callers. A second exit for the
// same process is ignored.
func (p *proc) SetExited(status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exitedAt.IsZero() {
		return
	}
	if p.state != Deleting {
		_ = transition(&p.state, Stopped, "exit", p.id)
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

// signal sends sig through the pidfd while the process is alive. sent is
// false when there is no pidfd to use (not started, exited, or none was
// granted) and the caller must decide.
func (p *proc) signal(sig int) (sent bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 {
		return false, nil
	}
	switch p.state {
	case Created, Starting, Running, Pausing, Paused, Resuming:
	default:
		return false, nil
	}
	if err := unix.PidfdSendSignal(p.pidfd, unix.Signal(sig), nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return true, fmt.Errorf("kill %q: %w", p.id, err)
	}
	// ESRCH: it has just died and its exit is on the way.
	return true, nil
}

// stoppedKill is Kill on a stopped process: stopping it again is done, as
// gVisor's shim agrees; any other signal has nobody to reach.
func stoppedKill(id string, sig int) error {
	if sig == int(unix.SIGKILL) || sig == int(unix.SIGTERM) {
		return nil
	}
	return fmt.Errorf("kill %q: process already finished: %w", id, errdefs.ErrNotFound)
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

func syscallKill(pid, sig int) error {
	err := unix.Kill(pid, unix.Signal(sig))
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
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
	return pio.resize(width, height)
}
