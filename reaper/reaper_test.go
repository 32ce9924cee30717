package reaper

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

var _ runc.ProcessMonitor = (*Reaper)(nil)

// exitLog collects what the Run handler is given.
type exitLog struct {
	mu    sync.Mutex
	exits []Exit
}

func (l *exitLog) handle(e Exit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exits = append(l.exits, e)
}

func (l *exitLog) all() []Exit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Exit(nil), l.exits...)
}

// of returns the exits recorded for pid.
func (l *exitLog) of(pid int) []Exit {
	var out []Exit
	for _, e := range l.all() {
		if e.Pid == pid {
			out = append(out, e)
		}
	}
	return out
}

// runReaper runs r.Run until the returned stop is called (or the test
// ends) and fails the test if Run does not return after done is closed.
func runReaper(t *testing.T, r *Reaper, l *exitLog) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		r.Run(done, l.handle)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			select {
			case <-returned:
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of done being closed")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestReaperStartWait(t *testing.T) {
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	r := NewReaper()
	var l exitLog
	stop := runReaper(t, r, &l)

	tests := []struct {
		name string
		args []string
		sig  syscall.Signal // sent once started; 0 for none
		want int
	}{
		{name: "exit 0", args: []string{"/bin/busybox", "true"}, want: 0},
		{name: "exit 3", args: []string{"/bin/sh", "-c", "exit 3"}, want: 3},
		{name: "exit 255", args: []string{"/bin/sh", "-c", "exit 255"}, want: 255},
		{name: "SIGKILL", args: []string{"/bin/busybox", "sleep", "60"}, sig: unix.SIGKILL, want: 128 + 9},
		{name: "SIGTERM", args: []string{"/bin/busybox", "sleep", "60"}, sig: unix.SIGTERM, want: 128 + 15},
	}
	var pids []int
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.args[0], tt.args[1:]...)
			ch, err := r.Start(cmd)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			pids = append(pids, cmd.Process.Pid)
			if tt.sig != 0 {
				if err := unix.Kill(cmd.Process.Pid, tt.sig); err != nil {
					t.Fatalf("kill: %v", err)
				}
			}
			got, err := r.Wait(cmd, ch)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if got != tt.want {
				t.Errorf("exit status: got %d, want %d", got, tt.want)
			}
		})
	}
	// Run handles a reaped child synchronously, so once it has returned
	// the handler has seen every exit it ever will.
	stop()
	for _, pid := range pids {
		if got := l.of(pid); len(got) != 0 {
			t.Errorf("handler got %v for pid %d started through Start, want nothing", got, pid)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiters) != 0 {
		t.Errorf("waiters left after every Wait: got %d, want 0", len(r.waiters))
	}
}

func TestReaperStartFailureRegistersNothing(t *testing.T) {
	r := NewReaper()
	cmd := exec.Command("/nonexistent/binary")
	if _, err := r.Start(cmd); err == nil {
		t.Fatal("Start of a missing binary: got nil error")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiters) != 0 {
		t.Errorf("waiters: got %d, want 0", len(r.waiters))
	}
}

func TestReaperWaitClosedChannel(t *testing.T) {
	r := NewReaper()
	ch := make(chan runc.Exit)
	close(ch)
	got, err := r.Wait(&exec.Cmd{}, ch)
	if err == nil {
		t.Fatal("Wait on a closed channel: got nil error")
	}
	if got != -1 {
		t.Errorf("status: got %d, want -1", got)
	}
}

// TestReaperHandlerGetsOtherChildren: a child the reaper did not start
// (a container process, an orphan) goes to the handler with its status.
func TestReaperHandlerGetsOtherChildren(t *testing.T) {
	testutil.WarmSignals()
	r := NewReaper()
	var l exitLog
	runReaper(t, r, &l)

	tests := []struct {
		name string
		args []string
		sig  syscall.Signal
		want int
	}{
		{name: "exit 0", args: []string{"/bin/busybox", "true"}, want: 0},
		{name: "exit 3", args: []string{"/bin/sh", "-c", "exit 3"}, want: 3},
		{name: "SIGKILL", args: []string{"/bin/busybox", "sleep", "60"}, sig: unix.SIGKILL, want: 137},
		{name: "SIGUSR1", args: []string{"/bin/busybox", "sleep", "60"}, sig: unix.SIGUSR1, want: 128 + 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.args[0], tt.args[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The reaper reaps it; release the pidfd os.Process holds.
			defer cmd.Process.Release()
			pid := cmd.Process.Pid
			if tt.sig != 0 {
				if err := unix.Kill(pid, tt.sig); err != nil {
					t.Fatal(err)
				}
			}
			testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("exit of pid %d", pid), func() bool { return len(l.of(pid)) > 0 })
			got := l.of(pid)
			if len(got) != 1 {
				t.Fatalf("exits for pid %d: got %d (%v), want 1", pid, len(got), got)
			}
			if got[0].Status != tt.want {
				t.Errorf("status: got %d, want %d", got[0].Status, tt.want)
			}
			if got[0].Timestamp.IsZero() {
				t.Error("timestamp is zero")
			}
		})
	}
}

