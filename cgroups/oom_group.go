package cgroups

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// oomGroup is the watched v2 cgroups that share one parent cgroup. It
// exists because a container's own memory.events cannot always be read
// after its OOM kill: with the systemd cgroup driver the container's
// cgroup is a scope, and systemd removes a scope's cgroup as soon as its
// last process has exited, which can be before the shim has read the
// counter (runc issue 5071, systemd issue 40102, conmon issue 426;
// containerd skips critest's OOMKilled case for systemd cgroups in PR
// 12714). The kernel also rate-limits memory.events notifications to one
// per 10 ms and drops a pending one when the file is removed, so the
// container's own notification may never come.
//
// On v2, memory.events counts hierarchically: a kill in a child also
// raises the parent's oom_kill, and notifies the parent's file, which
// outlives the child. The group keeps the parent's counter and each live
// child's, and settles them on every notification of either and at the
// exit read of a child found gone: a rise of the parent's counter that no
// live child's rise explains, at a settle that finds a child gone, is that
// child's kill. (The exit read of a child still there reads its own
// counter alone; see kills.)
//
// A sibling the shim does not watch (another service in the same slice)
// killed in the same window, between two settles, would be taken for the
// gone child's kill; under Kubernetes the parent is the pod's slice,
// whose children are the pod's own containers. With the cgroup2 mount
// option memory_localevents the parent's counter does not rise for its
// children and the group finds nothing, as before it.
type oomGroup struct {
	dir string
	// fd is an inotify fd on the parent's memory.events, in the watcher's
	// epoll set under key; refs counts the open watches of the group.
	// Both are guarded by the watcher's mu.
	fd   int
	key  uint32
	refs int

	mu sync.Mutex
	// Guarded by mu.
	// base is the parent's counter as far as the group accounted for it;
	// ahead counts children's kills read before the parent's counter
	// showed them (the kernel raises the child's counter, then its
	// ancestors', one by one).
	base  uint64
	ahead uint64
	kids  map[*OOMWatch]struct{}
	// gone are children found gone whose last counter settle has not
	// returned yet (an exit's read may find them first).
	gone map[*OOMWatch]struct{}
}

// oomReading is a watch's counter as a settle left it.
type oomReading struct {
	x *OOMWatch
	n uint64
}

// openGroup opens the group for the parent of the v2 cgroup dir, or
// returns nil when the parent has no memory.events to count in (the root
// cgroup has none).
func openGroup(dir string) *oomGroup {
	parent := filepath.Dir(dir)
	events := filepath.Join(parent, "memory.events")
	base, err := oomKills(events, "oom_kill ")
	if err != nil {
		return nil
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil
	}
	return &oomGroup{dir: parent, fd: fd, base: base, kids: make(map[*OOMWatch]struct{}), gone: make(map[*OOMWatch]struct{})}
}

// join adds x to the group, after settling what came before it.
func (g *oomGroup) join(x *OOMWatch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.settleLocked()
	g.kids[x] = struct{}{}
}

// leave removes x from the group.
func (g *oomGroup) leave(x *OOMWatch) {
	g.mu.Lock()
	delete(g.kids, x)
	delete(g.gone, x)
	g.mu.Unlock()
}

// settle reads the parent's counter and every live child's, and returns
// each child's counter, with the children found gone since the last
// settle, for the watcher's goroutine to tell their callbacks.
func (g *oomGroup) settle() []oomReading {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.settleLocked()
	out := make([]oomReading, 0, len(g.kids)+len(g.gone))
	for x := range g.kids {
		out = append(out, oomReading{x, x.seen})
	}
	for x := range g.gone {
		out = append(out, oomReading{x, x.seen})
		delete(g.gone, x)
	}
	return out
}

// kills returns x's counter: what the Manager reads at the init's exit,
// before it publishes TaskExit, under its exit router's lock. A child
// whose own file still reads (nearly always) is read alone, not the
// whole group: its rise is counted as ahead of the parent's, which the
// parent's rise settles later, as a settle's reads are. Only a child
// found gone needs the parent and its siblings to find its kill.
func (g *oomGroup) kills(x *OOMWatch) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, live := g.kids[x]; !live {
		// Found gone by an earlier settle, which gave it its last count.
		return x.seen
	}
	n, err := x.kills()
	switch {
	case err == nil:
		if n > x.seen {
			g.ahead += n - x.seen
			x.seen = n
		}
		return x.seen
	case isGone(err):
		g.settleLocked()
	}
	return x.seen
}

// settleLocked is settle's accounting. A child found gone moves from
// kids to gone with its last counter: nothing more is killed in it.
func (g *oomGroup) settleLocked() {
	parent, err := oomKills(filepath.Join(g.dir, "memory.events"), "oom_kill ")
	if err != nil {
		return
	}
	var (
		explained uint64
		gone      []*OOMWatch
		read      = make([]oomReading, 0, len(g.kids))
	)
	for x := range g.kids {
		n, err := x.kills()
		switch {
		case isGone(err):
			gone = append(gone, x)
		case err != nil:
			// Unreadable for another reason: settle nothing now, rather
			// than take its kills for a gone sibling's.
			return
		default:
			read = append(read, oomReading{x, n})
		}
	}
	for _, r := range read {
		if r.n > r.x.seen {
			explained += r.n - r.x.seen
			r.x.seen = r.n
		}
	}
	var rise uint64
	if parent > g.base {
		rise = parent - g.base
		g.base = parent
	}
	m := min(rise, g.ahead)
	g.ahead -= m
	rise -= m
	m = min(rise, explained)
	rise -= m
	g.ahead += explained - m
	// rise is now kills under the parent that no live child shows.
	if rise > 0 && len(gone) > 0 {
		if len(gone) == 1 {
			gone[0].seen += rise
		} else {
			// Which gone child had which kill is not known: each gets
			// one, which is what CRI's OOMKilled reason needs.
			for _, x := range gone {
				x.seen++
			}
		}
	}
	for _, x := range gone {
		delete(g.kids, x)
		g.gone[x] = struct{}{}
	}
}

// isGone reports whether err is a read of a removed cgroup's file: the
// path is gone (ENOENT), or the file was removed while open (ENODEV).
func isGone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV)
}
