package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// OOMWatcher calls back each time the kernel's OOM killer kills a process
// in a watched memory cgroup; containerd's CRI turns the TaskOOM event
// the caller publishes into the container's "OOMKilled" reason.
//
// One watcher serves every container of the shim: each watch is one fd
// (an eventfd on v1, an inotify fd on v2) in one epoll set, and one
// goroutine waits on that set. The epoll fd itself sits in the Go
// runtime's poller, so the goroutine holds no thread while it waits, and
// a container costs two fds and a map entry rather than a goroutine and
// its stack (issue 15: 21 KiB of stacks per container, one goroutine of
// four being its OOM watch). On v2 the containers under one parent
// cgroup also share one watch of the parent's memory.events, which finds
// the kill of a container whose cgroup went before it was read
// (oom_group.go).
//
// Callbacks run on the watcher's goroutine, one at a time, with no lock
// held; after a watch's Close returns, its callback is not running and
// is not called again.
type OOMWatcher struct {
	// ep is the epoll set, in the runtime's poller; epfd is its number,
	// kept apart because (*os.File).Fd would set it blocking.
	ep   *os.File
	epfd int
	// done is closed when the goroutine has returned.
	done chan struct{}

	mu sync.Mutex
	// Guarded by mu.
	watches map[uint32]*OOMWatch
	// groups are the v2 parents of watched cgroups, by directory and by
	// epoll key (oom_group.go).
	groups    map[string]*oomGroup
	groupKeys map[uint32]*oomGroup
	next      uint32
	closed    bool
	// busy is set while the goroutine handles an event (it reads fds and
	// runs callbacks); idle is signalled when it is done, for a Close to
	// wait on before it closes fds.
	busy bool
	idle *sync.Cond
}

// OOMWatch is one memory cgroup watched by an OOMWatcher.
type OOMWatch struct {
	w   *OOMWatcher
	key uint32
	// fd is the eventfd or inotify fd, non-blocking, owned by the watch.
	fd int
	// ctl is v1's memory.oom_control, held while the eventfd is registered
	// on it; nil on v2.
	ctl    *os.File
	kills  func() (uint64, error)
	onKill func(uint64)
	// v1: the eventfd is signalled when the cgroup goes under OOM, which
	// the kernel does before its OOM killer runs (mm/memcontrol.c:
	// mem_cgroup_oom notifies, then calls mem_cgroup_out_of_memory, which
	// counts the kill), so the counter may not have risen yet when the
	// watch reads it: a v1 signal on a cgroup that still exists counts as
	// a kill, as containerd's v1 OOM watch (and so the runc shim) takes
	// it. The exit-time read (OOMKills) dedupes by the counter.
	v1 bool
	// last is the counter's value the callback was last told; only the
	// watcher's goroutine touches it after Watch returns.
	last uint64
	// group is the v2 parent's accounting (nil on v1, or without a parent
	// to count in); seen is the counter as the group last settled it,
	// guarded by the group's mu.
	group *oomGroup
	seen  uint64
	once  sync.Once
}

// NewOOMWatcher makes the epoll set and starts its goroutine; Close stops
// and joins it.
func NewOOMWatcher() (*OOMWatcher, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("OOM watcher: epoll: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("OOM watcher: %w", err)
	}
	// A non-blocking fd goes into the runtime's poller: an epoll fd is
	// readable while events are pending.
	w := &OOMWatcher{
		ep:        os.NewFile(uintptr(fd), "oom epoll"),
		epfd:      fd,
		done:      make(chan struct{}),
		watches:   make(map[uint32]*OOMWatch),
		groups:    make(map[string]*oomGroup),
		groupKeys: make(map[uint32]*oomGroup),
	}
	w.idle = sync.NewCond(&w.mu)
	rc, err := w.ep.SyscallConn()
	if err != nil {
		w.ep.Close()
		return nil, fmt.Errorf("OOM watcher: %w", err)
	}
	go w.run(rc)
	return w, nil
}

// Watch starts watching the memory cgroup among paths (v1's "memory",
// else the unified directory ""). A kill counts only if the cgroup's
// oom_kill counter went up: v1 also signals the eventfd when the cgroup
// is removed, and v2 when memory.events changes for any reason.
//
// The counter is read now, before the caller lets the container run, so
// that a kill right after start is not taken for the baseline; onKill is
// then called once per rise of the counter, with its new value: the
// Manager also reads the counter itself at the init's exit (OOMKills) and
// uses the value to publish each kill once.
func (w *OOMWatcher) Watch(paths map[string]string, onKill func(kills uint64)) (*OOMWatch, error) {
	var (
		x     *OOMWatch
		err   error
		v2dir string
	)
	switch {
	case paths["memory"] != "":
		x, err = openV1(paths["memory"])
	case paths[""] != "":
		v2dir = paths[""]
		x, err = openV2(v2dir)
	default:
		return nil, fmt.Errorf("watch OOM: no memory cgroup: %w", os.ErrNotExist)
	}
	if err != nil {
		return nil, err
	}
	x.w, x.onKill = w, onKill
	x.last, _ = x.kills()
	x.seen = x.last

	if err := w.add(x, v2dir); err != nil {
		x.release()
		return nil, err
	}
	if x.group != nil {
		x.group.join(x)
	}
	return x, nil
}

