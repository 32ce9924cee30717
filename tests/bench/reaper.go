package main

import (
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// reaper adopts and reaps the run's shims. A shim daemon is forked by
// `shim start`, which then exits; with the bench as child subreaper the
// orphan comes here rather than to pid 1 (which here may never wait for
// it), and its pid is freed as soon as it exits. The scan waits only for
// zombies with a shim's comm: containerd and `runc run` are os/exec's to
// wait for.
type reaper struct {
	mu   sync.Mutex    // serialises scans between the loop and reapNow
	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the loop has returned
}

// shimComm is a shim's comm: the kernel keeps 15 bytes of the name, the
// same for both shims.
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
		// SIGCHLD coalesces; the tick catches what a merged signal hid.
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-sigc:
			case <-tick.C:
			}
			r.reapNow(false)
		}
	}()
	return r, nil
}

// reapNow waits for every exited shim that is a child of the bench; with
// all, for every exited child (orphaned container processes), which is
// safe only once no os/exec child is left.
func (r *reaper) reapNow(all bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	self := os.Getpid()
	for _, p := range listProcs() {
		if p.ppid == self && p.state == 'Z' && (all || strings.HasPrefix(p.comm, shimComm)) {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// Stop ends the loop, waits for it and reaps what is left.
func (r *reaper) Stop() {
	close(r.stop)
	<-r.done
	r.reapNow(true)
}
