package tests

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/procfs"
)

// proc is one line of the process table, from /proc/<pid>/stat.
type proc struct {
	pid   int
	ppid  int
	state byte // R, S, D, Z, ...
	comm  string
}

func (p proc) String() string {
	return fmt.Sprintf("pid %d ppid %d state %c comm %q", p.pid, p.ppid, p.state, p.comm)
}

// readProc reads pid's line of the process table.
func readProc(pid int) (proc, error) {
	p, err := procfs.Read(pid)
	if err != nil {
		return proc{}, err
	}
	return fromProcfs(p), nil
}

func fromProcfs(p procfs.Proc) proc {
	return proc{pid: p.Pid, ppid: p.PPid, state: p.State, comm: p.Comm}
}

// listProcs returns the process table. Processes that exit while it is read
// are left out.
func listProcs() []proc {
	var procs []proc
	for _, p := range procfs.List() {
		procs = append(procs, fromProcfs(p))
	}
	return procs
}

// exeOf returns the path /proc/<pid>/exe points to, without the " (deleted)"
// the kernel appends once the file is gone; "" for zombies and kernel threads.
func exeOf(pid int) string { return procfs.Exe(pid) }

// cmdlineOf returns the arguments of pid.
func cmdlineOf(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
}

// alive reports whether pid is a process that has not exited: a zombie has
// exited, and only waits for its parent to reap it.
func alive(pid int) bool {
	p, err := readProc(pid)
	return err == nil && p.state != 'Z'
}

// parentOf returns the parent pid of pid, or 0.
func parentOf(pid int) int {
	p, err := readProc(pid)
	if err != nil {
		return 0
	}
	return p.ppid
}

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point  string // where it is mounted
	fstype string // e.g. overlay, tmpfs
}

// mountsIn returns the mounts at or below dir, deepest first (the order
// they must be unmounted in).
func mountsIn(dir string) []mount {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var mounts []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root point options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mount{point: mp, fstype: fields[sep+1]})
		}
	}
	sort.SliceStable(mounts, func(i, j int) bool { return len(mounts[i].point) > len(mounts[j].point) })
	return mounts
}

// mountsUnder returns the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	var points []string
	for _, m := range mountsIn(dir) {
		points = append(points, m.point)
	}
	return points
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll detaches every mount at or below dir and returns the mount
// points it found.
func unmountAll(dir string) []string {
	mounts := mountsUnder(dir)
	for _, mp := range mounts {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
	return mounts
}