// add puts x in the epoll set, and a v2 watch (dir set) in its parent's
// group, made on first use. Making a group reads the parent's counter and
// sets up an inotify watch: cgroupfs calls, made with mu released. A
// Watch racing this one under the same new parent may make one too; the
// first to take mu after it keeps its own, and the other closes its.
func (w *OOMWatcher) add(x *OOMWatch, dir string) error {
	var parent string
	if dir != "" {
		parent = filepath.Dir(dir)
	}
	var fresh *oomGroup
	for opened := false; ; opened = true {
		w.mu.Lock()
		if parent != "" && w.groups[parent] == nil && !opened {
			w.mu.Unlock()
			fresh = openGroup(dir)
			continue
		}
		err := w.addLocked(x, parent, fresh)
		w.mu.Unlock()
		return err
	}
}

// addLocked is add with mu held: x joins the parent's group (fresh, a
// group made for this call, when the parent has none, else closed) and
// the epoll set.
func (w *OOMWatcher) addLocked(x *OOMWatch, parent string, fresh *oomGroup) error {
	if w.closed {
		if fresh != nil {
			unix.Close(fresh.fd)
		}
		return fmt.Errorf("watch OOM: watcher closed: %w", os.ErrClosed)
	}
	var g *oomGroup
	if parent != "" {
		if g = w.groups[parent]; g == nil {
			g, fresh = fresh, nil
		}
	}
	if fresh != nil {
		unix.Close(fresh.fd)
	}
	if g != nil && g.refs == 0 {
		key, err := w.addFd(g.fd)
		if err != nil {
			unix.Close(g.fd)
			return err
		}
		g.key = key
		w.groups[g.dir], w.groupKeys[key] = g, g
	}
	if g != nil {
		g.refs++
		x.group = g
	}
	key, err := w.addFd(x.fd)
	if err != nil {
		if g := w.dropGroupLocked(x); g != nil {
			// As in Close: the goroutine may hold an event of it.
			for w.busy {
				w.idle.Wait()
			}
			unix.Close(g.fd)
		}
		x.group = nil
		return err
	}
	x.key = key
	w.watches[key] = x
	return nil
}

// addFd puts fd in the epoll set under a new key. The event's data is a
// key, not the fd: an fd closed by one watch's Close may be reused by the
// next Watch while an event for the old one is still in the goroutine's
// batch.
func (w *OOMWatcher) addFd(fd int) (uint32, error) {
	w.next++
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(w.next)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return 0, fmt.Errorf("watch OOM: epoll add: %w", err)
	}
	return w.next, nil
}

// dropGroupLocked releases x's hold on its group, and takes the group
// out of the epoll set when x was the last to hold it; it returns the
// group for the caller to close once no event is being handled.
func (w *OOMWatcher) dropGroupLocked(x *OOMWatch) *oomGroup {
	g := x.group
	if g == nil {
		return nil
	}
	g.refs--
	if g.refs > 0 {
		return nil
	}
	delete(w.groups, g.dir)
	delete(w.groupKeys, g.key)
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, g.fd, nil)
	return g
}

func openV1(dir string) (_ *OOMWatch, retErr error) {
	control := filepath.Join(dir, "memory.oom_control")
	ctl, err := os.Open(control)
	if err != nil {
		return nil, fmt.Errorf("watch OOM: %w", err)
	}
	defer func() {
		if retErr != nil {
			ctl.Close()
		}
	}()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watch OOM: eventfd: %w", err)
	}
	// ctl is a plain file (not pollable): Fd does not change its mode.
	reg := fmt.Sprintf("%d %d", efd, ctl.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("watch OOM: register on %s: %w", control, err)
	}
	return &OOMWatch{fd: efd, ctl: ctl, v1: true, kills: func() (uint64, error) { return oomKills(control, "oom_kill ") }}, nil
}

func openV2(dir string) (*OOMWatch, error) {
	events := filepath.Join(dir, "memory.events")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watch OOM: inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("watch OOM: watch %s: %w", events, err)
	}
	return &OOMWatch{fd: fd, kills: func() (uint64, error) { return oomKills(events, "oom_kill ") }}, nil
}

