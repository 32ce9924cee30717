// Package procfs reads the process table from /proc for the end-to-end
// tests and the benchmark: who runs, whose child it is, what binary it
// runs and how much CPU it used.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Proc is one process, from /proc/PID/stat.
type Proc struct {
	Pid   int
	PPid  int
	State byte // R, S, D, Z, ...
	Comm  string
	// Ticks is utime+stime+cutime+cstime in USER_HZ (100 per second on
	// every Linux architecture): the process's own CPU time and that of
	// the children it has reaped.
	Ticks uint64
}

func (p Proc) String() string {
	return fmt.Sprintf("pid %d ppid %d state %c comm %q", p.Pid, p.PPid, p.State, p.Comm)
}

// Read parses /proc/PID/stat. comm may hold spaces and parentheses, so
// the other fields are counted from the last ')'.
func Read(pid int) (Proc, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Proc{}, err
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return Proc{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	// After comm: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 15 || len(f[0]) != 1 {
		return Proc{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	p := Proc{Pid: pid, State: f[0][0], Comm: string(data[open+1 : end])}
	if p.PPid, err = strconv.Atoi(f[1]); err != nil {
		return Proc{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return Proc{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		p.Ticks += uint64(n)
	}
	return p, nil
}

// List returns the process table, leaving out processes that exit while
// it is read.
func List() []Proc {
	entries, _ := os.ReadDir("/proc")
	var procs []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := Read(pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs
}

// Exe is the target of /proc/PID/exe without the kernel's " (deleted)";
// "" for zombies, kernel threads and processes that are gone.
func Exe(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}
