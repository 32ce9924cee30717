package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// The pod, when containerd hands it to the shim (CRI `sandboxer =
// "shim"`, the Sandbox API): the shim itself is the pod, with no pause
// container. Its namespaces are held by a holder process the shim starts
// (holder.go); its files are the shim's (podfiles.go); its record in the
// sandbox bundle (podrecord.go) lets `delete` tear it down after the shim
// died.
//
// The calls, in containerd 2.4's order: `start` for the sandbox id (a
// bundle with no config.json), CreateSandbox (the CRI PodSandboxConfig,
// netns_path), StartSandbox (the holder's pid, which every container's
// namespaces are built from), WaitSandbox held open, SandboxStatus and
// Platform before every container, then StopSandbox, ShutdownSandbox.

// PodState is a pod's state.
type PodState int

const (
	// PodCreated: CreateSandbox ran; no holder yet.
	PodCreated PodState = iota
	// PodStarting: StartSandbox is starting the holder (the pod's lock is
	// not held across the fork and the holder's setup).
	PodStarting
	// PodReady: the holder runs.
	PodReady
	// PodStopped: the holder exited, or the pod was stopped before it
	// started.
	PodStopped
	// PodShutdown: ShutdownSandbox released everything.
	PodShutdown
)

func (s PodState) String() string {
	switch s {
	case PodCreated:
		return "created"
	case PodStarting:
		return "starting"
	case PodReady:
		return "ready"
	case PodStopped:
		return "stopped"
	case PodShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("PodState(%d)", int(s))
}

// podMoves are the allowed state moves.
var podMoves = map[[2]PodState]bool{
	{PodCreated, PodStarting}: true,
	{PodStarting, PodReady}:   true,
	{PodStarting, PodCreated}: true,
	{PodCreated, PodStopped}:  true,
	{PodReady, PodStopped}:    true,
	{PodCreated, PodShutdown}: true,
	{PodStopped, PodShutdown}: true,
}

// Pod is the pod the shim holds.
type Pod struct {
	id     string
	bundle string
	netns  string
	cfg    *PodConfig
	files  podFiles
	// done is closed when the pod ends: its holder exited, or it was
	// stopped or shut down before one started. Closed under mu, once.
	done chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	state      PodState
	pid        int
	createdAt  time.Time
	exitedAt   time.Time
	exitStatus int
	holder     *exec.Cmd
	// cgroup is the pod cgroup's path relative to the hierarchy roots.
	cgroup string
}

// transitionLocked moves the pod from one state to another, or fails
// with FailedPrecondition naming both. p.mu must be held.
func (p *Pod) transitionLocked(op string, to PodState) error {
	if !podMoves[[2]PodState{p.state, to}] {
		return fmt.Errorf("%s sandbox %q: pod is %s, not a state it can become %s from: %w", op, p.id, p.state, to, errdefs.ErrFailedPrecondition)
	}
	p.state = to
	return nil
}

// endLocked records the pod's end and wakes its waiters, once. p.mu must
// be held.
func (p *Pod) endLocked(status int, at time.Time) bool {
	select {
	case <-p.done:
		return false
	default:
	}
	p.exitStatus = status
	p.exitedAt = at
	close(p.done)
	return true
}

// CreateSandboxRequest is a pod to create.
type CreateSandboxRequest struct {
	ID     string
	Bundle string
	// NetNS is the network namespace CRI made (and ran CNI in); empty
	// for a host-network pod.
	NetNS string
	// Config is the CRI PodSandboxConfig, serialized; nil when containerd
	// sent no options.
	Config []byte
}

// CreateSandbox creates the pod: its config, record and files. It
// consumes the claim the `start` for the sandbox id took, as a task
// Create does. Repeated for the same pod, it succeeds.
func (m *Manager) CreateSandbox(ctx context.Context, req CreateSandboxRequest) error {
	// The id names the holder's cgroup (holderCgroup): no path may
	// escape the pod cgroup through it.
	if err := identifiers.Validate(req.ID); err != nil {
		return fmt.Errorf("create sandbox: id: %w", err)
	}
	if !filepath.IsAbs(req.Bundle) || filepath.Clean(req.Bundle) != req.Bundle {
		return fmt.Errorf("create sandbox %q: bundle %q is not a clean absolute path: %w", req.ID, req.Bundle, errdefs.ErrInvalidArgument)
	}
	cfg := &PodConfig{}
	if len(req.Config) > 0 {
		var err error
		if cfg, err = ParsePodConfig(req.Config); err != nil {
			return fmt.Errorf("create sandbox %q: %w", req.ID, err)
		}
	}
	if err := m.admit(req.ID); err != nil {
		return err
	}
	defer m.admitted()
	m.mu.Lock()
	if p := m.pod; p != nil {
		m.mu.Unlock()
		if p.id == req.ID {
			return nil
		}
		return fmt.Errorf("create sandbox %q: shim holds pod %q: %w", req.ID, p.id, errdefs.ErrAlreadyExists)
	}
	p := &Pod{
		id:        req.ID,
		bundle:    req.Bundle,
		netns:     req.NetNS,
		cfg:       cfg,
		files:     podFiles{dir: filepath.Join(req.Bundle, podDirName)},
		done:      make(chan struct{}),
		createdAt: time.Now(),
		cgroup:    cgroupPath(cfg.CgroupParent),
	}
	// Placed before the files are made, so that a concurrent create sees
	// the pod; a failure below takes it out again.
	m.pod = p
	m.mu.Unlock()
	if err := m.setUpPod(p); err != nil {
		_ = p.files.remove()
		removeRecord(p.bundle)
		m.mu.Lock()
		m.pod = nil
		m.mu.Unlock()
		return fmt.Errorf("create sandbox %q: %w", req.ID, err)
	}
	return nil
}

func (m *Manager) setUpPod(p *Pod) error {
	if err := writeRecord(p.bundle, p.record()); err != nil {
		return err
	}
	return p.files.write(p.cfg, p.hostname())
}

// hostname is the pod's: its config's, else the host's (the pause path's
// choice).
func (p *Pod) hostname() string {
	if p.cfg.Hostname != "" {
		return p.cfg.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// lookupPod returns the pod with id, or NotFound.
func (m *Manager) lookupPod(id, op string) (*Pod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pod == nil || m.pod.id != id {
		return nil, fmt.Errorf("%s sandbox %q: %w", op, id, errdefs.ErrNotFound)
	}
	return m.pod, nil
}

// PodStatus is a pod's state as SandboxStatus reports it.
type PodStatus struct {
	State      PodState
	Pid        int
	CreatedAt  time.Time
	ExitedAt   time.Time
	ExitStatus int
	Cgroup     string
	NetNS      string
	Config     *PodConfig
	Containers []string
	// Spec describes the running pod as an OCI spec (its namespaces, by
	// the holder's /proc paths, hostname, cgroup and sysctls), for
	// StartSandbox's answer: containerd 2.3+ stores it as the sandbox's
	// spec, which NRI reads the pod's namespaces and resources from. Nil
	// until the pod is ready.
	Spec *specs.Spec
}

// StartSandbox starts the pod's holder and returns its pid and the pod's
// creation time. Repeated on a ready pod, it answers the same.
func (m *Manager) StartSandbox(ctx context.Context, id string) (PodStatus, error) {
	defer m.touch()
	p, err := m.lookupPod(id, "start")
	if err != nil {
		return PodStatus{}, err
	}
	if m.reaper == nil {
		return PodStatus{}, fmt.Errorf("start sandbox %q: no reaper to start the holder with: %w", id, errdefs.ErrNotImplemented)
	}
	p.mu.Lock()
	if p.state == PodReady {
		defer p.mu.Unlock()
		return p.statusLocked(), nil
	}
	hs, err := p.holderSpec()
	if err == nil {
		err = p.transitionLocked("start", PodStarting)
	}
	p.mu.Unlock()
	if err != nil {
		return PodStatus{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	cmd, exitCh, err := startHolder(m.reaper, m.holderExe, hs, p.cfg.IpcMode == NamespaceNode, p.cfg.NetworkMode == NamespaceNode)
	if err == nil && p.cgroup != "" {
		if err = placeInPodCgroup(cgroups.DefaultRoot, p.cgroup, p.id, cmd.Process.Pid); err != nil {
			_ = cmd.Process.Kill()
			<-exitCh
			_ = cmd.Process.Release()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if terr := p.transitionLocked("start", PodCreated); terr != nil {
			return PodStatus{}, terr
		}
		return PodStatus{}, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	p.holder = cmd
	p.pid = cmd.Process.Pid
	if err := p.transitionLocked("start", PodReady); err != nil {
		return PodStatus{}, err
	}
	if err := writeRecord(p.bundle, p.record()); err != nil {
		log.G(ctx).WithError(err).WithField("id", id).Warn("pod record not updated")
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.holderExited(p, cmd, exitCh)
	}()
	return p.statusLocked(), nil
}

// holderExited waits for the holder's exit, which only it receives (the
// reaper hands a Start caller's child to that caller), and ends the pod:
// WaitSandbox returns, the status is NOTREADY, and a TaskExit for the
// sandbox id goes out, as the pause container's did.
func (m *Manager) holderExited(p *Pod, cmd *exec.Cmd, ch chan runc.Exit) {
	e, ok := <-ch
	_ = cmd.Process.Release()
	if !ok {
		e = runc.Exit{Pid: p.pid, Status: 255, Timestamp: time.Now()}
	}
	p.mu.Lock()
	if p.state == PodReady {
		p.state = PodStopped
	}
	ended := p.endLocked(e.Status, e.Timestamp)
	rec := p.record()
	p.mu.Unlock()
	if err := writeRecord(p.bundle, rec); err != nil {
		log.G(m.ctx).WithError(err).WithField("id", p.id).Debug("pod record not updated")
	}
	if ended {
		m.events.push(TopicTaskExit, &eventstypes.TaskExit{
			ContainerID: p.id,
			ID:          p.id,
			Pid:         uint32(e.Pid),
			ExitStatus:  uint32(e.Status),
			ExitedAt:    timestamppb.New(e.Timestamp),
		})
	}
}

func (p *Pod) statusLocked() PodStatus {
	st := PodStatus{
		State:      p.state,
		Pid:        p.pid,
		CreatedAt:  p.createdAt,
		ExitedAt:   p.exitedAt,
		ExitStatus: p.exitStatus,
		Cgroup:     p.cgroup,
		NetNS:      p.netns,
		Config:     p.cfg,
	}
	if p.state == PodReady {
		st.Spec = p.specLocked()
	}
	return st
}

// specLocked is the pod as an OCI spec; p.mu must be held. The service
// marshals only the fields set here (its podSpec): a new one goes there
// too.
func (p *Pod) specLocked() *specs.Spec {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	for _, n := range []struct {
		typ  specs.LinuxNamespaceType
		name string
		own  bool
	}{
		{specs.NetworkNamespace, "net", true},
		{specs.IPCNamespace, "ipc", p.cfg.IpcMode != NamespaceNode},
		{specs.UTSNamespace, "uts", p.cfg.NetworkMode != NamespaceNode},
		{specs.PIDNamespace, "pid", p.cfg.PidMode != NamespaceNode},
	} {
		if n.own {
			ns = append(ns, specs.LinuxNamespace{Type: n.typ, Path: fmt.Sprintf("/proc/%d/ns/%s", p.pid, n.name)})
		}
	}
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: p.hostname(),
		Linux: &specs.Linux{
			Namespaces:  ns,
			CgroupsPath: p.cfg.CgroupParent,
			Sysctl:      p.cfg.Sysctls,
		},
	}
}

// SandboxStatus returns the pod's state; cheap, as CRI asks before every
// container.
func (m *Manager) SandboxStatus(ctx context.Context, id string) (PodStatus, error) {
	p, err := m.lookupPod(id, "status")
	if err != nil {
		return PodStatus{}, err
	}
	p.mu.Lock()
	st := p.statusLocked()
	p.mu.Unlock()
	m.mu.Lock()
	for cid := range m.containers {
		st.Containers = append(st.Containers, cid)
	}
	m.mu.Unlock()
	return st, nil
}

// WaitSandbox blocks until the pod ends, and answers at once after.
func (m *Manager) WaitSandbox(ctx context.Context, id string) (PodStatus, error) {
	p, err := m.lookupPod(id, "wait")
	if err != nil {
		return PodStatus{}, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return PodStatus{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked(), nil
}

// PingSandbox answers while the shim holds the pod.
func (m *Manager) PingSandbox(ctx context.Context, id string) error {
	_, err := m.lookupPod(id, "ping")
	return err
}

// released reports whether ShutdownSandbox released the pod.
func (p *Pod) released() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state == PodShutdown
}

// podPid returns the holder's pid when id is the pod's.
func (m *Manager) podPid(id string) (int, bool) {
	m.mu.Lock()
	p := m.pod
	m.mu.Unlock()
	if p == nil || p.id != id {
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != PodReady {
		return 0, true
	}
	return p.pid, true
}

// addPodMounts gives a container of the pod the pod's files (podfiles.go)
// by rewriting its config.json, before the runtime reads it. Containers
// of other pods, and every container of a pause-container pod, are left
// alone.
func (m *Manager) addPodMounts(bundle string, sp *spec) error {
	m.mu.Lock()
	p := m.pod
	m.mu.Unlock()
	if p == nil || sp == nil || sp.Annotations[annotationSandboxID] != p.id {
		return nil
	}
	return injectPodMounts(bundle, p.files.mounts(p.cfg.IpcMode != NamespaceNode))
}

// holderSpec is what the holder sets up. A host-network pod shares the
// host's network and UTS namespaces (as CRI's pause path has it), so its
// holder joins no netns and sets no hostname: that would rename the host.
func (p *Pod) holderSpec() (holderSpec, error) {
	hostNet := p.cfg.NetworkMode == NamespaceNode
	hs := holderSpec{Sysctls: p.cfg.Sysctls, PidNS: p.cfg.PidMode != NamespaceNode}
	if !hostNet {
		hs.NetNS = p.netns
		hs.Hostname = p.hostname()
	}
	for k := range p.cfg.Sysctls {
		if err := checkSysctl(k, hostNet, p.cfg.IpcMode == NamespaceNode); err != nil {
			return hs, err
		}
	}
	return hs, nil
}

// checkSysctl admits only the sysctls of namespaces the pod owns, as
// runc does for a container: the holder writes them in /proc/sys of the
// host's mount namespace, where any other would change the host.
func checkSysctl(key string, hostNet, hostIPC bool) error {
	k := strings.ReplaceAll(key, "/", ".")
	ipc := k == "kernel.sem" || strings.HasPrefix(k, "kernel.msg") || strings.HasPrefix(k, "kernel.shm") || strings.HasPrefix(k, "fs.mqueue.")
	switch {
	case ipc && !hostIPC:
		return nil
	case strings.HasPrefix(k, "net.") && !hostNet:
		return nil
	case (k == "kernel.hostname" || k == "kernel.domainname") && !hostNet:
		return nil
	}
	return fmt.Errorf("sysctl %q is not in a namespace the pod owns: %w", key, errdefs.ErrInvalidArgument)
}

// PodReleased reports whether the shim held a pod that ShutdownSandbox
// released.
func (m *Manager) PodReleased() bool {
	m.mu.Lock()
	p := m.pod
	m.mu.Unlock()
	return p != nil && p.released()
}
