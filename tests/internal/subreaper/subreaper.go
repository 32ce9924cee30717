// Package subreaper makes the test binary or the benchmark a child
// subreaper, the role init plays for shims in production. containerd
// starts a shim with `shim start`, which forks the long-lived shim and
// exits, so the shim is orphaned: without a subreaper it goes to pid 1,
// which on some machines reaps late or never, and an exited shim would
// look like a leaked zombie. With it, exited shims are reaped here, and
// anything else a shim orphans (a container process whose shim died)
// lands here too, where a leak check can see it.
//
// Only zombies named like a shim are reaped while running: the caller's
// own children (containerd, ctr, runc run) are waited for by os/exec and
// must not be stolen.
package subreaper

import (
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/procfs"
)

// ShimComm is what a shim's comm reads: the kernel keeps 15 bytes, so
// containerd-shim-runc-v2 and containerd-shim-sandbox-v2 both read this.
const ShimComm = "containerd-shim"

// Reaper is the loop that reaps exited shims.
type Reaper struct {
	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the loop has returned
}

// Start makes the process a child subreaper and reaps exited shims on
// every SIGCHLD and, since SIGCHLD coalesces and may come before the
// zombie is visible, every tick.
func Start(tick time.Duration) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	r := &Reaper{stop: make(chan struct{}), done: make(chan struct{})}
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigc)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				Reap(false)
				return
			case <-sigc:
			case <-t.C:
			}
			Reap(false)
		}
	}()
	return r, nil
}

// Stop ends the loop and waits for it.
func (r *Reaper) Stop() {
	close(r.stop)
	<-r.done
}

var mu sync.Mutex // serialises Reap between the loop and its callers

// Reap waits for every exited shim that is a child of this process; with
// all, for every exited child (orphaned container processes), which is
// safe only once no os/exec child is left.
func Reap(all bool) {
	mu.Lock()
	defer mu.Unlock()
	self := os.Getpid()
	for _, p := range procfs.List() {
		if p.PPid == self && p.State == 'Z' && (all || strings.HasPrefix(p.Comm, ShimComm)) {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.Pid, &ws, unix.WNOHANG, nil)
		}
	}
}
