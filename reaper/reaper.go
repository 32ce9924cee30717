// Package reaper reaps every child of the shim. The shim is a child
// subreaper (cmd sets PR_SET_CHILD_SUBREAPER), so container processes
// whose runc parent has exited become its children; one goroutine waits
// for SIGCHLD and calls wait4(-1) until nothing is left to reap, and hands
// each exit to exactly one receiver: the caller that started that child
// through Start (runc, a logging binary), or else the handler given to
// Run (the sandbox Manager, for container processes).
package reaper

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// Exit is one reaped child: its pid, its wait status as an exit code
// (128+signal for a signal death, like a shell reports it) and when it was
// reaped.
type Exit struct {
	Pid       int
	Status    int
	Timestamp time.Time
}

// Reaper owns SIGCHLD and wait4(-1) for the whole shim. Every child the shim
// forks, runc included, must be started through it (Start/StartLocked), or
// the reaper's wait4 steals the child's status from exec.Cmd.Wait — the race
// of containerd issue #9218. It implements go-runc's ProcessMonitor so that
// cmd can install it as go-runc's Monitor once.
//
// Exits of pids started through Start go to that caller only. Every other
// exit (container processes, reparented orphans) goes to the handler given
// to Run, which must not block.
type Reaper struct {
	mu sync.Mutex
	// waiters maps the pid of a command started by Start to the channel
	// its exit is sent on. Guarded by mu; Start holds mu across fork so the
	// reap loop cannot see the pid before it is registered.
	waiters map[int]chan runc.Exit
}

// NewReaper returns a reaper; call Run to start reaping.
func NewReaper() *Reaper {
	return &Reaper{waiters: make(map[int]chan runc.Exit)}
}

// Run reaps children until done is closed, passing exits that no Start
// caller waits for to handle. The caller must already be a child
// subreaper (prctl PR_SET_CHILD_SUBREAPER), set in cmd. Run returns after
// done is closed and the signal subscription is undone.
func (r *Reaper) Run(done <-chan struct{}, handle func(Exit)) {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	// A child may have exited before Notify was installed.
	r.reapAll(handle)
	for {
		select {
		case <-done:
			return
		case <-sigs:
			r.reapAll(handle)
		}
	}
}

// reapAll collects every exited child without blocking. SIGCHLD coalesces,
// so one signal may stand for many exits.
func (r *Reaper) reapAll(handle func(Exit)) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			// A stop, not an exit: wait4 reports a ptrace stop of a
			// traced child whatever the flags, and the user namespace
			// holder of an idmapped mount (package rootfs) is one,
			// stopped at its exec until it is killed. Its exit comes
			// later; handing the stop out as one would route the real
			// exit to the handler as a stranger's.
			continue
		}
		e := Exit{Pid: pid, Status: exitStatus(ws), Timestamp: time.Now()}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		if ok {
			delete(r.waiters, pid)
		}
		r.mu.Unlock()
		if ok {
			ch <- runc.Exit{Pid: e.Pid, Status: e.Status, Timestamp: e.Timestamp}
			close(ch)
			continue
		}
		handle(e)
	}
}

func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Start starts cmd and registers its pid before the reap loop can see it.
func (r *Reaper) Start(cmd *exec.Cmd) (chan runc.Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan runc.Exit, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

// StartLocked is what go-runc calls when Runc.PdeathSignal is set. The
// shim never sets it (runc outliving a crashed shim is handled by
// `delete`), so no thread needs to stay locked and this is Start.
func (r *Reaper) StartLocked(cmd *exec.Cmd) (chan runc.Exit, error) {
	return r.Start(cmd)
}

// Wait waits for the exit of a command started by Start. It then releases
// the os.Process, whose pidfd would otherwise stay open until a GC finds
// it (its own wait fails with ECHILD, the reaper having reaped the child,
// and that path keeps the pidfd), and calls cmd.Wait, which fails too but
// still joins exec.Cmd's output-copy goroutines and closes their pipes.
func (r *Reaper) Wait(cmd *exec.Cmd, ch chan runc.Exit) (int, error) {
	e, ok := <-ch
	if !ok {
		return -1, errors.New("reaper: exit channel closed without an exit")
	}
	_ = cmd.Process.Release()
	_ = cmd.Wait()
	return e.Status, nil
}
