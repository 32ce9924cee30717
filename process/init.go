package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// InitConfig describes a container's init process.
type InitConfig struct {
	ID     string
	Bundle string
	// Rootfs are mounted on <bundle>/rootfs before create; empty when the
	// spec's root path is used as given (ctr run --rootfs).
	Rootfs  []Mount
	Stdio   Stdio
	Options RuntimeOptions
}

// Status is a snapshot of a process for State and Delete.
type Status struct {
	ID         string
	Bundle     string
	Pid        int
	State      State
	ExitStatus int
	ExitedAt   time.Time
	Stdio      Stdio
}

// Init is a container's init process: the container itself, as far as the
// runtime is concerned. Its state machine is in state.go.
type Init struct {
	cfg    InitConfig
	engine Engine

	// exited is closed by SetExited; Wait callers select on it.
	exited chan struct{}

	mu sync.Mutex
	// state, pid, pidfd, exitStatus, exitedAt and io are guarded by mu.
	state      State
	pid        int
	pidfd      int // -1 when the kernel or a race denied us one
	exitStatus int
	exitedAt   time.Time
	io         *processIO
}

// NewInit returns an init process that has not been created yet.
func NewInit(cfg InitConfig, engine Engine) *Init {
	return &Init{cfg: cfg, engine: engine, exited: make(chan struct{}), pidfd: -1}
}

// ID returns the container id.
func (p *Init) ID() string { return p.cfg.ID }

func (p *Init) rootfsPath() string { return filepath.Join(p.cfg.Bundle, "rootfs") }

func (p *Init) logPath() string { return filepath.Join(p.cfg.Bundle, "log.json") }

// Create mounts the rootfs, opens the streams and runs `runtime create`,
// leaving the container's process waiting to be started. It returns the
// pid, which the caller must register for exits before anything can
// signal the process.
func (p *Init) Create(ctx context.Context) (_ int, retErr error) {
	if err := mountAll(p.cfg.Rootfs, p.rootfsPath()); err != nil {
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	defer func() {
		if retErr != nil && len(p.cfg.Rootfs) > 0 {
			_ = unmountAll(p.rootfsPath())
		}
	}()
	pio, err := openIO(ctx, p.cfg.Stdio, int(p.cfg.Options.IoUID), int(p.cfg.Options.IoGID))
	if err != nil {
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	pidFile := filepath.Join(p.cfg.Bundle, "init.pid")
	err = p.engine.Create(ctx, p.cfg.ID, p.cfg.Bundle, &runc.CreateOpts{
		IO:           pio,
		PidFile:      pidFile,
		NoPivot:      p.cfg.Options.NoPivotRoot,
		NoNewKeyring: p.cfg.Options.NoNewKeyring,
	})
	pio.closeChildSide()
	if err != nil {
		pio.Close()
		// runc may have left state behind; a failed create owns its cleanup.
		_ = p.engine.Delete(context.WithoutCancel(ctx), p.cfg.ID, &runc.DeleteOpts{Force: true})
		return 0, runtimeError(err, p.logPath(), "create "+strconv.Quote(p.cfg.ID))
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		pio.Close()
		_ = p.engine.Delete(context.WithoutCancel(ctx), p.cfg.ID, &runc.DeleteOpts{Force: true})
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state, p.pid, p.io = Created, pid, pio
	// The process is blocked in runc init until start, so the pid cannot
	// have been reused yet; a pidfd pins it for Kill from now on.
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.pidfd = fd
	}
	return pid, nil
}

func readPidFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %q holds %q: %w", path, data, errdefs.ErrUnknown)
	}
	return pid, nil
}

// Start runs `runtime start`. The process may exit before Start returns;
// SetExited then moves it to Stopped and Start leaves it there.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	err := transition(&p.state, Starting, "start", p.cfg.ID)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	err = p.engine.Start(ctx, p.cfg.ID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Starting {
		// Exited meanwhile (Stopped): the start itself happened.
		return nil
	}
	if err != nil {
		p.state = Created
		return runtimeError(err, p.logPath(), "start "+strconv.Quote(p.cfg.ID))
	}
	p.state = Running
	return nil
}

// SetExited records the process's exit, reported by the reaper. It moves
// the process to Stopped (a Deleting process keeps its state: the delete
// itself caused the exit) and wakes Wait callers. A second exit for the
// same process is ignored.
func (p *Init) SetExited(status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exitedAt.IsZero() {
		return
	}
	if p.state != Deleting {
		_ = transition(&p.state, Stopped, "exit", p.cfg.ID)
	}
	p.recordExitLocked(status, at)
}

