package cgroups

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// fakeV2 is a fake unified cgroup directory with a memory.events file.
type fakeV2 struct {
	t   *testing.T
	dir string
}

func newFakeV2(t *testing.T) fakeV2 {
	f := fakeV2{t: t, dir: t.TempDir()}
	f.set(0, 0)
	return f
}

// set writes memory.events with max and oom_kill counters.
func (f fakeV2) set(max, kills int) {
	f.t.Helper()
	s := fmt.Sprintf("low 0\nhigh 0\nmax %d\noom %d\noom_kill %d\n", max, kills, kills)
	if err := os.WriteFile(filepath.Join(f.dir, "memory.events"), []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func newWatcher(t *testing.T) *OOMWatcher {
	t.Helper()
	w, err := NewOOMWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func waitCount(t *testing.T, c *atomic.Int32, want int32) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("kills = %d", want), func() bool { return c.Load() >= want })
}

// TestOOMWatcherV2: on (fake) unified cgroups, one watcher serves several:
// each rise of a cgroup's oom_kill calls that cgroup's callback once per
// kill, with the counter's value; other changes of the file do not; a
// closed watch is not called again while the others go on. cgroup v2
// cannot be booted on the test machine: v2's real files are covered in the
// guest lane (tests/vm).
func TestOOMWatcherV2(t *testing.T) {
	w := newWatcher(t)
	a, b := newFakeV2(t), newFakeV2(t)
	a.set(0, 2) // a kill before the watch is the baseline, not reported
	var ka, kb atomic.Int32
	var lastA atomic.Uint64
	xa, err := w.Watch(map[string]string{"": a.dir}, func(n uint64) { ka.Add(1); lastA.Store(n) })
	if err != nil {
		t.Fatal(err)
	}
	xb, err := w.Watch(map[string]string{"": b.dir}, func(uint64) { kb.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	a.set(3, 3)
	waitCount(t, &ka, 1)
	a.set(4, 3) // no new kill
	b.set(1, 1)
	waitCount(t, &kb, 1)
	a.set(4, 5)
	waitCount(t, &ka, 3)
	if got := lastA.Load(); got != 5 {
		t.Errorf("a's last counter = %d, want 5", got)
	}

	xa.Close()
	xa.Close() // idempotent
	a.set(9, 9)
	// b's event is handled after a's write was seen (one goroutine, one
	// epoll set): a's callback would have run by then.
	b.set(2, 2)
	waitCount(t, &kb, 2)
	if got := ka.Load(); got != 3 {
		t.Errorf("a's callback ran %d times, want 3 (none after its Close)", got)
	}
	xb.Close()
}

// TestOOMWatcherReusedFd: a watch opened after another closed (and so,
// likely, on its fd number) gets its own events only.
func TestOOMWatcherReusedFd(t *testing.T) {
	w := newWatcher(t)
	for i := range 20 {
		c := newFakeV2(t)
		var n atomic.Int32
		x, err := w.Watch(map[string]string{"": c.dir}, func(uint64) { n.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		c.set(1, 1)
		waitCount(t, &n, 1)
		x.Close()
		if got := n.Load(); got != 1 {
			t.Fatalf("round %d: %d callbacks, want 1", i, got)
		}
	}
}

// TestOOMWatcherCloseWhileFiring: Close of a watch returns only once its
// callback is not running; the watcher's Close closes what is left open,
// joins its goroutine and refuses new watches.
func TestOOMWatcherCloseWhileFiring(t *testing.T) {
	testutil.CheckNoLeaks(t)
	w, err := NewOOMWatcher()
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeV2(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var inside atomic.Bool
	x, err := w.Watch(map[string]string{"": c.dir}, func(uint64) {
		inside.Store(true)
		close(entered)
		<-release
		inside.Store(false)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.set(1, 1)
	<-entered
	closed := make(chan struct{})
	go func() { x.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while the callback ran")
	case <-time.After(50 * time.Millisecond):
		// Not a synchronisation: only a window in which a wrong Close
		// would have returned.
	}
	close(release)
	<-closed
	if inside.Load() {
		t.Fatal("the callback still runs after Close returned")
	}

	other := newFakeV2(t)
	if _, err := w.Watch(map[string]string{"": other.dir}, func(uint64) {}); err != nil {
		t.Fatal(err)
	}
	w.Close() // closes the open watch too
	w.Close()
	if _, err := w.Watch(map[string]string{"": other.dir}, func(uint64) {}); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
}

func TestOOMWatcherMissing(t *testing.T) {
	w := newWatcher(t)
	for name, paths := range map[string]map[string]string{
		"no memory cgroup": {"cpu": "/sys/fs/cgroup/cpu/x"},
		"v1 gone":          {"memory": filepath.Join(t.TempDir(), "gone")},
		"v2 gone":          {"": filepath.Join(t.TempDir(), "gone")},
	} {
		t.Run(name, func(t *testing.T) {
			if x, err := w.Watch(paths, func(uint64) {}); err == nil {
				x.Close()
				t.Fatal("Watch = nil, want an error")
			}
		})
	}
}

// TestOOMWatcherV1: a real v1 memory cgroup: a process over its limit is
// killed and the callback runs once with the counter 1, also when the
// kernel's signal came before its kill was counted (it does, often);
// removing the cgroup (which signals the eventfd too) calls nothing.
func TestOOMWatcherV1(t *testing.T) {
	testutil.NeedRoot(t)
	root := "/sys/fs/cgroup/memory"
	if _, err := os.Stat(filepath.Join(root, "cgroup.event_control")); err != nil {
		t.Skipf("no cgroup v1 memory hierarchy at %s: v1 is what this host has; the v2 guest runs the v2 path", root)
	}
	dir := filepath.Join(root, fmt.Sprintf("shimtest-oom-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		err := os.WriteFile(filepath.Join(dir, f), []byte("16777216"), 0)
		if err != nil && f == "memory.limit_in_bytes" {
			t.Fatal(err)
		}
	}
	w := newWatcher(t)
	var kills atomic.Int32
	var last atomic.Uint64
	x, err := w.Watch(map[string]string{"memory": dir}, func(n uint64) { kills.Add(1); last.Store(n) })
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	// The shell moves itself in before dd allocates its 64 MiB buffer.
	cmd := exec.Command("sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1", dir))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("dd over a 16 MiB limit exited 0: %s", out)
	}
	waitCount(t, &kills, 1)
	if got := last.Load(); got != 1 {
		t.Errorf("counter = %d, want 1", got)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	x.Close()
	if got := kills.Load(); got != 1 {
		t.Errorf("%d callbacks, want 1", got)
	}
}
