package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// InitConfig describes a container's init process.
type InitConfig struct {
	ID     string
	Bundle string
	// Rootfs are mounted on <bundle>/rootfs before create; empty when the
	// spec's root path is used as given (ctr run --rootfs).
	Rootfs  []rootfs.Mount
	Stdio   stdio.Stdio
	Options ociruntime.Options
	// Namespace is the containerd namespace, for a logging binary.
	Namespace string
	// Children starts logging binaries (binary:// stdout): the Reaper.
	Children stdio.ChildStarter
	// ReaderWait bounds the wait for an output fifo's reader.
	ReaderWait time.Duration
	// SharedPidNamespace is set when the spec gives the container no PID
	// namespace of its own (it joins another's, or the host's): its
	// processes do not die with its init, so a SIGKILL and the init's
	// exit must reach every process in its cgroup.
	SharedPidNamespace bool
}

// Init is a container's init process: the container itself, as far as the
// runtime is concerned. Its state machine is in state.go; what it shares
// with exec processes (exit, pid, streams) is in proc.go.
type Init struct {
	proc
	cfg     InitConfig
	runtime ociruntime.Runtime
	// cgroups are the container's cgroup directories once Stats has
	// asked the engine for them. Guarded by proc.mu.
	cgroups map[string]string
	// oom watches the container's memory cgroup from WatchOOM until
	// Delete; guarded by proc.mu.
	oom *cgroups.OOMWatch
}

// NewInit returns an init process that has not been created yet.
func NewInit(cfg InitConfig, runtime ociruntime.Runtime) *Init {
	p := &Init{cfg: cfg, runtime: runtime}
	p.proc.init(cfg.ID, cfg.Bundle, cfg.Stdio)
	p.state = Creating
	return p
}

// ID returns the container id.
func (p *Init) ID() string { return p.cfg.ID }

func (p *Init) rootfsPath() string { return filepath.Join(p.cfg.Bundle, "rootfs") }

