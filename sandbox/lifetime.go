package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// ClaimTTL bounds how long a claim keeps the shim from exiting when no
// Create follows it. containerd calls Create right after `start` returns,
// with only local work in between (dial the socket, write bootstrap.json,
// activate the rootfs mounts, check runtime features): milliseconds, and
// seconds on a loaded machine. A claim that outlives 30s belongs to a
// container containerd gave up on; the only cost of the bound is that a
// shim told to Shutdown lingers that long after such a failure.
const ClaimTTL = 30 * time.Second

// lifetime decides when the shim may exit, so that a `start` racing the
// exit never hands out a dying shim (DESIGN.md, Shutdown).
//
// The protocol, with the flock on the socket directory that `start`
// holds while it binds or finds a pod's shim:
//   - `start`, holding the flock, dials the socket and claims the
//     container it is starting a shim for (Manager.Claim); the daemon
//     started by `start` claims its first container itself.
//   - Create consumes the container's claim; a claim no Create follows
//     expires after ttl.
//   - The daemon exits only when containerd has said Shutdown with no
//     container left since the last Create began, no container is left or
//     being created and no claim is live. It decides under the flock:
//     re-checks, marks itself exiting (claims and creates are refused from
//     then on) and removes its socket before releasing the flock.
//
// So a `start` either reaches the shim before the decision, and its claim
// holds the shim, or after it, and finds no socket and starts a new shim.
// The in-process lock order is lifetime.mu, then Manager.mu, then the
// pod's (Pod.mu).
type lifetime struct {
	ttl   time.Duration
	now   func() time.Time
	after func(time.Duration) <-chan time.Time
	// wake is poked, never blocking (capacity 1), when a Shutdown may have
	// made the exit possible; WaitExit reads it.
	wake chan struct{}

	mu sync.Mutex
	// claims maps the id of a container a `start` handed this shim to the
	// claim's expiry. Guarded by mu.
	claims map[string]time.Time
	// creating counts the Creates admitted and not yet finished. Guarded
	// by mu.
	creating int
	// shutdown is set by a Shutdown from containerd (or a SIGTERM) that
	// finds no container left, and cleared by every admitted Create:
	// containerd says Shutdown again after that container's delete, or
	// after its failed create. Guarded by mu.
	shutdown bool
	// exiting is set once the exit is decided; never cleared. Guarded by
	// mu.
	exiting bool
}

func newLifetime() *lifetime {
	return &lifetime{
		ttl:    ClaimTTL,
		now:    time.Now,
		after:  time.After,
		wake:   make(chan struct{}, 1),
		claims: make(map[string]time.Time),
	}
}

var errExiting = fmt.Errorf("shim is exiting: %w", errdefs.ErrUnavailable)

// Claim holds the shim for container id until its Create or ClaimTTL: the
// `start` action calls it, holding the socket directory's flock, before it
// hands out the shim's address. Once the shim is exiting it is refused
// with ErrUnavailable, and that `start` starts a new shim.
func (m *Manager) Claim(ctx context.Context, id string) error {
	l := m.life
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exiting {
		return fmt.Errorf("claim %q: %w", id, errExiting)
	}
	l.claims[id] = l.now().Add(l.ttl)
	return nil
}

// Shutdown is containerd's hint, sent after each task delete (and after a
// failed create), that the shim may go. With containers left it is
// ignored; otherwise the shim goes once no claim holds it and WaitExit
// returns.
func (m *Manager) Shutdown(ctx context.Context) {
	l := m.life
	l.mu.Lock()
	n := m.containerCount()
	if n == 0 {
		l.shutdown = true
	}
	l.mu.Unlock()
	if n > 0 {
		log.G(ctx).WithField("containers", n).Debug("shutdown ignored: pod still has containers")
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// admit lets a Create in, consuming its claim, unless the shim is exiting.
// Every admit is followed by one admitted.
func (m *Manager) admit(id string) error {
	l := m.life
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exiting {
		return fmt.Errorf("create %q: %w", id, errExiting)
	}
	delete(l.claims, id)
	l.creating++
	l.shutdown = false
	return nil
}

// admitted ends a Create that admit let in; its container is in
// m.containers by now, or gone for good.
func (m *Manager) admitted() {
	l := m.life
	l.mu.Lock()
	l.creating--
	l.mu.Unlock()
}

// containerCount is the number of containers the pod holds, including
// those being created, plus one for a pod held through the Sandbox API
// until ShutdownSandbox releases it: containerd says Shutdown after every
// task delete, and the pod outlives its containers.
func (m *Manager) containerCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.containers)
	if m.pod != nil && !m.pod.released() {
		n++
	}
	return n
}

