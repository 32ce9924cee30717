package tests

import (
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reaper makes the test binary a child subreaper, the role init plays for
// shims in production. containerd starts a shim with `shim start`, which
// forks the long-lived shim and exits, so the shim is orphaned: without a
// subreaper it goes to pid 1, which on some machines (this one) reaps late
// or never, and an exited shim would look like a leaked zombie. As
// subreaper, the suite reaps exited shims itself, and anything else
// orphaned by a shim (a container process whose shim died) lands here and
// shows up in zombie checks, which is the point.
//
// Only zombies named like a shim are reaped: the test binary's own children
// (containerd, ctr) are waited for by os/exec and must not be stolen.
type reaper struct {
	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the loop has returned
}

// shimComm is what a shim's comm reads: the kernel keeps 15 bytes, so
// containerd-shim-runc-v2 and containerd-shim-sandbox-v2 both read this.
const shimComm = "containerd-shim"

func startReaper() (*reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	r := &reaper{stop: make(chan struct{}), done: make(chan struct{})}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigc)
		// SIGCHLD coalesces and may arrive before the zombie is visible,
		// so a slow tick backs it up.
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				reapShims()
				return
			case <-sigc:
			case <-tick.C:
			}
			reapShims()
		}
	}()
	return r, nil
}

// Stop ends the loop and waits for it.
func (r *reaper) Stop() {
	close(r.stop)
	<-r.done
}

var reapMu sync.Mutex // serialises reapShims between the loop and tests

// reapShims waits for every exited shim reparented to the test binary.
func reapShims() {
	reapMu.Lock()
	defer reapMu.Unlock()
	self := os.Getpid()
	for _, p := range listProcs() {
		if p.ppid == self && p.state == 'Z' && strings.HasPrefix(p.comm, shimComm) {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// strayZombies returns zombies the suite is responsible for: children of
// the test binary that are not shims (orphans of a dead shim), and
// children of any of shims. A shim must reap its containers and its runc
// calls; an orphan means something died without cleaning up.
func strayZombies(shims map[int]bool) []proc {
	self := os.Getpid()
	var out []proc
	for _, p := range listProcs() {
		if p.state != 'Z' {
			continue
		}
		if (p.ppid == self && !strings.HasPrefix(p.comm, shimComm)) || shims[p.ppid] {
			out = append(out, p)
		}
	}
	return out
}
