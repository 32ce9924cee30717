// Package sandbox is the pod: the Manager holds the pod's containers by id,
// routes exits from the reaper to them, decides the order of their events
// and when the shim may exit. It also holds the shim binary's start and
// delete logic (start.go, cleanup.go).
//
// With containerd's Sandbox API (CRI `sandboxer = "shim"`) the Manager
// also holds the pod itself, with no pause container: pod.go (the calls
// and states), holder.go (the process holding the pod's namespaces, this
// binary re-executed), podfiles.go (hostname, hosts, resolv.conf and
// /dev/shm, and why they reach containers through their specs),
// podcgroup.go (the pod cgroup), podrecord.go (the record `delete` tears
// the pod down from), podconfig.go (the CRI PodSandboxConfig, decoded
// without cri-api's gRPC-bearing package).
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

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// EngineFactory returns the OCI runtime for one container.
type EngineFactory func(opts ociruntime.Options, bundle string) ociruntime.Runtime

// Config wires a Manager.
type Config struct {
	// Namespace is the containerd namespace the shim serves.
	Namespace string
	Publisher Publisher
	// Reaper is the shim's one reaper; the Manager runs its loop.
	Reaper *reaper.Reaper
	// NewEngine defaults to runc through go-runc.
	NewEngine EngineFactory
	// HolderExecutable is the binary the pod holder runs (with
	// HolderArg); this one, /proc/self/exe, by default.
	HolderExecutable string
}

// Manager holds the pod's containers. Exits and the order of events are
// the exit router's (exits.go); the Manager holds what containerd's calls
// reach by id.
type Manager struct {
	namespace string
	newEngine EngineFactory
	// reaper starts the processes the shim runs besides runc (logging
	// binaries, the pod holder); nil in tests that fake the runtime.
	reaper *reaper.Reaper
	// holderExe is the pod holder's binary.
	holderExe string
	events    *eventQueue
	exits     *exitRouter
	// ctx is what work outliving a request runs with (follow-ups of
	// exits); cancelled by Close.
	ctx context.Context

	// stop ends the reaper loop; cancel aborts publishing and follow-ups
	// when Close runs out of time; wg joins the loops and follow-ups.
	stop   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// life decides when the shim may exit (lifetime.go).
	life *lifetime
	// trim gives memory back once a burst of work is over (trim.go).
	// Close stops it.
	trim *trimmer
	// oom is the one OOM watcher of every container, made at the first
	// container's create (a shim that only answers `delete` or holds a
	// pod makes none) and closed by Close.
	oomOnce sync.Once
	oom     *cgroups.OOMWatcher
	oomErr  error

	mu sync.Mutex
	// containers maps id to container, including ones still being
	// created (init nil). Guarded by mu. Lock order: mu, then the exit
	// router's, then a process's; mu, then the pod's.
	containers map[string]*container
	// pod is the pod containerd handed this shim through the Sandbox API
	// (pod.go), nil when it uses a pause container. Set by
	// CreateSandbox, never cleared once created. Guarded by mu.
	pod *Pod
}

type container struct {
	init *process.Init
	// rootfs is kept for the TaskCreate event.
	rootfs []rootfs.Mount
	// bundle, options and engine are what exec processes are run with;
	// the engine is the init's, made once per container (not per exec:
	// exec probes are the hot path) and safe for concurrent use.
	bundle  string
	options ociruntime.Options
	engine  ociruntime.Runtime
	// execs are the container's exec processes by exec id; nil once the
	// container is deleted. Guarded by Manager.mu.
	execs map[string]*process.Exec
}

// NewManager starts the reaper loop and the event publisher; Close stops
// them.
func NewManager(ctx context.Context, cfg Config) *Manager {
	// Events and follow-ups outlive the request that caused them.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	events := newEventQueue(cfg.Publisher)
	m := &Manager{
		namespace:  cfg.Namespace,
		newEngine:  cfg.NewEngine,
		reaper:     cfg.Reaper,
		events:     events,
		exits:      newExitRouter(events),
		ctx:        bg,
		stop:       make(chan struct{}),
		cancel:     cancel,
		life:       newLifetime(),
		containers: make(map[string]*container),
		holderExe:  cfg.HolderExecutable,
	}
	if m.holderExe == "" {
		m.holderExe = "/proc/self/exe"
	}
	m.trim = newIdleTrimmer()
	if m.newEngine == nil {
		m.newEngine = func(opts ociruntime.Options, bundle string) ociruntime.Runtime {
			return ociruntime.New(opts, cfg.Namespace, bundle)
		}
	}
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
	Rootfs  []rootfs.Mount
	Stdio   stdio.Stdio
	Options ociruntime.Options
}

