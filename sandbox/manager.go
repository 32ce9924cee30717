// Package sandbox is the pod: the Manager holds the pod's containers by id,
// routes exits from the reaper to them, decides the order of their events
// and when the shim may exit. It also holds the shim binary's start and
// delete logic (start.go, cleanup.go).
package sandbox

import (
	"context"
	"fmt"
	"os"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// EngineFactory returns the OCI runtime for one container.
type EngineFactory func(opts process.RuntimeOptions, bundle string) process.Engine

// Config wires a Manager.
type Config struct {
	// Namespace is the containerd namespace the shim serves.
	Namespace string
	Publisher Publisher
	// Reaper is the shim's one reaper; the Manager runs its loop.
	Reaper *process.Reaper
	// NewEngine defaults to runc through go-runc.
	NewEngine EngineFactory
}

// Manager holds the pod's containers.
type Manager struct {
	namespace string
	newEngine EngineFactory
	// reaper starts the processes the shim runs besides runc (logging
	// binaries); nil in tests that fake the runtime.
	reaper *process.Reaper
	events *eventQueue

	// stop ends the reaper loop; cancelEvents aborts publishing when Close
	// runs out of time; wg joins both goroutines.
	stop         chan struct{}
	cancelEvents context.CancelFunc
	wg           sync.WaitGroup
	// life decides when the shim may exit (lifetime.go).
	life *lifetime

	mu sync.Mutex
	// containers maps id to container, including ones still being
	// created (init nil). Guarded by mu.
	containers map[string]*container
	// byPid maps the pid of every live init process to its container, for
	// exits. Guarded by mu.
	byPid map[int]*container
	// execByPid maps the pid of every live exec process to it, for exits.
	// Guarded by mu.
	execByPid map[int]*execEntry
	// creating counts creates and exec starts in flight: while a runtime
	// create or exec runs, the process it forks may die before its pid is
	// known. Guarded by mu.
	creating int
	// earlyExits holds exits no known pid matched while creating > 0
	// (DESIGN.md race 1); dropped when creating returns to 0. Guarded by mu.
	earlyExits []process.Exit
}

type container struct {
	init *process.Init
	// starting, deferredExit are guarded by Manager.mu. While Start is in
	// flight the exit is held back so TaskExit never precedes TaskStart
	// (DESIGN.md race 2).
	starting     bool
	deferredExit *process.Exit
	// rootfs is kept for the TaskCreate event.
	rootfs []process.Mount
	// bundle and options are what exec processes are run with.
	bundle  string
	options process.RuntimeOptions
	// execs are the container's exec processes by exec id. Guarded by
	// Manager.mu.
	execs map[string]*process.Exec
}

// NewManager starts the reaper loop and the event publisher; Close stops
// them.
func NewManager(ctx context.Context, cfg Config) *Manager {
	m := &Manager{
		namespace:  cfg.Namespace,
		newEngine:  cfg.NewEngine,
		reaper:     cfg.Reaper,
		events:     newEventQueue(cfg.Publisher),
		stop:       make(chan struct{}),
		life:       newLifetime(),
		containers: make(map[string]*container),
		byPid:      make(map[int]*container),
		execByPid:  make(map[int]*execEntry),
	}
	if m.newEngine == nil {
		m.newEngine = func(opts process.RuntimeOptions, bundle string) process.Engine {
			return process.NewRuncEngine(opts, cfg.Namespace, bundle)
		}
	}
	// Events outlive the request that caused them.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancelEvents = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.events.run(bg)
	}()
	if cfg.Reaper != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			cfg.Reaper.Run(m.stop, m.handleExit)
		}()
	}
	return m
}

// CreateRequest is a container to create.
type CreateRequest struct {
	ID      string
	Bundle  string
	Rootfs  []process.Mount
	Stdio   process.Stdio
	Options process.RuntimeOptions
}

