package sandbox

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// Event topics of exec processes.
const (
	TopicTaskExecAdded   = "/tasks/exec-added"
	TopicTaskExecStarted = "/tasks/exec-started"
)

// ExecRequest is an extra process to run in a container.
type ExecRequest struct {
	ContainerID string
	ExecID      string
	Spec        specs.Process
	Stdio       stdio.Stdio
}

// Exec adds an exec process to a running container and publishes
// TaskExecAdded. Nothing runs until StartExec.
func (m *Manager) Exec(ctx context.Context, req ExecRequest) error {
	if err := identifiers.Validate(req.ExecID); err != nil {
		return fmt.Errorf("exec in %q: exec id: %w", req.ContainerID, err)
	}
	if len(req.Spec.Args) == 0 {
		return fmt.Errorf("exec %q in %q: process has no args: %w", req.ExecID, req.ContainerID, errdefs.ErrInvalidArgument)
	}
	if err := validateStdio(req.Stdio); err != nil {
		return fmt.Errorf("exec %q in %q: %w", req.ExecID, req.ContainerID, err)
	}
	// The container's state is checked and the exec recorded under one
	// lock: a delete in between would otherwise leave an exec in a
	// container that is gone (or write to its cleared map).
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[req.ContainerID]
	if !ok || c.init == nil || c.execs == nil {
		return fmt.Errorf("exec %q in %q: %w", req.ExecID, req.ContainerID, errdefs.ErrNotFound)
	}
	// An init whose exit is held for its execs (exits.go rule 3) is still
	// running here, as in the runc shim: an exec may be created, and its
	// start is refused.
	if st := c.init.Status().State; st != process.Running && st != process.Created {
		return fmt.Errorf("exec %q in %q: container is %s: %w", req.ExecID, req.ContainerID, st, errdefs.ErrFailedPrecondition)
	}
	if _, ok := c.execs[req.ExecID]; ok {
		return fmt.Errorf("exec %q in %q: %w", req.ExecID, req.ContainerID, errdefs.ErrAlreadyExists)
	}
	c.execs[req.ExecID] = process.NewExec(process.ExecConfig{
		ContainerID: req.ContainerID,
		ExecID:      req.ExecID,
		Bundle:      c.bundle,
		Spec:        req.Spec,
		Stdio:       req.Stdio,
		Options:     c.options,
		Namespace:   m.namespace,
		Children:    m.children(),
		ReaderWait:  stdio.ReaderWait,
	}, c.engine)
	m.exits.publish(TopicTaskExecAdded, &eventstypes.TaskExecAdded{ContainerID: req.ContainerID, ExecID: req.ExecID})
	return nil
}

func (m *Manager) lookupExec(id, execID, op string) (*process.Exec, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[id]
	if !ok || c.init == nil {
		return nil, fmt.Errorf("%s exec %q: container %q: %w", op, execID, id, errdefs.ErrNotFound)
	}
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("%s exec %q in %q: %w", op, execID, id, errdefs.ErrNotFound)
	}
	return p, nil
}

// StartExec runs an exec process and publishes TaskExecStarted, then its
// TaskExit if it is already gone. It is refused once the container's init
// has exited (exits.go rule 4). A fast process (/bin/true) can exit and be
// reaped before its pid is known: the exit router's window for this start
// holds that exit.
func (m *Manager) StartExec(ctx context.Context, id, execID string) (int, error) {
	defer m.touch()
	p, err := m.lookupExec(id, execID, "start")
	if err != nil {
		return 0, err
	}
	w, err := m.exits.execStarting(id, execID)
	if err != nil {
		return 0, err
	}
	// Deferred, so that the start is ended even if it panics (the service
	// recovers handler panics): a start left open would hold the init's
	// exit forever.
	started := false
	var pid int
	defer func() { m.runFollowUps(m.exits.execStarted(w, id, execID, p, pid, started)) }()
	pid, err = p.Start(ctx)
	if err != nil {
		return 0, err
	}
	started = true
	return pid, nil
}

// KillExec signals an exec process.
func (m *Manager) KillExec(ctx context.Context, id, execID string, sig int) error {
	p, err := m.lookupExec(id, execID, "kill")
	if err != nil {
		return err
	}
	return p.Kill(ctx, sig)
}

// DeleteExec forgets a created or stopped exec process and publishes
// TaskDelete.
func (m *Manager) DeleteExec(ctx context.Context, id, execID string) (process.Status, error) {
	defer m.touch()
	p, err := m.lookupExec(id, execID, "delete")
	if err != nil {
		return process.Status{}, err
	}
	st, err := p.Delete(ctx)
	if err != nil {
		return process.Status{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.containers[id]; ok && c.execs[execID] == p {
		delete(c.execs, execID)
	}
	m.exits.publish(TopicTaskDelete, &eventstypes.TaskDelete{
		ContainerID: id,
		ID:          execID,
		Pid:         uint32(st.Pid),
		ExitStatus:  uint32(st.ExitStatus),
		ExitedAt:    timestamppb.New(st.ExitedAt),
	})
	return st, nil
}

// StateExec returns a snapshot of an exec process.
func (m *Manager) StateExec(ctx context.Context, id, execID string) (process.Status, error) {
	p, err := m.lookupExec(id, execID, "state")
	if err != nil {
		return process.Status{}, err
	}
	return p.Status(), nil
}

// WaitExec blocks until an exec process has exited.
func (m *Manager) WaitExec(ctx context.Context, id, execID string) (process.Status, error) {
	p, err := m.lookupExec(id, execID, "wait")
	if err != nil {
		return process.Status{}, err
	}
	return p.Wait(ctx)
}

// CloseIOExec closes an exec process's stdin.
func (m *Manager) CloseIOExec(ctx context.Context, id, execID string) error {
	p, err := m.lookupExec(id, execID, "close io")
	if err != nil {
		return err
	}
	p.CloseStdin()
	return nil
}

// ExecPids maps the pid of each started exec process of a container to
// its exec id, for Pids.
func (m *Manager) ExecPids(id string) map[int]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[int]string{}
	if c, ok := m.containers[id]; ok {
		for execID, p := range c.execs {
			if pid := p.Status().Pid; pid > 0 {
				out[pid] = execID
			}
		}
	}
	return out
}

// ResizePty sets the terminal size of a container's init process, or of
// one of its exec processes when execID is set.
func (m *Manager) ResizePty(ctx context.Context, id, execID string, width, height uint32) error {
	if execID != "" {
		p, err := m.lookupExec(id, execID, "resize pty")
		if err != nil {
			return err
		}
		return p.ResizePty(width, height)
	}
	c, err := m.lookup(id, "resize pty")
	if err != nil {
		return err
	}
	return c.init.ResizePty(width, height)
}