// TestReaperChildExitedBeforeRun: an exit that happened before Run
// subscribed to SIGCHLD is still collected.
func TestReaperChildExitedBeforeRun(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "exit 7")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Release()
	pid := cmd.Process.Pid
	testutil.WaitFor(t, 10*time.Second, "child to become a zombie", func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(data)
		return strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
	})
	r := NewReaper()
	var l exitLog
	runReaper(t, r, &l)
	testutil.WaitFor(t, 10*time.Second, "the early exit", func() bool { return len(l.of(pid)) > 0 })
	if got := l.of(pid); len(got) != 1 || got[0].Status != 7 {
		t.Errorf("exits of pid %d: got %v, want one with status 7", pid, got)
	}
}

// TestReaperManyChildren: 50 children through Start and 50 plain ones, all
// at once; each exit is reported exactly once, to the right party, with
// the right status.
func TestReaperManyChildren(t *testing.T) {
	const n = 50
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	r := NewReaper()
	var l exitLog
	stop := runReaper(t, r, &l)

	type result struct {
		pid, status int
		err         error
	}
	started := make(chan result, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", i))
			ch, err := r.Start(cmd)
			if err != nil {
				started <- result{err: err}
				return
			}
			st, err := r.Wait(cmd, ch)
			started <- result{pid: cmd.Process.Pid, status: st, err: err}
		}()
	}
	plain := map[int]int{} // pid -> wanted status
	var plainCmds []*exec.Cmd
	for i := 0; i < n; i++ {
		cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf("exit %d", 100+i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		plain[cmd.Process.Pid] = 100 + i
		plainCmds = append(plainCmds, cmd)
	}
	wg.Wait()
	close(started)

	startedPids := map[int]bool{}
	statuses := map[int]bool{}
	for res := range started {
		if res.err != nil {
			t.Errorf("Start/Wait: %v", res.err)
			continue
		}
		startedPids[res.pid] = true
		statuses[res.status] = true
	}
	for i := 0; i < n; i++ {
		if !statuses[i] {
			t.Errorf("no Start caller got status %d", i)
		}
	}
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("%d plain exits", n), func() bool { return len(l.all()) >= n })
	stop()
	for _, c := range plainCmds {
		_ = c.Process.Release()
	}

	seen := map[int]int{}
	for _, e := range l.all() {
		seen[e.Pid]++
		want, ok := plain[e.Pid]
		switch {
		case startedPids[e.Pid]:
			t.Errorf("handler got pid %d, which was started through Start", e.Pid)
		case !ok:
			t.Errorf("handler got unknown pid %d", e.Pid)
		case e.Status != want:
			t.Errorf("pid %d: status got %d, want %d", e.Pid, e.Status, want)
		}
	}
	for pid := range plain {
		if seen[pid] != 1 {
			t.Errorf("pid %d reported %d times, want 1", pid, seen[pid])
		}
	}
}

// TestReaperSkipsPtraceStop: wait4 reports the ptrace stop of a traced
// child whatever the flags. The reaper must not hand that stop to the
// child's Start caller as its exit (rootfs's user namespace holder is
// stopped so until killed): the caller gets the real exit, the handler
// nothing.
func TestReaperSkipsPtraceStop(t *testing.T) {
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	r := NewReaper()
	var l exitLog
	stop := runReaper(t, r, &l)

	cmd := exec.Command("/bin/busybox", "true")
	// PTRACE_TRACEME stops the child at its exec; the tracer is the
	// thread that forked it, kept until the child is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := cmd.Process.Pid
	// Wait until the child is in its trace stop and the reaper has
	// collected that stop: a peek (WNOWAIT) then finds nothing to report.
	testutil.WaitFor(t, 10*time.Second, "the reaper to collect the ptrace stop", func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(fields) == 0 || fields[0] != "t" {
			return false
		}
		var info unix.Siginfo
		err = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT, nil)
		return err == nil && info.Signo == 0
	})
	select {
	case e := <-ch:
		t.Fatalf("the ptrace stop was handed out as an exit: %+v", e)
	default:
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatalf("kill: %v", err)
	}
	got, err := r.Wait(cmd, ch)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if want := 128 + int(unix.SIGKILL); got != want {
		t.Errorf("exit status: got %d, want %d", got, want)
	}
	stop()
	if got := l.of(pid); len(got) != 0 {
		t.Errorf("handler got %v for the traced child, want nothing", got)
	}
}
