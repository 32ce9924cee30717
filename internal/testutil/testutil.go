// Package testutil holds what the unit tests of several packages share:
// a leak check of fds and goroutines, polling for a condition, and a real
// child process to signal. Only test files import it.
package testutil

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// WaitFor polls cond every few milliseconds until it holds, failing the
// test with what when d passes first.
func WaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// CountFDs returns how many fds the test process has open.
func CountFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ListFDs describes the open fds, for leak messages.
func ListFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// CheckNoLeaks records fds and goroutines now and, when the test ends,
// polls until both are back to that level (closing an fd or ending a
// goroutine may lag the call that asked for it).
func CheckNoLeaks(t *testing.T) {
	t.Helper()
	fds, gs := CountFDs(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			gotFDs, gotGs := CountFDs(t), runtime.NumGoroutine()
			if gotFDs <= fds && gotGs <= gs {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("leak: fds got %d, want <= %d; goroutines got %d, want <= %d\nfds:\n%s\ngoroutines:\n%s",
					gotFDs, fds, gotGs, gs, ListFDs(), buf[:n])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// StartSleeper starts a real child that lives until the test ends, so
// that pidfd_open and signals have a process to reach. The test reaps it.
func StartSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/busybox", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// WarmSignals starts os/signal's package goroutine, which lives for the
// rest of the process, before a test counts goroutines.
func WarmSignals() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, unix.SIGCHLD)
	signal.Stop(c)
}

// Mkfifo creates a fifo named name in dir, as containerd does before
// Create, and returns its path.
func Mkfifo(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// MountsAt returns the mount points in /proc/self/mountinfo at or below
// path, one entry per mount (stacked mounts repeat), with their options.
func MountsAt(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 6 {
			continue
		}
		mp := fields[4]
		if mp == path || strings.HasPrefix(mp, path+"/") {
			out = append(out, mp+" "+fields[5])
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ChildPids returns the pids whose parent is the test process, zombies
// included: a child started and never reaped shows up here.
func ChildPids(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(data[strings.LastIndexByte(string(data), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

// NeedRoot skips t unless the test runs as root, which mounting needs.
func NeedRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
}

// OpenFifoWriter opens the containerd side of the stdin fifo, polling
// until the shim's reader is there (ENXIO until then).
func OpenFifoWriter(t *testing.T, path string) *os.File {
	t.Helper()
	var f *os.File
	WaitFor(t, 10*time.Second, "a reader on "+path, func() bool {
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		return err == nil
	})
	t.Cleanup(func() { f.Close() })
	return f
}