// recordExitLocked is the one place an exit is recorded: the pidfd goes
// (the pid may be reused from now on) and Wait callers wake.
func (p *Init) recordExitLocked(status int, at time.Time) {
	p.exitStatus, p.exitedAt = status, at
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	close(p.exited)
}

// Kill signals the container. all signals every process in it (runtime
// kill --all); otherwise only the init process, through its pidfd when we
// have one, so a recycled pid can never be hit.
func (p *Init) Kill(ctx context.Context, sig int, all bool) error {
	p.mu.Lock()
	st := p.state
	if !all && p.pidfd >= 0 && (st == Created || st == Starting || st == Running) {
		err := unix.PidfdSendSignal(p.pidfd, unix.Signal(sig), nil, 0)
		p.mu.Unlock()
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %q: %w", p.cfg.ID, err)
		}
		// ESRCH: it has just died and its exit is on the way.
		return nil
	}
	p.mu.Unlock()
	switch st {
	case Deleting, Deleted:
		return fmt.Errorf("kill %q: %w", p.cfg.ID, errdefs.ErrNotFound)
	case Stopped:
		if !all {
			// Stopping a stopped process is done, as gVisor's shim agrees;
			// any other signal has nobody to reach.
			if sig == int(unix.SIGKILL) || sig == int(unix.SIGTERM) {
				return nil
			}
			return fmt.Errorf("kill %q: process already finished: %w", p.cfg.ID, errdefs.ErrNotFound)
		}
	}
	if err := p.engine.Kill(ctx, p.cfg.ID, sig, &runc.KillOpts{All: all}); err != nil {
		if isRuntimeNotFound(err) {
			return nil
		}
		return runtimeError(err, p.logPath(), "kill "+strconv.Quote(p.cfg.ID))
	}
	return nil
}

// deleteExitWait bounds how long Delete of a never-started container waits
// for the reaper to report the process runc just killed.
const deleteExitWait = 2 * time.Second

// Delete removes the container from the runtime, unmounts its rootfs and
// closes its streams. Only a created or stopped container can be deleted;
// a failed delete may be retried.
func (p *Init) Delete(ctx context.Context) (Status, error) {
	p.mu.Lock()
	prev := p.state
	err := transition(&p.state, Deleting, "delete", p.cfg.ID)
	p.mu.Unlock()
	if err != nil {
		return Status{}, err
	}
	fail := func(err error) (Status, error) {
		p.mu.Lock()
		p.state = prev
		p.mu.Unlock()
		return Status{}, err
	}
	if err := p.engine.Delete(ctx, p.cfg.ID, &runc.DeleteOpts{Force: true}); err != nil && !isRuntimeNotFound(err) {
		return fail(runtimeError(err, p.logPath(), "delete "+strconv.Quote(p.cfg.ID)))
	}
	if len(p.cfg.Rootfs) > 0 {
		if err := unmountAll(p.rootfsPath()); err != nil {
			return fail(fmt.Errorf("delete %q: %w", p.cfg.ID, err))
		}
	}
	if prev == Created {
		// runc delete --force killed the waiting process; report its
		// exit, not a made-up one, unless the reaper is slow to bring it.
		select {
		case <-p.exited:
		case <-time.After(deleteExitWait):
		}
	}
	p.mu.Lock()
	pio := p.io
	p.io = nil
	p.state = Deleted
	if p.exitedAt.IsZero() {
		// The reaper never brought the exit: report the SIGKILL runc sent.
		p.recordExitLocked(KilledStatus, time.Now())
	}
	st := p.statusLocked()
	p.mu.Unlock()
	if pio != nil {
		pio.Close()
	}
	return st, nil
}

// CloseStdin closes the container's stdin (CloseIO).
func (p *Init) CloseStdin() {
	p.mu.Lock()
	pio := p.io
	p.mu.Unlock()
	if pio != nil {
		pio.CloseStdin()
	}
}

// Wait blocks until the process has exited or ctx is done.
func (p *Init) Wait(ctx context.Context) (Status, error) {
	select {
	case <-p.exited:
		return p.Status(), nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// Pids lists the processes in the container.
func (p *Init) Pids(ctx context.Context) ([]int, error) {
	pids, err := p.engine.Ps(ctx, p.cfg.ID)
	if err != nil {
		return nil, runtimeError(err, p.logPath(), "ps "+strconv.Quote(p.cfg.ID))
	}
	return pids, nil
}

// Status returns a snapshot of the process.
func (p *Init) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked()
}

func (p *Init) statusLocked() Status {
	return Status{
		ID:         p.cfg.ID,
		Bundle:     p.cfg.Bundle,
		Pid:        p.pid,
		State:      p.state,
		ExitStatus: p.exitStatus,
		ExitedAt:   p.exitedAt,
		Stdio:      p.cfg.Stdio,
	}
}
