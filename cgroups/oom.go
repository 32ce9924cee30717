package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// OOMWatch calls back each time the kernel's OOM killer kills a process in
// a container's memory cgroup; containerd's CRI turns the TaskOOM event
// the caller publishes into the container's "OOMKilled" reason.
//
// It owns one goroutine, parked in the runtime's poller on one fd (an
// eventfd on v1, an inotify fd on v2), so an idle container costs no
// thread and no CPU. Close stops and joins it.
type OOMWatch struct {
	f *os.File
	// ctl is v1's memory.oom_control, held while the eventfd is registered
	// on it; nil on v2.
	ctl *os.File
	// done is closed when the goroutine has returned.
	done chan struct{}
	once sync.Once
}

// WatchOOM starts watching the memory cgroup among paths (v1's "memory",
// else the unified directory ""). A kill counts only if the cgroup's
// oom_kill counter went up: v1 also signals the eventfd when the cgroup
// is removed, and v2 when memory.events changes for any reason.
func WatchOOM(paths map[string]string, onKill func(kills uint64)) (*OOMWatch, error) {
	if dir := paths["memory"]; dir != "" {
		return watchV1(dir, onKill)
	}
	if dir := paths[""]; dir != "" {
		return watchV2(dir, onKill)
	}
	return nil, fmt.Errorf("watch OOM: no memory cgroup: %w", os.ErrNotExist)
}

func watchV1(dir string, onKill func(uint64)) (_ *OOMWatch, retErr error) {
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
	f := os.NewFile(uintptr(efd), "oom eventfd")
	reg := fmt.Sprintf("%d %d", efd, ctl.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("watch OOM: register on %s: %w", control, err)
	}
	w := &OOMWatch{f: f, ctl: ctl, done: make(chan struct{})}
	w.start(func() (uint64, error) { return oomKills(control, "oom_kill ") }, onKill)
	return w, nil
}

func watchV2(dir string, onKill func(uint64)) (*OOMWatch, error) {
	events := filepath.Join(dir, "memory.events")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watch OOM: inotify: %w", err)
	}
	f := os.NewFile(uintptr(fd), "oom inotify")
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		f.Close()
		return nil, fmt.Errorf("watch OOM: watch %s: %w", events, err)
	}
	w := &OOMWatch{f: f, done: make(chan struct{})}
	w.start(func() (uint64, error) { return oomKills(events, "oom_kill ") }, onKill)
	return w, nil
}

// start reads the kill counter now, before the caller lets the container
// run, so that a kill right after start is not taken for the baseline;
// then a goroutine waits for notifications until Close and calls onKill
// once per rise of the counter, with the counter's new value: the Manager
// also reads the counter itself at the init's exit (OOMKills) and uses the
// value to publish each kill once.
func (w *OOMWatch) start(kills func() (uint64, error), onKill func(uint64)) {
	last, _ := kills()
	go w.run(last, kills, onKill)
}

func (w *OOMWatch) run(last uint64, kills func() (uint64, error), onKill func(uint64)) {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		if _, err := w.f.Read(buf); err != nil {
			// Closed by Close, or an fd the kernel has given up on.
			return
		}
		n, err := kills()
		if err != nil {
			// The cgroup is gone: nothing more will be killed in it.
			return
		}
		for last < n {
			last++
			onKill(last)
		}
	}
}

// Close stops the watch and waits for its goroutine.
func (w *OOMWatch) Close() {
	w.once.Do(func() {
		w.f.Close()
		<-w.done
		if w.ctl != nil {
			w.ctl.Close()
		}
	})
}

// OOMKills reads the OOM killer's kill counter of the memory cgroup among
// paths (v1's "memory", else the unified directory ""), as WatchOOM
// watches it.
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
