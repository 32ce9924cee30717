package process

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// Stats reads the container's cgroup metrics (see cgroups.Stats) while it
// is created, running, paused, or stopped and not yet deleted: its
// cgroups stay until the delete, and containerd 2.x's CRI reads a
// stopped container's memory OOM counter from them to tell an OOM kill
// (its "OOMKilled" reason), as the runc shim answers it. A stopped
// container whose cgroups were never looked up while it lived, or a
// deleted one, is NotFound: containerd's task Metrics skips a NotFound
// task quietly but logs every other error on every scrape
// (plugins/services/tasks/local.go, getTasksMetrics).
func (p *Init) Stats(ctx context.Context) (proto.Message, error) {
	paths, err := p.cgroupPaths()
	if err != nil {
		return nil, fmt.Errorf("stats %q: %w", p.cfg.ID, err)
	}
	m, err := cgroups.Stats(paths)
	if err != nil {
		return nil, fmt.Errorf("stats %q: %w", p.cfg.ID, err)
	}
	return m, nil
}

// WatchOOM has watcher call onKill, with the cgroup's kill counter, each
// time the OOM killer kills a process of the container, until the
// container is deleted. The caller publishes it as TaskOOM, which
// containerd's CRI reports as the container's "OOMKilled".
func (p *Init) WatchOOM(watcher *cgroups.OOMWatcher, onKill func(kills uint64)) error {
	paths, err := p.cgroupPaths()
	if err != nil {
		return fmt.Errorf("watch OOM of %q: %w", p.cfg.ID, err)
	}
	w, err := watcher.Watch(paths, onKill)
	if err != nil {
		return fmt.Errorf("watch OOM of %q: %w", p.cfg.ID, err)
	}
	p.mu.Lock()
	if p.state == Deleting || p.state == Deleted || p.oom != nil {
		p.mu.Unlock()
		w.Close()
		return nil
	}
	p.oom = w
	p.mu.Unlock()
	return nil
}

// OOMKills reads the container's OOM kill counter now. The Manager calls
// it when the init exits, before it publishes TaskExit: the watch's
// notification may still be on its way, and containerd before 2.3 decides
// "OOMKilled" when the exit arrives (containerd PR 12714).
//
// With a watch, the watch reads it: on cgroup v2 it finds a kill also
// when the container's cgroup was removed before the read, as systemd
// removes a scope once its last process has exited (see cgroups'
// oomGroup).
func (p *Init) OOMKills() (uint64, error) {
	p.mu.Lock()
	paths, w := p.cgroups, p.oom
	p.mu.Unlock()
	if w != nil {
		return w.Kills()
	}
	if paths == nil {
		return 0, fmt.Errorf("OOM kills of %q: cgroups not known: %w", p.cfg.ID, errdefs.ErrNotFound)
	}
	return cgroups.OOMKills(paths)
}

// stopOOMWatch ends the OOM watch, if any.
func (p *Init) stopOOMWatch() {
	p.mu.Lock()
	w := p.oom
	p.oom = nil
	p.mu.Unlock()
	if w != nil {
		w.Close()
	}
}

// cgroupPaths returns where the container's cgroups are, asking the
// engine once: they do not move while the container lives.
func (p *Init) cgroupPaths() (map[string]string, error) {
	p.mu.Lock()
	st, pid, paths := p.state, p.pid, p.cgroups
	p.mu.Unlock()
	switch {
	case st == Stopped && paths != nil:
		return paths, nil
	case st == Created, st == Starting, st == Running, st == Pausing, st == Paused, st == Resuming:
	default:
		return nil, fmt.Errorf("container is %s: %w", st, errdefs.ErrNotFound)
	}
	if paths != nil {
		return paths, nil
	}
	// Paths read from /proc/<pid>/cgroup are the container's only if pid
	// was still its init while they were read: the pidfd says so.
	pidfd := p.dupPidfd()
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	paths, err := p.runtime.CgroupPaths(p.cfg.ID, pid)
	if err != nil {
		return nil, err
	}
	if pidfd >= 0 && unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		return nil, fmt.Errorf("container has exited: %w", errdefs.ErrNotFound)
	}
	p.mu.Lock()
	p.cgroups = paths
	p.mu.Unlock()
	return paths, nil
}
