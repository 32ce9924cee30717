package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// mayExit reports whether the shim would decide to exit now.
func (m *Manager) mayExit() bool {
	m.life.mu.Lock()
	defer m.life.mu.Unlock()
	return m.mayExitLocked()
}

// fakeClock is the lifetime's clock in tests; after hands the requested
// duration to afters and returns fire.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	afters chan time.Duration
	fire   chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), afters: make(chan time.Duration, 16), fire: make(chan time.Time)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.afters <- d
	return c.fire
}

// lifetimePod is a pod whose lifetime runs on a fake clock, with a real
// socket file for the exit to remove.
type lifetimePod struct {
	*pod
	clock *fakeClock
	sock  SocketFile
	l     *net.UnixListener
}

func newLifetimePod(t *testing.T) *lifetimePod {
	t.Helper()
	p := &lifetimePod{pod: newPod(t), clock: newFakeClock()}
	p.m.life.now = p.clock.now
	p.m.life.after = p.clock.after
	path := filepath.Join(shortDir(t), "sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	t.Cleanup(func() { l.Close() })
	p.l = l
	if p.sock, err = OwnSocket(path); err != nil {
		t.Fatal(err)
	}
	return p
}

// socketExists reports whether the pod's socket file is still there.
func (p *lifetimePod) socketExists(t *testing.T) bool {
	t.Helper()
	_, err := os.Lstat(p.sock.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// step is one event in a lifetime table test, and what it must give.
type step struct {
	name string
	do   func(t *testing.T, p *lifetimePod) error
	// want is the error do must return: nil, or an errdefs sentinel.
	want error
}

func claim(id string) step {
	return step{name: "claim " + id, do: func(t *testing.T, p *lifetimePod) error {
		return p.m.Claim(context.Background(), id)
	}}
}

func shutdown() step {
	return step{name: "shutdown", do: func(t *testing.T, p *lifetimePod) error {
		p.m.Shutdown(context.Background())
		return nil
	}}
}

func create(id string) step {
	return step{name: "create " + id, do: func(t *testing.T, p *lifetimePod) error {
		bundle := newBundle(t, nil)
		child := testutil.StartSleeper(t)
		p.engineFor(bundle).OnCreate = fakeruntime.WritePid(child.Process.Pid)
		_, err := p.m.Create(context.Background(), CreateRequest{ID: id, Bundle: bundle})
		return err
	}}
}

func failCreate(id string) step {
	return step{name: "failed create " + id, do: func(t *testing.T, p *lifetimePod) error {
		bundle := newBundle(t, nil)
		p.engineFor(bundle).OnCreate = func(context.Context, string, string, *runc.CreateOpts) error {
			return errors.New("runc create failed")
		}
		if _, err := p.m.Create(context.Background(), CreateRequest{ID: id, Bundle: bundle}); err == nil {
			t.Fatalf("create %s: got nil error, want the runtime's failure", id)
		}
		return nil
	}}
}

func remove(id string) step {
	return step{name: "delete " + id, do: func(t *testing.T, p *lifetimePod) error {
		st, err := p.m.State(context.Background(), id)
		if err != nil {
			return err
		}
		if st.State != process.Stopped {
			p.m.handleExit(reaper.Exit{Pid: st.Pid, Timestamp: time.Now()})
		}
		_, err = p.m.Delete(context.Background(), id)
		return err
	}}
}

func advance(d time.Duration) step {
	return step{name: "advance " + d.String(), do: func(t *testing.T, p *lifetimePod) error {
		p.clock.advance(d)
		return nil
	}}
}

// try runs the exit decision; exit says whether the shim must decide to
// exit (and remove its socket) now.
func try(exit bool) step {
	return step{name: fmt.Sprintf("try exit (want %v)", exit), do: func(t *testing.T, p *lifetimePod) error {
		had := p.socketExists(t)
		got := p.m.tryExit(context.Background(), p.sock)
		if got != exit {
			t.Fatalf("tryExit: got %v, want %v", got, exit)
		}
		if gone := had && !p.socketExists(t); gone != got {
			t.Fatalf("socket removed: %v, want %v (with the exit decision only)", gone, got)
		}
		return nil
	}}
}

func TestLifetimeDecision(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name:  "shutdown with nothing held exits",
			steps: []step{try(false), shutdown(), try(true)},
		},
		{
			name: "claim then shutdown",
			steps: []step{
				claim("b"), shutdown(), try(false),
				create("b"), try(false), remove("b"), try(false), shutdown(), try(true),
			},
		},
		{
			// The race of finding 12: the last container's Shutdown has
			// arrived, the exit is not decided yet, and a `start` claims.
			name: "shutdown then claim",
			steps: []step{
				create("a"), remove("a"), shutdown(), claim("b"), try(false),
				create("b"), remove("b"), try(false), shutdown(), try(true),
			},
		},
		{
			name: "claim expiry",
			steps: []step{
				claim("b"), shutdown(), try(false),
				advance(ClaimTTL - time.Second), try(false),
				advance(time.Second), try(true),
			},
		},
		{
			name: "an expired claim alone does not exit without shutdown",
			steps: []step{
				claim("b"), advance(2 * ClaimTTL), try(false), shutdown(), try(true),
			},
		},
		{
			name: "the earliest expiry does not end a later claim",
			steps: []step{
				claim("b"), advance(ClaimTTL / 2), claim("c"), shutdown(),
				advance(ClaimTTL / 2), try(false), advance(ClaimTTL / 2), try(true),
			},
		},
		{
			name: "create consumes claim",
			steps: []step{
				claim("b"), shutdown(), create("b"), try(false),
				// the claim is gone: no expiry holds the shim once b is deleted
				remove("b"), advance(time.Second), shutdown(), try(true),
			},
		},
		{
			// containerd sends Shutdown again after a failed create.
			name: "failed create waits for the next shutdown",
			steps: []step{
				claim("b"), shutdown(), failCreate("b"), try(false), shutdown(), try(true),
			},
		},
		{
			name: "claim refused once exiting",
			steps: []step{
				shutdown(), try(true),
				{name: "claim b", do: claim("b").do, want: errdefs.ErrUnavailable},
				{name: "create b", do: create("b").do, want: errdefs.ErrUnavailable},
				try(false), shutdown(), try(false),
			},
		},
		{
			name: "a container left holds the shim",
			steps: []step{
				create("a"), create("b"), remove("a"), shutdown(), try(false),
				advance(2 * ClaimTTL), try(false), remove("b"), try(false), shutdown(), try(true),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newLifetimePod(t)
			for i, s := range tt.steps {
				err := s.do(t, p)
				if (err == nil) != (s.want == nil) || (err != nil && !errors.Is(err, s.want)) {
					t.Fatalf("step %d (%s): got %v, want %v", i, s.name, err, s.want)
				}
			}
		})
	}
}

// TestLifetimeExitWaitsForLock: the exit is decided under the socket
// directory's flock. While a `start` holds it (between its dial and its
// claim), the decision waits without blocking the claim, and the claim
// then keeps the shim.
func TestLifetimeExitWaitsForLock(t *testing.T) {
	p := newLifetimePod(t)
	dir := filepath.Dir(p.sock.path)
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p.m.Shutdown(context.Background())
	decided := make(chan bool, 1)
	go func() { decided <- p.m.tryExit(context.Background(), p.sock) }()
	testutil.WaitFor(t, 10*time.Second, "the exit decision to wait for the flock", func() bool { return flockWaiters(t, dir) > 0 })
	if err := p.m.Claim(context.Background(), "b"); err != nil {
		t.Fatalf("Claim while the exit waits for the lock: %v", err)
	}
	unlock()
	if <-decided {
		t.Fatal("tryExit decided to exit over a claim made before it took the lock")
	}
	if !p.socketExists(t) {
		t.Fatal("socket removed without an exit decision")
	}
}

// flockWaiters counts the processes blocked on a flock of path's inode
// (the "->" lines of /proc/locks).
func flockWaiters(t *testing.T, path string) int {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf(":%d ", fi.Sys().(*syscall.Stat_t).Ino)
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "-> FLOCK") && strings.Contains(line+" ", ino) {
			n++
		}
	}
	return n
}

