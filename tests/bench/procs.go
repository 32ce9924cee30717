package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for user space on every architecture.
const userHZ = 100

// procStat is what the bench reads from /proc/PID/stat.
type procStat struct {
	pid   int
	ppid  int
	state byte // R, S, D, Z, ...
	comm  string
	// ticks is utime+stime+cutime+cstime: the process's own CPU time and
	// that of the children it has reaped (the runc calls of a shim).
	ticks uint64
}

// readStat parses /proc/PID/stat. comm may hold spaces and parentheses,
// so the other fields are counted from the last ')'.
func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	// After comm: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(string(data[end+1:]))
	if len(f) < 15 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %q", pid, data)
	}
	p := procStat{pid: pid, state: f[0][0], comm: string(data[open+1 : end])}
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		p.ticks += uint64(n)
	}
	return p, nil
}

// listProcs returns the process table, leaving out processes that exit
// while it is read.
func listProcs() []procStat {
	entries, _ := os.ReadDir("/proc")
	var procs []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readStat(pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs
}

// exeOf is the target of /proc/PID/exe without the kernel's " (deleted)";
// "" for zombies, kernel threads and gone processes.
func exeOf(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

// shimPids returns the live processes running a binary from bin: this
// run's shims and nothing else.
func shimPids(bin string) []int {
	var pids []int
	for _, p := range listProcs() {
		if p.state != 'Z' && filepath.Dir(exeOf(p.pid)) == bin {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// shimTree returns roots and, below them, every descendant that runs a
// binary from bin. Container processes (runc init and what it executes)
// are not shims and are left out, as is anything below them.
func shimTree(roots []int, bin string) []int {
	children := map[int][]int{}
	for _, p := range listProcs() {
		if p.state != 'Z' {
			children[p.ppid] = append(children[p.ppid], p.pid)
		}
	}
	seen := map[int]bool{}
	var tree []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		tree = append(tree, pid)
		for _, c := range children[pid] {
			if filepath.Dir(exeOf(c)) == bin {
				queue = append(queue, c)
			}
		}
	}
	return tree
}

// usage is memory and CPU summed over a set of processes. Memory is in
// bytes, from /proc/PID/smaps_rollup; USS is Private_Clean+Private_Dirty.
type usage struct {
	procs         int
	rss, pss, uss uint64
	ticks         uint64
}

// measure sums usage over pids. A process that cannot be read is an
// error: every pid given is a live shim the caller just found.
func measure(pids []int) (usage, error) {
	var u usage
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil {
			return usage{}, err
		}
		m, err := readRollup(pid)
		if err != nil {
			return usage{}, err
		}
		u.procs++
		u.ticks += st.ticks
		u.rss += m.rss
		u.pss += m.pss
		u.uss += m.uss
	}
	return u, nil
}

// readRollup reads Rss, Pss and the private lines of
// /proc/PID/smaps_rollup.
func readRollup(pid int) (usage, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return usage{}, err
	}
	defer f.Close()
	var u usage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "Rss":
			dst = &u.rss
		case "Pss":
			dst = &u.pss
		case "Private_Clean", "Private_Dirty":
			dst = &u.uss
		default:
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return usage{}, fmt.Errorf("parse /proc/%d/smaps_rollup %q: %w", pid, sc.Text(), err)
		}
		*dst += kb << 10
	}
	if err := sc.Err(); err != nil {
		return usage{}, err
	}
	if u.rss == 0 {
		return usage{}, fmt.Errorf("/proc/%d/smaps_rollup: no Rss line", pid)
	}
	return u, nil
}
