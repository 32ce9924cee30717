package main

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/ctrd"
)

// shimExitTimeout is how long a shim may take to exit once its last task
// is deleted.
const shimExitTimeout = 20 * time.Second

// settle waits, between sections, until every shim of this run has exited
// (each section deletes all it created). The pod and node figures split a
// binary's shared pages among the instances alive, so a straggler would
// skew the next section's. One still there after shimExitTimeout is
// killed and reported.
func (b *bench) settle() error {
	left := waitShimsGone(b.d.bin, shimExitTimeout)
	if len(left) == 0 {
		return nil
	}
	desc := describePids(left)
	killTrees(left)
	return fmt.Errorf("shims still running %v after their tasks were deleted (killed): %s", shimExitTimeout, desc)
}

// waitShimsGone polls until no process runs a binary from bin, or timeout
// passes; it returns the ones still running.
func waitShimsGone(bin string, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		left := shimPids(bin)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killTrees SIGKILLs pids and all their descendants, read before the
// first signal so that nothing is missed by reparenting.
func killTrees(pids []int) {
	children := map[int][]int{}
	for _, p := range listProcs() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var all []int
	queue := slices.Clone(pids)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		all = append(all, pid)
		queue = append(queue, children[pid]...)
	}
	for _, pid := range all {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func describePids(pids []int) string {
	var parts []string
	for _, pid := range pids {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		parts = append(parts, fmt.Sprintf("%d %q", pid, strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " ")))
	}
	return strings.Join(parts, "; ")
}

// teardown removes everything this run made, only that and only by pid
// or path: the CRI section's pods and containerd if it failed, its
// containers, its containerd, shims running from its bin, mounts under
// its directory, its namespace's cgroups and runc state
// directory, and (unless keep) the directory. It returns what it had to
// force.
func (b *bench) teardown(r *reaper) []string {
	var problems []string
	if b.cri != nil {
		problems = append(problems, b.cri.teardown()...)
	}
	if b.d != nil && b.d.client != nil {
		ctx, cancel := context.WithTimeout(b.nsContext(context.Background()), time.Minute)
		if ids := ctrd.DeleteAll(ctx, b.d.client); len(ids) > 0 {
			problems = append(problems, fmt.Sprintf("deleted %d containers left behind: %v", len(ids), ids))
		}
		cancel()
	}
	if b.d != nil {
		if err := b.d.stop(); err != nil {
			problems = append(problems, err.Error())
		}
		if left := waitShimsGone(b.d.bin, shimExitTimeout); len(left) > 0 {
			problems = append(problems, "killed shims still running after their tasks were deleted: "+describePids(left))
			killTrees(left)
		}
	}
	if r != nil {
		r.Stop()
	}
	for label, n := range b.sockets.removeLeftovers() {
		b.notes = append(b.notes, fmt.Sprintf("removed %d shim socket files %s left in /run/containerd/s after exiting", n, label))
	}
	if b.dir == "" {
		return problems // nothing was made on disk
	}
	for _, mp := range mountsUnder(b.dir) {
		problems = append(problems, "unmounted "+mp)
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
	cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", b.ns))
	for _, cg := range cgroups {
		removeEmptyDirs(cg)
	}
	_ = os.Remove(filepath.Join("/run/containerd/runc", b.ns))
	if !b.opts.keep {
		if err := os.RemoveAll(b.dir); err != nil {
			problems = append(problems, fmt.Sprintf("remove %s: %v", b.dir, err))
		}
	}
	return problems
}

// removeEmptyDirs removes dir and the directories below it, deepest first;
// cgroupfs refuses to remove a cgroup that still has processes, so only
// empty cgroups go.
func removeEmptyDirs(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for _, d := range slices.Backward(dirs) {
		_ = syscall.Rmdir(d)
	}
}

// mountsUnder returns the mount points at or below dir from
// /proc/self/mountinfo, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mount-point options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	slices.SortStableFunc(points, func(a, b string) int { return len(b) - len(a) })
	return points
}