// TestWaitExit: WaitExit sleeps until the earliest claim expires, then
// decides; it returns ctx's error when ctx ends first.
func TestWaitExit(t *testing.T) {
	t.Run("claim expiry", func(t *testing.T) {
		p := newLifetimePod(t)
		if err := p.m.Claim(context.Background(), "b"); err != nil {
			t.Fatal(err)
		}
		p.m.Shutdown(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.m.WaitExit(context.Background(), p.sock) }()
		if d := <-p.clock.afters; d != ClaimTTL {
			t.Fatalf("WaitExit slept for %v, want the claim's %v", d, ClaimTTL)
		}
		p.clock.advance(ClaimTTL)
		p.clock.fire <- p.clock.now()
		if err := <-done; err != nil {
			t.Fatalf("WaitExit: %v", err)
		}
		if p.socketExists(t) {
			t.Error("socket still there after the exit decision")
		}
	})
	t.Run("shutdown wakes it", func(t *testing.T) {
		p := newLifetimePod(t)
		done := make(chan error, 1)
		go func() { done <- p.m.WaitExit(context.Background(), p.sock) }()
		p.m.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Fatalf("WaitExit: %v", err)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		p := newLifetimePod(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.m.WaitExit(ctx, p.sock) }()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitExit: got %v, want context.Canceled", err)
		}
		if !p.socketExists(t) {
			t.Error("socket removed without an exit decision")
		}
	})
}

