package sandbox

// What the Manager does about a container's processes between requests:
// the reaper's exits and the OOM kills the cgroup watcher sees go to the
// exit router (exits.go), and what it asks for in return (close an
// exec's IO, kill what an init left behind) runs here, on goroutines
// of its own.

import (
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// watchOOM has the shim's OOM watcher watch the container of p.
func (m *Manager) watchOOM(p *process.Init, onKill func(uint64)) error {
	m.oomOnce.Do(func() { m.oom, m.oomErr = cgroups.NewOOMWatcher() })
	if m.oomErr != nil {
		return m.oomErr
	}
	if m.oom == nil {
		// Close ran first.
		return fmt.Errorf("watch OOM: shim closing: %w", os.ErrClosed)
	}
	return p.WatchOOM(m.oom, onKill)
}

// handleExit is the reaper's handler for every exit it does not route to
// a runtime command. It must not block: the router only updates state and
// queues events, and its follow-ups run on goroutines of their own.
func (m *Manager) handleExit(e reaper.Exit) {
	m.runFollowUps(m.exits.exit(e))
	m.touch()
}

// runFollowUps does, off the caller's goroutine, what the exit router
// asked for: the caller may be the reaper loop, which a runtime command
// (reaped by that loop) would deadlock.
func (m *Manager) runFollowUps(fs []followUp) {
	for _, f := range fs {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if f.closeIO != nil {
				f.closeIO()
			}
			if f.killAll != "" {
				m.killAll(f.killAll)
			}
		}()
	}
}

// killAll kills what is left of a container without its own PID
// namespace once its init has exited, as the runc shim does: those
// processes would otherwise outlive it, and hold its exit (exits.go rule
// 3) when they are execs. The init's TaskExit waits for it (rule 7).
func (m *Manager) killAll(id string) {
	defer m.exits.killedAll(id)
	m.mu.Lock()
	c := m.containers[id]
	m.mu.Unlock()
	if c == nil || c.init == nil {
		return
	}
	if err := c.init.KillAll(m.ctx); err != nil && !errdefs.IsNotFound(err) {
		log.G(m.ctx).WithError(err).WithField("id", id).Warn("kill the processes left after the init exited")
	}
}