// Create mounts the rootfs, opens the streams and runs `runtime create`,
// leaving the container's process waiting to be started. It returns the
// pid, which the caller must register for exits before anything can
// signal the process.
func (p *Init) Create(ctx context.Context) (_ int, retErr error) {
	if err := rootfs.MountAll(p.cfg.Rootfs, p.rootfsPath()); err != nil {
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	defer func() {
		if retErr != nil && len(p.cfg.Rootfs) > 0 {
			_ = rootfs.UnmountAll(p.rootfsPath())
		}
	}()
	pio, err := stdio.Open(ctx, p.cfg.Stdio, stdio.StreamEnv{
		UID:        int(p.cfg.Options.IoUID),
		GID:        int(p.cfg.Options.IoGID),
		Namespace:  p.cfg.Namespace,
		ID:         p.cfg.ID,
		Children:   p.cfg.Children,
		ReaderWait: p.cfg.ReaderWait,
	})
	if err != nil {
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	pidFile := filepath.Join(p.cfg.Bundle, "init.pid")
	err = p.runtime.Create(ctx, p.cfg.ID, p.cfg.Bundle, &runc.CreateOpts{
		IO:            pio,
		PidFile:       pidFile,
		NoPivot:       p.cfg.Options.NoPivotRoot,
		NoNewKeyring:  p.cfg.Options.NoNewKeyring,
		ConsoleSocket: pio.ConsoleSocket(),
	})
	pio.CloseChildSide()
	if err == nil {
		err = pio.AttachConsole()
	}
	if err != nil {
		pio.Close()
		// runc may have left state behind; a failed create owns its cleanup.
		_ = p.runtime.Delete(context.WithoutCancel(ctx), p.cfg.ID, false)
		return 0, err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		pio.Close()
		_ = p.runtime.Delete(context.WithoutCancel(ctx), p.cfg.ID, false)
		return 0, fmt.Errorf("create %q: %w", p.cfg.ID, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.moveLocked(Created, "create"); err != nil {
		pio.Close()
		return 0, err
	}
	// The process is blocked in runc init until start, so the pid cannot
	// have been reused yet.
	p.setPidLocked(pid, pio)
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
	err = p.runStart(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Starting {
		// Exited meanwhile (Stopped): the start itself happened.
		return nil
	}
	if err != nil {
		if merr := p.moveLocked(Created, "start"); merr != nil {
			return errors.Join(err, merr)
		}
		return err
	}
	return p.moveLocked(Running, "start")
}

// runStart starts the created container, handing the runtime the pidfd
// that pins its init: a direct start needs it to tell when the process
// died instead.
func (p *Init) runStart(ctx context.Context) error {
	pidfd := p.dupPidfd()
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	return p.runtime.Start(ctx, p.cfg.ID, pidfd)
}

// Kill signals the container, answering as the runc shim does:
//
//   - a process that has exited (or a container the runtime no longer
//     has) is NotFound, "process already finished", whatever the signal;
//   - all reaches every process of the container (runtime kill --all),
//     and so does SIGKILL of a container without its own PID namespace,
//     whose other processes would outlive its init;
//   - SIGKILL of a frozen container goes through the runtime, which thaws
//     it after the signal (runc PR 3217): on cgroup v1 a frozen task does
//     not die until thawed;
//   - anything else goes to the init process through its pidfd, so a
//     recycled pid can never be hit.
func (p *Init) Kill(ctx context.Context, sig int, all bool) error {
	p.mu.Lock()
	st, exited := p.state, !p.exitedAt.IsZero()
	p.mu.Unlock()
	switch {
	case st == Deleting || st == Deleted || st == Creating:
		return fmt.Errorf("kill %q: %w", p.cfg.ID, errdefs.ErrNotFound)
	case (exited || !st.live()) && !all:
		return errFinished(strconv.Quote(p.cfg.ID))
	}
	if sig == int(unix.SIGKILL) && p.cfg.SharedPidNamespace {
		all = true
	}
	if !all && !(sig == int(unix.SIGKILL) && st.frozen()) {
		if sent, err := p.signal(sig, strconv.Quote(p.cfg.ID)); sent || err != nil {
			return err
		}
	}
	return p.runtimeKill(ctx, sig, all)
}

// KillAll sends SIGKILL to every process left in the container's
// cgroups, as the runc shim does when the init of a container without
// its own PID namespace exits.
func (p *Init) KillAll(ctx context.Context) error {
	return p.runtimeKill(ctx, int(unix.SIGKILL), true)
}

func (p *Init) runtimeKill(ctx context.Context, sig int, all bool) error {
	err := p.runtime.Kill(ctx, p.cfg.ID, sig, all)
	if ociruntime.IsNotFound(err) {
		return fmt.Errorf("kill %q: process already finished: %w", p.cfg.ID, err)
	}
	return err
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
		defer p.mu.Unlock()
		// A process whose exit is recorded (before the delete, or caused
		// by it) is Stopped, never Created again: Start must not revive
		// a dead container.
		back := prev
		if !p.exitedAt.IsZero() {
			back = Stopped
		}
		if merr := p.moveLocked(back, "delete"); merr != nil {
			return Status{}, errors.Join(err, merr)
		}
		return Status{}, err
	}
	// Before the cgroups go: v1 signals the watch's eventfd on removal.
	p.stopOOMWatch()
	if err := p.runtime.Delete(ctx, p.cfg.ID, prev == Stopped); err != nil {
		return fail(err)
	}
	if len(p.cfg.Rootfs) > 0 {
		if err := rootfs.UnmountAll(p.rootfsPath()); err != nil {
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
	// Deleting -> Deleted is always allowed.
	_ = p.moveLocked(Deleted, "delete")
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

// Update changes the container's resources (cgroup limits) while it is
// created or running, as `runtime update` does.
func (p *Init) Update(ctx context.Context, resources *specs.LinuxResources) error {
	switch st := p.Status().State; st {
	case Created, Starting, Running, Pausing, Paused, Resuming:
	default:
		return fmt.Errorf("update %q: container is %s: %w", p.cfg.ID, st, errdefs.ErrFailedPrecondition)
	}
	return p.runtime.Update(ctx, p.cfg.ID, resources)
}

// Pause freezes every process of the running container (runtime pause).
func (p *Init) Pause(ctx context.Context) error {
	return p.freeze(ctx, "pause", Running, Pausing, Paused, p.runtime.Pause)
}

// Resume thaws the paused container (runtime resume).
func (p *Init) Resume(ctx context.Context) error {
	return p.freeze(ctx, "resume", Paused, Resuming, Running, p.runtime.Resume)
}

// freeze moves the container from before through during to after around
// the runtime call, back to before when the call fails. A process that
// exited meanwhile stays Stopped.
func (p *Init) freeze(ctx context.Context, op string, before, during, after State, call func(context.Context, string) error) error {
	p.mu.Lock()
	err := p.moveLocked(during, op)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	err = call(ctx, p.cfg.ID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != during {
		// Stopped: the exit won.
		return err
	}
	if err != nil {
		if merr := p.moveLocked(before, op); merr != nil {
			return errors.Join(err, merr)
		}
		return err
	}
	return p.moveLocked(after, op)
}

// Pids lists the processes in the container.
func (p *Init) Pids(ctx context.Context) ([]int, error) {
	return p.runtime.Ps(ctx, p.cfg.ID)
}
