package tests

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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

// readProc parses /proc/<pid>/stat. comm may hold spaces and parentheses,
// so the fields after it are found from the last ')'.
func readProc(pid int) (proc, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, err
	}
	open, close := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || close < open {
		return proc{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	rest := strings.Fields(string(data[close+1:]))
	if len(rest) < 2 || len(rest[0]) != 1 {
		return proc{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return proc{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return proc{pid: pid, ppid: ppid, state: rest[0][0], comm: string(data[open+1 : close])}, nil
}

// listProcs returns the process table. Processes that exit while it is read
// are left out.
func listProcs() []proc {
	entries, _ := os.ReadDir("/proc")
	var procs []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs
}

// exeOf returns the path /proc/<pid>/exe points to, without the " (deleted)"
// the kernel appends once the file is gone; "" for zombies and kernel threads.
func exeOf(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

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