// run waits on the epoll set until Close, and hands each ready watch to
// fire.
func (w *OOMWatcher) run(rc interface {
	Read(func(fd uintptr) bool) error
}) {
	defer close(w.done)
	events := make([]unix.EpollEvent, 16)
	for {
		var n int
		err := rc.Read(func(fd uintptr) bool {
			var err error
			n, err = unix.EpollWait(int(fd), events, 0)
			// Nothing pending (or an interrupted call): park in the
			// runtime's poller until the set is readable again.
			return !(n == 0 || errors.Is(err, unix.EINTR))
		})
		if err != nil {
			// Closed by Close.
			return
		}
		for _, ev := range events[:n] {
			w.fire(uint32(ev.Fd))
		}
	}
}

// fire drains a ready fd and calls the callbacks of the watches whose
// kill counter rose, once per rise, with the watcher's lock released.
func (w *OOMWatcher) fire(key uint32) {
	w.mu.Lock()
	x, g := w.watches[key], w.groupKeys[key]
	if x == nil && g == nil {
		// Closed since the event was queued.
		w.mu.Unlock()
		return
	}
	w.busy = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.busy = false
		w.idle.Broadcast()
		w.mu.Unlock()
	}()

	switch {
	case g != nil:
		drain(g.fd)
	default:
		drain(x.fd)
		g = x.group
	}
	if g != nil {
		for _, r := range g.settle() {
			w.tell(r.x, r.n)
		}
		return
	}
	n, err := x.kills()
	if err != nil {
		// The cgroup is gone: nothing more will be killed in it. Its
		// fd stays in the set until the watch's Close; v1's eventfd
		// fires once at removal and then stays quiet.
		return
	}
	if x.v1 && n <= x.last {
		n = x.last + 1
	}
	w.tell(x, n)
}

// drain reads a ready fd empty: the set is level-triggered.
func drain(fd int) {
	var buf [4096]byte
	for {
		if _, err := unix.Read(fd, buf[:]); err != nil {
			return
		}
	}
}

// tell calls x's callback once for each rise of its counter up to n,
// unless x was closed.
func (w *OOMWatcher) tell(x *OOMWatch, n uint64) {
	for x.last < n {
		w.mu.Lock()
		open := w.watches[x.key] == x
		w.mu.Unlock()
		if !open {
			return
		}
		x.last++
		x.onKill(x.last)
	}
}

// Kills reads the watched cgroup's kill counter now, as the callback
// counts it: on v2 with a parent, through the group's accounting, so a
// kill is found even when the cgroup was removed before it could be read.
func (x *OOMWatch) Kills() (uint64, error) {
	if x.group != nil {
		return x.group.kills(x), nil
	}
	return x.kills()
}

// Close stops the watch: when it returns the callback is not running and
// will not run again.
func (x *OOMWatch) Close() {
	x.once.Do(func() {
		w := x.w
		w.mu.Lock()
		var g *oomGroup
		if w.watches[x.key] == x {
			delete(w.watches, x.key)
			_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
			g = w.dropGroupLocked(x)
		}
		for w.busy {
			w.idle.Wait()
		}
		w.mu.Unlock()
		if x.group != nil {
			x.group.leave(x)
		}
		x.release()
		if g != nil {
			unix.Close(g.fd)
		}
	})
}

func (x *OOMWatch) release() {
	unix.Close(x.fd)
	if x.ctl != nil {
		x.ctl.Close()
	}
}

// Close stops the watcher's goroutine and every watch still open.
func (w *OOMWatcher) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	open := make([]*OOMWatch, 0, len(w.watches))
	for _, x := range w.watches {
		open = append(open, x)
	}
	w.mu.Unlock()
	for _, x := range open {
		x.Close()
	}
	w.ep.Close()
	<-w.done
}

// OOMKills reads the OOM killer's kill counter of the memory cgroup among
// paths (v1's "memory", else the unified directory ""), as Watch watches
// it.
func OOMKills(paths map[string]string) (uint64, error) {
	if dir := paths["memory"]; dir != "" {
		return oomKills(filepath.Join(dir, "memory.oom_control"), "oom_kill ")
	}
	if dir := paths[""]; dir != "" {
		return oomKills(filepath.Join(dir, "memory.events"), "oom_kill ")
	}
	return 0, fmt.Errorf("OOM kills: no memory cgroup: %w", os.ErrNotExist)
}

// oomKills reads the counter after prefix ("oom_kill ") in a cgroup file
// of "name value" lines: v1's memory.oom_control, v2's memory.events.
func oomKills(path, prefix string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte(prefix)); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, nil
}