// Create creates a container and publishes TaskCreate. It returns the pid
// of the container's init process.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (int, error) {
	defer m.touch()
	sp, err := validateCreate(req)
	if err != nil {
		return 0, err
	}
	if err := m.admit(req.ID); err != nil {
		return 0, err
	}
	defer m.admitted()
	c := &container{
		rootfs:  req.Rootfs,
		bundle:  req.Bundle,
		options: req.Options,
		engine:  m.newEngine(req.Options, req.Bundle),
		execs:   make(map[string]*process.Exec),
	}
	m.mu.Lock()
	if _, ok := m.containers[req.ID]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("create %q: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	m.containers[req.ID] = c
	m.mu.Unlock()

	w := m.exits.openWindow()
	created := false
	defer func() {
		// Also on a panic: an open window collects every orphan's exit,
		// and a half-made container would block its id.
		if !created {
			m.exits.closeWindow(w)
			m.mu.Lock()
			delete(m.containers, req.ID)
			m.mu.Unlock()
		}
	}()
	p, pid, err := m.create(ctx, req, sp, c.engine)
	if err != nil {
		return 0, err
	}
	created = true
	// The counter's baseline is read here, outside the router's lock.
	oomKills := p.OOMKills
	oomBase, err := oomKills()
	if err != nil {
		// No counter to read (no OOM watch either): no TaskOOM.
		oomKills = nil
	}
	// The router knows the container before any call can find it: a
	// Start must find its task to hold the exit for.
	fs := m.exits.created(w, createdTask{
		id:         req.ID,
		pid:        pid,
		init:       p,
		oomKills:   oomKills,
		oomBase:    oomBase,
		killOnExit: !sp.ownPidNamespace(),
		event: &eventstypes.TaskCreate{
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
		},
	})
	m.mu.Lock()
	c.init = p
	m.mu.Unlock()
	m.runFollowUps(fs)
	return pid, nil
}

func (m *Manager) create(ctx context.Context, req CreateRequest, sp *spec, engine ociruntime.Runtime) (*process.Init, int, error) {
	if err := writeBundleState(req.Bundle, bundleState{Options: req.Options}); err != nil {
		return nil, 0, fmt.Errorf("create %q: %w", req.ID, err)
	}
	if err := m.addPodMounts(req.Bundle, sp); err != nil {
		return nil, 0, fmt.Errorf("create %q: %w", req.ID, err)
	}
	p := process.NewInit(process.InitConfig{
		ID:                 req.ID,
		Bundle:             req.Bundle,
		Rootfs:             req.Rootfs,
		Stdio:              req.Stdio,
		Options:            req.Options,
		Namespace:          m.namespace,
		Children:           m.children(),
		ReaderWait:         stdio.ReaderWait,
		SharedPidNamespace: !sp.ownPidNamespace(),
	}, engine)
	pid, err := p.Create(ctx)
	if err != nil {
		return nil, 0, err
	}
	err = m.watchOOM(p, func(kills uint64) { m.exits.oom(req.ID, kills) })
	if err != nil {
		// Without the watch an OOM kill is still an exit; only CRI's
		// "OOMKilled" reason is lost.
		log.G(ctx).WithError(err).WithField("id", req.ID).Warn("no OOM watch")
	}
	return p, pid, nil
}

// children is what starts logging binaries: the reaper, or nothing.
func (m *Manager) children() stdio.ChildStarter {
	if m.reaper == nil {
		return nil
	}
	return m.reaper
}

// touch tells the idle trim that work happened.
func (m *Manager) touch() { m.trim.touch() }

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
	m.exits.starting(id)
	// Deferred, so that the start is ended even if it panics: a start
	// left open would hold the init's exit forever.
	started := false
	defer func() { m.exits.started(id, c.init.Status().Pid, started) }()
	if err := c.init.Start(ctx); err != nil {
		return 0, err
	}
	started = true
	return c.init.Status().Pid, nil
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
	defer m.touch()
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
	execs := make([]execStreams, 0, len(c.execs))
	for _, p := range c.execs {
		execs = append(execs, execStreams{pid: p.Status().Pid, closeIO: p.CloseAllIO})
	}
	c.execs = nil
	closeNow := m.exits.deleted(id, execs, &eventstypes.TaskDelete{
		ContainerID: id,
		ID:          id,
		Pid:         uint32(st.Pid),
		ExitStatus:  uint32(st.ExitStatus),
		ExitedAt:    timestamppb.New(st.ExitedAt),
	})
	m.mu.Unlock()
	for _, f := range closeNow {
		f()
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
	if errdefs.IsNotFound(err) {
		if pid, ok := m.podPid(id); ok {
			if pid == 0 {
				return nil, nil
			}
			return []int{pid}, nil
		}
	}
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

// Connect returns the shim's pid and the container's init pid; for the
// pod's id, the holder's pid (containerd connects to the sandbox's task
// after a restart).
func (m *Manager) Connect(ctx context.Context, id string) (shimPid, taskPid int, err error) {
	c, err := m.lookup(id, "connect")
	if errdefs.IsNotFound(err) {
		if pid, ok := m.podPid(id); ok {
			return os.Getpid(), pid, nil
		}
	}
	if err != nil {
		return 0, 0, err
	}
	return os.Getpid(), c.init.Status().Pid, nil
}

// Close publishes what is queued (bounded by ctx), stops the reaper loop
// and waits for it, the publisher and any follow-up still running.
func (m *Manager) Close(ctx context.Context) error {
	m.trim.close()
	// No OOM callback after this: they push events.
	m.oomOnce.Do(func() {})
	if m.oom != nil {
		m.oom.Close()
	}
	err := m.events.close(ctx)
	m.cancel()
	close(m.stop)
	m.wg.Wait()
	return err
}

func mountsToAPI(mounts []rootfs.Mount) []*types.Mount {
	out := make([]*types.Mount, 0, len(mounts))
	for _, mt := range mounts {
		out = append(out, &types.Mount{Type: mt.Type, Source: mt.Source, Target: mt.Target, Options: mt.Options})
	}
	return out
}