// Create creates a container and publishes TaskCreate. It returns the pid
// of the container's init process.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (int, error) {
	if err := validateCreate(req); err != nil {
		return 0, err
	}
	if err := m.admit(req.ID); err != nil {
		return 0, err
	}
	defer m.admitted()
	c := &container{rootfs: req.Rootfs, bundle: req.Bundle, options: req.Options, execs: make(map[string]*process.Exec)}
	m.mu.Lock()
	if _, ok := m.containers[req.ID]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("create %q: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	m.containers[req.ID] = c
	m.creating++
	m.mu.Unlock()

	pid, err := m.create(ctx, req, c)

	m.mu.Lock()
	defer m.mu.Unlock()
	m.creating--
	var early *process.Exit
	if err == nil {
		early = m.takeEarlyExitLocked(pid)
	}
	if m.creating == 0 {
		m.earlyExits = nil
	}
	if err != nil {
		delete(m.containers, req.ID)
		return 0, err
	}
	m.events.push(TopicTaskCreate, &eventstypes.TaskCreate{
		ContainerID: req.ID,
		Bundle:      req.Bundle,
		Rootfs:      mountsToAPI(req.Rootfs),
		IO: &eventstypes.TaskIO{
			Stdin:    req.Stdio.Stdin,
			Stdout:   req.Stdio.Stdout,
			Stderr:   req.Stdio.Stderr,
			Terminal: req.Stdio.Terminal,
		},
		Pid: uint32(pid),
	})
	if early != nil {
		c.init.SetExited(early.Status, early.Timestamp)
		m.pushExitLocked(c, *early)
		return pid, nil
	}
	m.byPid[pid] = c
	return pid, nil
}

func (m *Manager) create(ctx context.Context, req CreateRequest, c *container) (int, error) {
	if err := writeBundleState(req.Bundle, bundleState{Options: req.Options}); err != nil {
		return 0, fmt.Errorf("create %q: %w", req.ID, err)
	}
	p := process.NewInit(process.InitConfig{
		ID:         req.ID,
		Bundle:     req.Bundle,
		Rootfs:     req.Rootfs,
		Stdio:      req.Stdio,
		Options:    req.Options,
		Namespace:  m.namespace,
		Children:   m.children(),
		ReaderWait: process.ReaderWait,
	}, m.newEngine(req.Options, req.Bundle))
	pid, err := p.Create(ctx)
	if err != nil {
		return 0, err
	}
	if err := p.WatchOOM(func() { m.pushOOM(req.ID) }); err != nil {
		// Without the watch an OOM kill is still an exit; only CRI's
		// "OOMKilled" reason is lost.
		entry := log.G(ctx).WithError(err).WithField("id", req.ID)
		if errdefs.IsNotImplemented(err) {
			entry.Debug("no OOM watch: the runtime does not say where its cgroups are")
		} else {
			entry.Warn("no OOM watch")
		}
	}
	m.mu.Lock()
	c.init = p
	m.mu.Unlock()
	return pid, nil
}

// children is what starts logging binaries: the reaper, or nothing.
func (m *Manager) children() process.ChildStarter {
	if m.reaper == nil {
		return nil
	}
	return m.reaper
}

// pushOOM publishes TaskOOM for a container the OOM killer reached; the
// OOM watch calls it.
func (m *Manager) pushOOM(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events.push(TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: id})
}

// takeEarlyExitLocked removes and returns the held exit of pid, if any.
func (m *Manager) takeEarlyExitLocked(pid int) *process.Exit {
	for i, e := range m.earlyExits {
		if e.Pid == pid {
			m.earlyExits = append(m.earlyExits[:i], m.earlyExits[i+1:]...)
			return &e
		}
	}
	return nil
}

// handleExit is the reaper's handler for every exit it does not route to
// a runtime command. It must not block: it only updates state and queues
// events.
func (m *Manager) handleExit(e process.Exit) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if x, ok := m.execByPid[e.Pid]; ok {
		delete(m.execByPid, e.Pid)
		x.p.SetExited(e.Status, e.Timestamp)
		m.pushExecExitLocked(x.containerID, x.p.ExecID(), e)
		return
	}
	c, ok := m.byPid[e.Pid]
	if !ok {
		if m.creating > 0 {
			m.earlyExits = append(m.earlyExits, e)
		}
		return
	}
	delete(m.byPid, e.Pid)
	c.init.SetExited(e.Status, e.Timestamp)
	if c.starting {
		c.deferredExit = &e
		return
	}
	m.pushExitLocked(c, e)
}

func (m *Manager) pushExitLocked(c *container, e process.Exit) {
	id := c.init.ID()
	m.events.push(TopicTaskExit, &eventstypes.TaskExit{
		ContainerID: id,
		ID:          id,
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    timestamppb.New(e.Timestamp),
	})
}

// lookup returns a created container or NotFound.
func (m *Manager) lookup(id, op string) (*container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[id]
	if !ok || c.init == nil {
		return nil, fmt.Errorf("%s %q: %w", op, id, errdefs.ErrNotFound)
	}
	return c, nil
}