// mayExitLocked reports whether the shim may exit now, dropping expired
// claims. l.mu must be held.
func (m *Manager) mayExitLocked() bool {
	l := m.life
	now := l.now()
	for id, expiry := range l.claims {
		if !now.Before(expiry) {
			delete(l.claims, id)
		}
	}
	return l.shutdown && !l.exiting && l.creating == 0 && len(l.claims) == 0 && m.containerCount() == 0
}

// nextExpiry returns how long until the earliest live claim expires.
func (m *Manager) nextExpiry() (time.Duration, bool) {
	l := m.life
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, expiry := range l.claims {
		if first.IsZero() || expiry.Before(first) {
			first = expiry
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return max(first.Sub(l.now()), 0), true
}

// tryExit decides the exit if the shim may exit: under the socket
// directory's flock, so that no `start` is between finding the socket and
// claiming, it re-checks, marks the shim exiting and removes the socket.
func (m *Manager) tryExit(ctx context.Context, s SocketFile) bool {
	l := m.life
	l.mu.Lock()
	may := m.mayExitLocked()
	l.mu.Unlock()
	if !may {
		return false
	}
	// A `start` holding the flock may be waiting on this shim's answer to
	// its claim: the flock is taken without l.mu held.
	unlock := s.lock(ctx)
	defer unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !m.mayExitLocked() {
		return false
	}
	l.exiting = true
	s.removeLocked(ctx)
	return true
}

// WaitExit returns once the shim has decided to exit (see lifetime): it is
// marked exiting and s is removed. It returns ctx's error if ctx ends
// first.
func (m *Manager) WaitExit(ctx context.Context, s SocketFile) error {
	for {
		if m.tryExit(ctx, s) {
			return nil
		}
		var expiry <-chan time.Time
		if d, ok := m.nextExpiry(); ok {
			expiry = m.life.after(d)
		}
		select {
		case <-m.life.wake:
		case <-expiry:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Exit marks the shim exiting whatever it holds and removes s, under the
// socket directory's flock; for a shim that must stop serving (its server
// failed). Idempotent.
func (m *Manager) Exit(ctx context.Context, s SocketFile) {
	unlock := s.lock(ctx)
	defer unlock()
	l := m.life
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exiting = true
	s.removeLocked(ctx)
}

// SocketFile is the shim's socket file, as it was when the shim started
// serving on it. Once the shim has decided to exit, a `start` may bind a
// new socket at the same path for the pod's next shim: the file is
// removed only while it is still this shim's.
type SocketFile struct {
	path     string
	dev, ino uint64
}

// OwnSocket records the socket file at path as the shim's.
func OwnSocket(path string) (SocketFile, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return SocketFile{}, fmt.Errorf("shim socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode().Type() != os.ModeSocket {
		return SocketFile{}, fmt.Errorf("shim socket %q is not a socket file", path)
	}
	return SocketFile{path: path, dev: st.Dev, ino: st.Ino}, nil
}

// lock takes the flock `start` takes on the socket directory. Failing to
// take it must not keep the shim from exiting: it then goes unlocked.
func (s SocketFile) lock(ctx context.Context) func() {
	unlock, err := lockDir(filepath.Dir(s.path))
	if err != nil {
		log.G(ctx).WithError(err).Warn("exiting without the socket directory lock")
		return func() {}
	}
	return unlock
}

// removeLocked removes the socket file if it is still this shim's; the
// socket directory's flock must be held.
func (s SocketFile) removeLocked(ctx context.Context) {
	fi, err := os.Lstat(s.path)
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Dev != s.dev || st.Ino != s.ino {
		// A new shim's: this one's was removed already.
		return
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("shim socket not removed")
	}
}
