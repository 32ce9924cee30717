package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// ExecConfig describes an extra process run in a container.
type ExecConfig struct {
	ContainerID string
	ExecID      string
	// Bundle is the container's bundle; the exec's pid and log files go
	// there, named after the exec id (validated by the caller).
	Bundle  string
	Spec    specs.Process
	Stdio   stdio.Stdio
	Options ociruntime.Options
	// Namespace is the containerd namespace, for a logging binary.
	Namespace string
	// Children starts logging binaries (binary:// stdout): the Reaper.
	Children stdio.ChildStarter
	// ReaderWait bounds the wait for an output fifo's reader.
	ReaderWait time.Duration
}

// Exec is an extra process in a running container (task Exec). Unlike
// Init, nothing runs until Start: Created only means containerd has
// described it.
type Exec struct {
	proc
	cfg     ExecConfig
	runtime ociruntime.Runtime
}

// NewExec returns an exec process in the Created state.
func NewExec(cfg ExecConfig, runtime ociruntime.Runtime) *Exec {
	p := &Exec{cfg: cfg, runtime: runtime}
	p.proc.init(cfg.ExecID, cfg.Bundle, cfg.Stdio)
	p.state = Created
	return p
}

func (p *Exec) name() string {
	return fmt.Sprintf("exec %q in %q", p.cfg.ExecID, p.cfg.ContainerID)
}

// Start opens the streams and runs `runtime exec --detach`. It returns
// the pid. The process may already have exited (and been reaped) when
// Start returns: the caller must hold unmatched exits while Start runs and
// match them against the pid afterwards (DESIGN.md race 1).
func (p *Exec) Start(ctx context.Context) (int, error) {
	p.mu.Lock()
	err := transition(&p.state, Starting, "start "+p.name(), p.cfg.ExecID)
	p.mu.Unlock()
	if err != nil {
		return 0, err
	}
	pid, pio, err := p.run(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		// Nothing ran: the exec may be started again or deleted, as
		// containerd's TestIssue10589 expects of a start refused by runc.
		if merr := p.moveLocked(Created, "start "+p.name()); merr != nil {
			return 0, errors.Join(err, merr)
		}
		return 0, err
	}
	if err := p.moveLocked(Running, "start "+p.name()); err != nil {
		pio.Close()
		return 0, err
	}
	p.setPidLocked(pid, pio)
	return pid, nil
}

func (p *Exec) run(ctx context.Context) (int, *stdio.IO, error) {
	pio, err := stdio.Open(ctx, p.cfg.Stdio, stdio.StreamEnv{
		UID:        int(p.cfg.Options.IoUID),
		GID:        int(p.cfg.Options.IoGID),
		Namespace:  p.cfg.Namespace,
		ID:         p.cfg.ExecID,
		Children:   p.cfg.Children,
		ReaderWait: p.cfg.ReaderWait,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", p.name(), err)
	}
	pidFile := filepath.Join(p.cfg.Bundle, "exec-"+p.cfg.ExecID+".pid")
	logFile := filepath.Join(p.cfg.Bundle, "exec-"+p.cfg.ExecID+"-log.json")
	defer os.Remove(pidFile)
	defer os.Remove(logFile)
	err = p.runtime.Exec(ctx, p.cfg.ContainerID, p.cfg.Spec, &runc.ExecOpts{
		IO:            pio,
		PidFile:       pidFile,
		LogFile:       logFile,
		Detach:        true,
		ConsoleSocket: pio.ConsoleSocket(),
	})
	pio.CloseChildSide()
	if err == nil {
		err = pio.AttachConsole()
	}
	if err != nil {
		pio.Close()
		return 0, nil, fmt.Errorf("start %s: %w", p.name(), err)
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		pio.Close()
		return 0, nil, fmt.Errorf("start %s: %w", p.name(), err)
	}
	return pid, pio, nil
}

// Kill signals the exec process: NotFound once it has exited,
// FailedPrecondition before it was started.
func (p *Exec) Kill(ctx context.Context, sig int) error {
	if sent, err := p.signal(sig, p.name()); sent || err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch st := p.state; {
	case st == Created || st == Starting:
		return fmt.Errorf("kill %s: not started: %w", p.name(), errdefs.ErrFailedPrecondition)
	case !st.live() || !p.exitedAt.IsZero():
		return errFinished(p.name())
	}
	// Running without a pidfd (the kernel refused one): signal by pid, as
	// the runc shim always does. The window in which the pid is reaped and
	// reused before the exit is recorded is the runc shim's too.
	if err := unix.Kill(p.pid, unix.Signal(sig)); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return errFinished(p.name())
		}
		return fmt.Errorf("kill %s: %w", p.name(), err)
	}
	return nil
}

// Delete forgets a created or stopped exec and closes its streams.
func (p *Exec) Delete(ctx context.Context) (Status, error) {
	p.mu.Lock()
	if err := transition(&p.state, Deleting, "delete "+p.name(), p.cfg.ExecID); err != nil {
		p.mu.Unlock()
		return Status{}, err
	}
	pio := p.io
	p.io = nil
	// Deleting -> Deleted is always allowed.
	_ = p.moveLocked(Deleted, "delete "+p.name())
	st := p.statusLocked()
	p.mu.Unlock()
	if pio != nil {
		pio.Close()
	}
	return st, nil
}

// ExecID returns the exec id.
func (p *Exec) ExecID() string { return p.cfg.ExecID }
