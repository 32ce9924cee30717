package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/procfs"
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

func fromProcfs(p procfs.Proc) procStat {
	return procStat{pid: p.Pid, ppid: p.PPid, state: p.State, comm: p.Comm, ticks: p.Ticks}
}

// readStat reads pid's line of the process table.
func readStat(pid int) (procStat, error) {
	p, err := procfs.Read(pid)
	if err != nil {
		return procStat{}, err
	}
	return fromProcfs(p), nil
}

// listProcs returns the process table, leaving out processes that exit
// while it is read.
func listProcs() []procStat {
	var procs []procStat
	for _, p := range procfs.List() {
		procs = append(procs, fromProcfs(p))
	}
	return procs
}

// exeOf is the target of /proc/PID/exe, "" for zombies and gone processes.
func exeOf(pid int) string { return procfs.Exe(pid) }

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

// fileExists reports whether path names something that can be stat'd.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