// Start starts a created container and publishes TaskStart, then its
// TaskExit if it already exited.
func (m *Manager) Start(ctx context.Context, id string) (int, error) {
	c, err := m.lookup(id, "start")
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	if c.starting {
		m.mu.Unlock()
		return 0, fmt.Errorf("start %q: already starting: %w", id, errdefs.ErrFailedPrecondition)
	}
	c.starting = true
	m.mu.Unlock()

	err = c.init.Start(ctx)

	m.mu.Lock()
	defer m.mu.Unlock()
	c.starting = false
	pid := c.init.Status().Pid
	if err == nil {
		m.events.push(TopicTaskStart, &eventstypes.TaskStart{ContainerID: id, Pid: uint32(pid)})
	}
	if c.deferredExit != nil {
		m.pushExitLocked(c, *c.deferredExit)
		c.deferredExit = nil
	}
	if err != nil {
		return 0, err
	}
	return pid, nil
}

// Kill signals a container; all reaches every process in it.
func (m *Manager) Kill(ctx context.Context, id string, sig int, all bool) error {
	c, err := m.lookup(id, "kill")
	if err != nil {
		return err
	}
	return c.init.Kill(ctx, sig, all)
}

// Delete removes a created or stopped container and publishes TaskDelete.
func (m *Manager) Delete(ctx context.Context, id string) (process.Status, error) {
	c, err := m.lookup(id, "delete")
	if err != nil {
		return process.Status{}, err
	}
	st, err := c.init.Delete(ctx)
	if err != nil {
		return process.Status{}, err
	}
	m.mu.Lock()
	delete(m.containers, id)
	if m.byPid[st.Pid] == c {
		delete(m.byPid, st.Pid)
	}
	execs := m.forgetExecsLocked(c)
	m.events.push(TopicTaskDelete, &eventstypes.TaskDelete{
		ContainerID: id,
		ID:          id,
		Pid:         uint32(st.Pid),
		ExitStatus:  uint32(st.ExitStatus),
		ExitedAt:    timestamppb.New(st.ExitedAt),
	})
	m.mu.Unlock()
	for _, p := range execs {
		p.CloseAllIO()
	}
	return st, nil
}

// State returns a snapshot of a container's init process.
func (m *Manager) State(ctx context.Context, id string) (process.Status, error) {
	c, err := m.lookup(id, "state")
	if err != nil {
		return process.Status{}, err
	}
	return c.init.Status(), nil
}

// Wait blocks until the container's init process has exited.
func (m *Manager) Wait(ctx context.Context, id string) (process.Status, error) {
	c, err := m.lookup(id, "wait")
	if err != nil {
		return process.Status{}, err
	}
	return c.init.Wait(ctx)
}

// Pids lists the processes of a container.
func (m *Manager) Pids(ctx context.Context, id string) ([]int, error) {
	c, err := m.lookup(id, "pids")
	if err != nil {
		return nil, err
	}
	return c.init.Pids(ctx)
}

// Update changes a container's resources.
func (m *Manager) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	c, err := m.lookup(id, "update")
	if err != nil {
		return err
	}
	return c.init.Update(ctx, resources)
}

// CloseIO closes a container's stdin.
func (m *Manager) CloseIO(ctx context.Context, id string) error {
	c, err := m.lookup(id, "close io")
	if err != nil {
		return err
	}
	c.init.CloseStdin()
	return nil
}

// Connect returns the shim's pid and the container's init pid.
func (m *Manager) Connect(ctx context.Context, id string) (shimPid, taskPid int, err error) {
	c, err := m.lookup(id, "connect")
	if err != nil {
		return 0, 0, err
	}
	return os.Getpid(), c.init.Status().Pid, nil
}

// Close publishes what is queued (bounded by ctx), stops the reaper loop
// and waits for both goroutines.
func (m *Manager) Close(ctx context.Context) error {
	err := m.events.close(ctx)
	m.cancelEvents()
	close(m.stop)
	m.wg.Wait()
	return err
}

func mountsToAPI(mounts []process.Mount) []*types.Mount {
	out := make([]*types.Mount, 0, len(mounts))
	for _, mt := range mounts {
		out = append(out, &types.Mount{Type: mt.Type, Source: mt.Source, Target: mt.Target, Options: mt.Options})
	}
	return out
}