// TestExitKeepsNextShimSocket: once a shim has decided to exit, the pod's
// next shim may bind the same path; the old shim's Exit must not remove
// the new socket.
func TestExitKeepsNextShimSocket(t *testing.T) {
	p := newLifetimePod(t)
	p.m.Shutdown(context.Background())
	if !p.m.tryExit(context.Background(), p.sock) {
		t.Fatal("tryExit: got false, want true")
	}
	l, err := listenOrFind(context.Background(), p.sock.path, "b", nil)
	if err != nil {
		t.Fatalf("listenOrFind after the exit decision: %v", err)
	}
	defer l.Close()
	p.m.Exit(context.Background(), p.sock)
	if !p.socketExists(t) {
		t.Fatal("the exiting shim removed the next shim's socket")
	}
}

// TestStartRacesExit is finding 12 in one process: a `start` finds the
// pod's shim after the last container's Shutdown, before the shim has
// decided to exit. With the claim, the shim waits for the container; with
// the dial alone (claim nil, the code before claims) it exits under the
// container, whose Create is then refused.
func TestStartRacesExit(t *testing.T) {
	for _, withClaim := range []bool{true, false} {
		t.Run(fmt.Sprintf("claim=%v", withClaim), func(t *testing.T) {
			p := newLifetimePod(t)
			ctx := context.Background()
			if err := create("a").do(t, p); err != nil {
				t.Fatal(err)
			}
			if err := remove("a").do(t, p); err != nil {
				t.Fatal(err)
			}
			p.m.Shutdown(ctx)
			var claimFn ClaimFunc
			if withClaim {
				claimFn = func(ctx context.Context, c net.Conn, id string) error {
					c.Close()
					return p.m.Claim(ctx, id)
				}
			}
			if _, err := listenOrFind(ctx, p.sock.path, "b", claimFn); !errors.Is(err, errShimRunning) {
				t.Fatalf("listenOrFind: got %v, want errShimRunning", err)
			}
			exited := p.m.tryExit(ctx, p.sock)
			err := create("b").do(t, p)
			if withClaim {
				if exited || err != nil {
					t.Fatalf("claimed: exit decided %v, create %v; want no exit and the create served", exited, err)
				}
				return
			}
			if !exited || !errdefs.IsUnavailable(err) {
				t.Fatalf("unclaimed: exit decided %v, create %v; want the exit and the create refused (the bug this guards)", exited, err)
			}
		})
	}
}

// TestListenOrFindClaim: what `start` does with each answer to its claim.
func TestListenOrFindClaim(t *testing.T) {
	tests := []struct {
		name     string
		answer   error
		dead     bool // the shim was SIGKILLed: its socket file stays, nobody listens
		wantBind bool // the old socket is replaced and a new shim is started
	}{
		{name: "claimed", answer: nil},
		{name: "shim predates claims", answer: fmt.Errorf("service: %w", errdefs.ErrNotImplemented)},
		{name: "no answer in time", answer: context.DeadlineExceeded},
		{name: "unexpected error", answer: errdefs.ErrUnknown},
		{name: "exiting", answer: errExiting, wantBind: true},
		{name: "connection closed", answer: fmt.Errorf("closed: %w", errdefs.ErrUnavailable), wantBind: true},
		{name: "dead shim", dead: true, wantBind: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "sock")
			old, err := listenOrFind(context.Background(), path, "a", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			if tt.dead {
				old.Close()
			}
			var claimed []string
			claimFn := func(ctx context.Context, c net.Conn, id string) error {
				c.Close()
				if _, ok := ctx.Deadline(); !ok {
					t.Error("claim without a deadline")
				}
				claimed = append(claimed, id)
				return tt.answer
			}
			l, err := listenOrFind(context.Background(), path, "b", claimFn)
			if tt.dead {
				if len(claimed) != 0 {
					t.Errorf("claims: got %q, want none of a dead shim", claimed)
				}
			} else if len(claimed) != 1 || claimed[0] != "b" {
				t.Errorf("claims: got %q, want one for b", claimed)
			}
			if !tt.wantBind {
				if !errors.Is(err, errShimRunning) {
					t.Fatalf("got (%v, %v), want errShimRunning", l, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want a new listener", err)
			}
			defer l.Close()
			checkServes(t, l, path)
		})
	}
}
