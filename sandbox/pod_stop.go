package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// DefaultStopTimeout is how long StopSandbox waits after SIGTERM before
// SIGKILL when containerd sends no timeout (CRI never does: it has
// stopped the containers itself before).
const DefaultStopTimeout = 10 * time.Second

// holderKillWait bounds the wait for a holder after SIGKILL.
const holderKillWait = 10 * time.Second

// StopSandbox stops every task left in the pod (SIGTERM, then SIGKILL
// after timeout, DefaultStopTimeout when zero) and then the holder, and
// returns once the pod has ended. Stopping a stopped pod succeeds.
func (m *Manager) StopSandbox(ctx context.Context, id string, timeout time.Duration) error {
	p, err := m.lookupPod(id, "stop")
	if err != nil {
		return err
	}
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	m.stopTasks(ctx, timeout)
	return m.stopHolder(ctx, p, timeout)
}

// stopTasks signals every container's init with SIGTERM, waits up to
// timeout for them to exit, then SIGKILLs what is left (every process of
// each container) and waits for those inits.
func (m *Manager) stopTasks(ctx context.Context, timeout time.Duration) {
	m.mu.Lock()
	var cs []*container
	for _, c := range m.containers {
		if c.init != nil {
			cs = append(cs, c)
		}
	}
	m.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	for _, c := range cs {
		if err := c.init.Kill(ctx, int(unix.SIGTERM), false); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("id", c.init.ID()).Debug("stop sandbox: SIGTERM")
		}
	}
	if m.waitInits(ctx, cs, timeout) {
		return
	}
	for _, c := range cs {
		if err := c.init.Kill(ctx, int(unix.SIGKILL), true); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("id", c.init.ID()).Warn("stop sandbox: SIGKILL")
		}
	}
	m.waitInits(ctx, cs, holderKillWait)
}

// waitInits reports whether every init in cs exited within d.
func (m *Manager) waitInits(ctx context.Context, cs []*container, d time.Duration) bool {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for _, c := range cs {
		if _, err := c.init.Wait(wctx); err != nil {
			return false
		}
	}
	return true
}

// stopHolder ends the holder, SIGTERM then SIGKILL after timeout, and
// waits for its exit; a pod that never started just ends.
func (m *Manager) stopHolder(ctx context.Context, p *Pod, timeout time.Duration) error {
	p.mu.Lock()
	switch p.state {
	case PodCreated:
		err := p.transitionLocked("stop", PodStopped)
		p.endLocked(0, time.Now())
		p.mu.Unlock()
		return err
	case PodReady:
	case PodStarting:
		p.mu.Unlock()
		return fmt.Errorf("stop sandbox %q: pod is starting: %w", p.id, errdefs.ErrFailedPrecondition)
	default:
		p.mu.Unlock()
		return nil
	}
	pid := p.pid
	p.mu.Unlock()
	// The holder is reaped only by holderExited, so pid names it (or
	// nothing) until done is closed.
	_ = unix.Kill(pid, unix.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	k := time.NewTimer(holderKillWait)
	defer k.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-k.C:
		return fmt.Errorf("stop sandbox %q: holder %d did not exit: %w", p.id, pid, errdefs.ErrUnavailable)
	}
}

// ShutdownSandbox releases the pod: what runs is killed, containers left
// are deleted, the pod's files, shm mount, cgroup and record are removed.
// Then, with no container left, the shim exits by itself (containerd
// closes its connection and removes the bundle right after). Idempotent.
//
// Without a pod (containerd's cleanup after a CreateSandbox that failed
// before the pod was made) it answers NotFound and still lets the shim go:
// the claim `start` took is spent, and nothing else would end the shim.
func (m *Manager) ShutdownSandbox(ctx context.Context, id string) error {
	p, err := m.lookupPod(id, "shutdown")
	if err != nil {
		m.mu.Lock()
		none := m.pod == nil
		m.mu.Unlock()
		if none {
			m.Shutdown(ctx)
		}
		return err
	}
	p.mu.Lock()
	done := p.state == PodShutdown
	p.mu.Unlock()
	if !done {
		m.stopTasks(ctx, time.Nanosecond)
		if err := m.stopHolder(ctx, p, time.Nanosecond); err != nil {
			return fmt.Errorf("shutdown sandbox %q: %w", id, err)
		}
		m.deleteAll(ctx)
		if err := p.files.remove(); err != nil {
			return fmt.Errorf("shutdown sandbox %q: %w", id, err)
		}
		if p.cgroup != "" {
			if err := removePodCgroup(p.cgroup); err != nil {
				log.G(ctx).WithError(err).WithField("id", id).Warn("pod cgroup not removed")
			}
		}
		removeRecord(p.bundle)
		p.mu.Lock()
		if p.state != PodShutdown {
			if err := p.transitionLocked("shutdown", PodShutdown); err != nil {
				p.mu.Unlock()
				return err
			}
		}
		p.mu.Unlock()
	}
	m.Shutdown(ctx)
	return nil
}

// deleteAll deletes the containers left in the pod, best effort.
func (m *Manager) deleteAll(ctx context.Context) {
	m.mu.Lock()
	var ids []string
	for id, c := range m.containers {
		if c.init != nil {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	for _, id := range ids {
		if _, err := m.Delete(ctx, id); err != nil {
			log.G(ctx).WithError(err).WithField("id", id).Warn("shutdown sandbox: container not deleted")
		}
	}
}

// SandboxMetrics returns the pod cgroup's metrics: a cgroups v1 or v2
// Metrics message, as a task's Stats.
func (m *Manager) SandboxMetrics(ctx context.Context, id string) (proto.Message, error) {
	defer m.trim.nudge()
	p, err := m.lookupPod(id, "metrics")
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	rel, pid, state := p.cgroup, p.pid, p.state
	p.mu.Unlock()
	var paths map[string]string
	switch {
	case rel != "":
		paths = podCgroupPaths(cgroups.DefaultRoot, rel)
	case state == PodReady:
		if paths, err = cgroups.ProcPaths(cgroups.DefaultRoot, pid); err != nil {
			return nil, fmt.Errorf("metrics sandbox %q: %w", id, err)
		}
	default:
		return nil, fmt.Errorf("metrics sandbox %q: pod has no cgroup: %w", id, errdefs.ErrNotFound)
	}
	st, err := cgroups.Stats(paths)
	if err != nil {
		return nil, fmt.Errorf("metrics sandbox %q: %w", id, err)
	}
	return st, nil
}

// PodResources are the pod-level resources UpdateSandbox applies to the
// pod cgroup; zero fields are left as they are.
type PodResources struct {
	CPUPeriod   int64
	CPUQuota    int64
	CPUShares   int64
	MemoryLimit int64
}

// UpdateSandbox applies pod-level resources to the pod cgroup.
func (m *Manager) UpdateSandbox(ctx context.Context, id string, r PodResources) error {
	p, err := m.lookupPod(id, "update")
	if err != nil {
		return err
	}
	p.mu.Lock()
	rel := p.cgroup
	p.mu.Unlock()
	if rel == "" {
		return fmt.Errorf("update sandbox %q: pod has no cgroup parent: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := applyPodResources(cgroups.DefaultRoot, rel, r); err != nil {
		return fmt.Errorf("update sandbox %q: %w", id, err)
	}
	return nil
}
