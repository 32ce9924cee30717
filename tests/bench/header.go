package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// header fills the report's description of this run.
func (b *bench) header(shim, runcShim string) {
	r := b.rep
	r.Date = time.Now().Format("2006-01-02 15:04:05 MST")
	r.Iterations = b.opts.n
	r.Sections = strings.Join(b.opts.sections, ",")
	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	cgroup := "cgroup v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cgroup = "cgroup v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		cgroup = "cgroup v1 (hybrid)"
	}
	debian, _ := os.ReadFile("/etc/debian_version")
	r.Machine = fmt.Sprintf("%s, Linux %s, %s, %d CPUs (%s), Debian %s",
		cpuModel(), utsString(uts.Release[:]), utsString(uts.Machine[:]), numCPU(), cgroup, strings.TrimSpace(string(debian)))
	r.Containerd = firstLine(output(filepath.Join(b.opts.containerd, "containerd"), "--version"))
	r.Runc = b.runc + ": " + firstLine(output(b.runc, "--version"))
	r.Binaries = fmt.Sprintf("%s %s, %s %s", runtimes[0].binary, fileSize(shim), runtimes[1].binary, fileSize(runcShim))
}

func utsString(f []int8) string {
	var s []byte
	for _, c := range f {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func numCPU() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}

func output(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return fmt.Sprintf("(%s: %v)", name, err)
	}
	return string(bytes.TrimSpace(out))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%.1f MB", float64(fi.Size())/1e6)
}
