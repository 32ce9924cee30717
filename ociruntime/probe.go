package ociruntime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
)

// DirectMinors are the runc 1.x minor versions whose `start` and `delete`
// the direct paths reproduce: exactly those the end-to-end matrix runs
// (tests/install-deps.sh builds the newest 1.2, 1.3, 1.4 and 1.5; Debian
// 12 ships 1.1.5). A runc outside them, or a binary that does not say it
// is runc (crun, a wrapper that hides --version), always runs.
var DirectMinors = []int{1, 2, 3, 4, 5}

// probeTimeout bounds `runc --version`: a binary that hangs there must not
// hold a container's start for long; its containers run the binary.
const probeTimeout = 10 * time.Second

// probe is what a runtime binary said of itself. done is closed once
// version and err are set; they do not change after.
type probe struct {
	done    chan struct{}
	version runc.Version
	major   int
	minor   int
	err     error
}

// direct reports whether the direct paths reproduce this binary's start
// and delete.
func (p *probe) direct() bool {
	if p.err != nil || p.major != 1 {
		return false
	}
	for _, m := range DirectMinors {
		if p.minor == m {
			return true
		}
	}
	return false
}

// hooksOmitted reports whether the binary leaves the Hooks table out of
// state.json for a container without hooks, as runc 1.4 and later do
// (`json:"Hooks,omitempty"`); earlier ones write every hook name.
func (p *probe) hooksOmitted() bool { return p.major == 1 && p.minor >= 4 }

// binaryKey names one runtime binary file: replacing the binary on the
// node (an upgrade) gives a new key, so a long-lived shim asks again.
type binaryKey struct {
	path     string
	dev, ino uint64
	mtime    int64
	size     int64
}

// probes are the binaries asked so far, for the life of the shim: a pod's
// containers share one answer. The goroutine that fills an entry ends
// when the binary answers or probeTimeout passes; its child is reaped by
// go-runc's Monitor, the shim's reaper.
var probes = struct {
	mu       sync.Mutex
	byBinary map[binaryKey]*probe
}{byBinary: map[binaryKey]*probe{}}

// startProbe asks the binary for its version unless this Runc, or another
// for the same binary, has asked already. It does not wait.
func (r *Runc) startProbe() {
	r.probeOnce.Do(func() { r.probe = probeBinary(r.client) })
}

// probeBinary returns the probe of client's binary, starting it if no one
// has.
func probeBinary(client *runc.Runc) *probe {
	key, err := keyOf(client.Command)
	if err != nil {
		p := &probe{done: make(chan struct{}), err: err}
		close(p.done)
		return p
	}
	probes.mu.Lock()
	defer probes.mu.Unlock()
	if p := probes.byBinary[key]; p != nil {
		return p
	}
	p := &probe{done: make(chan struct{})}
	probes.byBinary[key] = p
	// Its own client: no --log into one container's bundle, and the
	// version is all it asks.
	asker := &runc.Runc{Command: key.path, Setpgid: true}
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		p.version, p.err = asker.Version(ctx)
		if p.err != nil {
			// Asked again next time: a binary that failed to
			// answer (being replaced, the machine overloaded) may.
			probes.mu.Lock()
			delete(probes.byBinary, key)
			probes.mu.Unlock()
			return
		}
		// A binary that is not runc is an answer, kept.
		p.major, p.minor, p.err = parseMinor(p.version.Runc)
	}()
	return p
}

func keyOf(command string) (binaryKey, error) {
	path, err := exec.LookPath(command)
	if err != nil {
		return binaryKey{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return binaryKey{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return binaryKey{}, fmt.Errorf("stat %s: no inode", path)
	}
	return binaryKey{path: path, dev: st.Dev, ino: st.Ino, mtime: fi.ModTime().UnixNano(), size: fi.Size()}, nil
}

// parseMinor reads "1.4.4" (or "1.1.5+ds1", "1.5.0-rc.1") as major 1,
// minor 4. An empty version is a binary that did not say "runc version".
func parseMinor(v string) (major, minor int, err error) {
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("runtime version %q: not runc's", v)
	}
	return major, minor, nil
}

// directOK reports whether the direct paths may be taken for this
// container's binary, waiting for its probe if it is still running.
func (r *Runc) directOK(ctx context.Context) bool {
	if !r.direct {
		return false
	}
	r.startProbe()
	select {
	case <-r.probe.done:
		return r.probe.direct()
	case <-ctx.Done():
		return false
	}
}

// Version returns what the container's binary said of itself, waiting
// for its probe: "" for a binary that is not runc.
func (r *Runc) Version(ctx context.Context) (string, error) {
	r.startProbe()
	select {
	case <-r.probe.done:
		return r.probe.version.Runc, r.probe.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
