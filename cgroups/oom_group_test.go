package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeV2At is a fake unified cgroup at dir, made with a memory.events
// that counts nothing yet.
func fakeV2At(t *testing.T, dir string) fakeV2 {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := fakeV2{t: t, dir: dir}
	f.set(0, 0)
	return f
}

// counted is a watch's callback that records how often it ran and the
// last counter it was told.
type counted struct {
	calls atomic.Int32
	last  atomic.Uint64
}

func (c *counted) onKill(n uint64) { c.calls.Add(1); c.last.Store(n) }

// hold parks the watcher's goroutine in a callback of a watch of its own
// (outside the group under test) until the returned func is called:
// whatever happens to the files meanwhile is handled as one late batch,
// as when the kernel's notification is deferred or the shim is slow.
func hold(t *testing.T, w *OOMWatcher) (release func()) {
	t.Helper()
	z := newFakeV2(t)
	entered, released := make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	x, err := w.Watch(map[string]string{"": z.dir}, func(uint64) {
		if once.CompareAndSwap(false, true) {
			close(entered)
			<-released
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	z.set(1, 1)
	<-entered
	return func() { close(released) }
}

// newPod is a watcher and a fake pod slice with two container scopes.
func newPod(t *testing.T) (w *OOMWatcher, parent, a, b fakeV2) {
	t.Helper()
	w = newWatcher(t)
	parent = fakeV2At(t, filepath.Join(t.TempDir(), "pod.slice"))
	a = fakeV2At(t, filepath.Join(parent.dir, "a.scope"))
	b = fakeV2At(t, filepath.Join(parent.dir, "b.scope"))
	return w, parent, a, b
}

// watch watches c until the test ends.
func watch(t *testing.T, w *OOMWatcher, c fakeV2, onKill func(uint64)) *OOMWatch {
	t.Helper()
	x, err := w.Watch(map[string]string{"": c.dir}, onKill)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Close)
	return x
}

// flush sends one more kill through the watcher's goroutine, in a new
// scope under parent: every callback the goroutine would make for the
// writes before it has been made once this kill's callback has run.
func flush(t *testing.T, w *OOMWatcher, parent fakeV2) {
	t.Helper()
	c := fakeV2At(t, filepath.Join(parent.dir, "flush.scope"))
	var cc counted
	watch(t, w, c, cc.onKill)
	c.set(1, 1)
	waitCount(t, &cc.calls, 1)
}

// parentShowsAThenBGoes is the kernel raising the parent's counter for a
// kill of a's that the group has already read in a's own file, then b's
// scope going: the parent's rise was a's, and b must get nothing.
func parentShowsAThenBGoes(t *testing.T, parent, b fakeV2, xb *OOMWatch) {
	t.Helper()
	parent.set(1, 1)
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	if n, _ := xb.Kills(); n != 0 {
		t.Errorf("b's Kills = %d, want 0: the parent's rise was a's", n)
	}
}

// TestOOMGroupGoneChild: a container's cgroup removed before its kill
// could be read (systemd removes a scope once its last process exits)
// still gets its kill, from the parent's hierarchical counter, both at
// the exit's read (Kills) and through its callback; a live sibling's own
// kill in the same window is not taken for it.
func TestOOMGroupGoneChild(t *testing.T) {
	w, parent, a, b := newPod(t)
	var ca, cb counted
	xa, xb := watch(t, w, a, ca.onKill), watch(t, w, b, cb.onKill)

	release := hold(t, w)
	// The kernel counts a kill in the child, then in its ancestors; a's
	// scope is then removed, unread. b is killed in the same window and
	// stays.
	a.set(5, 1)
	b.set(5, 1)
	parent.set(10, 2)
	if err := os.RemoveAll(a.dir); err != nil {
		t.Fatal(err)
	}
	if n, err := xa.Kills(); err != nil || n != 1 {
		t.Errorf("a's Kills after its cgroup went = %d, %v; want 1 (the parent's rise b does not explain)", n, err)
	}
	if n, err := xb.Kills(); err != nil || n != 1 {
		t.Errorf("b's Kills = %d, %v; want 1", n, err)
	}
	release()
	waitCount(t, &ca.calls, 1)
	waitCount(t, &cb.calls, 1)

	// A kill elsewhere under the parent (a service of the slice the shim
	// does not watch) is nobody's here.
	parent.set(10, 3)
	// The goroutine settles on the parent's notification of that write;
	// settle here too, as it may not have run yet: a kill elsewhere in
	// the window between it and b's removal would be taken for b's, which
	// the group's doc owns up to. (b's own exit read, below, reads only
	// b's file while b is there.)
	xb.group.settle()
	if n, _ := xb.Kills(); n != 1 {
		t.Errorf("b's Kills after a kill elsewhere = %d, want 1", n)
	}
	// b's cgroup goes with no kill of its own: b gets nothing more.
	if err := os.RemoveAll(b.dir); err != nil {
		t.Fatal(err)
	}
	parent.set(11, 3) // an event to settle on
	if n, _ := xb.Kills(); n != 1 {
		t.Errorf("b's Kills after a kill elsewhere and its removal = %d, want 1", n)
	}
	flush(t, w, parent)
	for name, c := range map[string]*counted{"a": &ca, "b": &cb} {
		if calls, last := c.calls.Load(), c.last.Load(); calls != 1 || last != 1 {
			t.Errorf("%s's callback: %d calls, last counter %d; want 1 call with 1", name, calls, last)
		}
	}
}

// TestOOMGroupChildAhead: the kernel raises the child's counter before
// the parent's; a read between the two must not leave the parent's later
// rise for a child gone afterwards to claim.
func TestOOMGroupChildAhead(t *testing.T) {
	w, parent, a, b := newPod(t)
	var ca, cb counted
	xa, xb := watch(t, w, a, ca.onKill), watch(t, w, b, cb.onKill)

	a.set(1, 1)
	if n, _ := xa.Kills(); n != 1 {
		t.Fatalf("a's Kills = %d, want 1", n)
	}
	waitCount(t, &ca.calls, 1)
	release := hold(t, w)
	parentShowsAThenBGoes(t, parent, b, xb)
	release()
	if got := ca.calls.Load(); got != 1 {
		t.Errorf("a's callback ran %d times, want 1", got)
	}
}

// TestOOMGroupExitReadsOwn: the exit's read of a live container reads
// its own counter, not the group's: a sibling whose file will not read
// does not hide the kill, and the kill, read before the parent's counter
// shows it, is not left for a sibling gone afterwards to claim.
func TestOOMGroupExitReadsOwn(t *testing.T) {
	w, parent, a, b := newPod(t)
	var ca, cb counted
	xa, xb := watch(t, w, a, ca.onKill), watch(t, w, b, cb.onKill)

	release := hold(t, w)
	a.set(1, 1) // a's kill; the parent's counter has not risen yet
	bEvents := filepath.Join(b.dir, "memory.events")
	if err := os.Remove(bEvents); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(bEvents, 0o755); err != nil { // reads fail, not as gone
		t.Fatal(err)
	}
	if n, err := xa.Kills(); err != nil || n != 1 {
		t.Errorf("a's Kills with b unreadable = %d, %v; want 1", n, err)
	}
	if err := os.Remove(bEvents); err != nil {
		t.Fatal(err)
	}
	b.set(0, 0)
	parentShowsAThenBGoes(t, parent, b, xb)
	release()
	waitCount(t, &ca.calls, 1)
	flush(t, w, parent)
	if calls, last := ca.calls.Load(), ca.last.Load(); calls != 1 || last != 1 {
		t.Errorf("a's callback: %d calls, last counter %d; want 1 call with 1", calls, last)
	}
	if calls := cb.calls.Load(); calls != 0 {
		t.Errorf("b's callback ran %d times, want 0", calls)
	}
}

// TestOOMGroupSharedFd: the watches of one parent share one watch of the
// parent's file, closed with the last of them; a later watch under the
// same parent opens it again.
func TestOOMGroupSharedFd(t *testing.T) {
	w := newWatcher(t)
	parent := fakeV2At(t, filepath.Join(t.TempDir(), "pod.slice"))
	a := fakeV2At(t, filepath.Join(parent.dir, "a.scope"))
	b := fakeV2At(t, filepath.Join(parent.dir, "b.scope"))
	xa, err := w.Watch(map[string]string{"": a.dir}, func(uint64) {})
	if err != nil {
		t.Fatal(err)
	}
	xb, err := w.Watch(map[string]string{"": b.dir}, func(uint64) {})
	if err != nil {
		t.Fatal(err)
	}
	groups := func() int {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.groups)
	}
	if xa.group == nil || xa.group != xb.group || groups() != 1 {
		t.Fatalf("groups: a %p, b %p, %d in the watcher; want one shared", xa.group, xb.group, groups())
	}
	xa.Close()
	if groups() != 1 {
		t.Fatal("the group went with its first watch")
	}
	xb.Close()
	if groups() != 0 {
		t.Fatal("the group outlived its last watch")
	}
	xc, err := w.Watch(map[string]string{"": a.dir}, func(uint64) {})
	if err != nil {
		t.Fatal(err)
	}
	defer xc.Close()
	if xc.group == nil || groups() != 1 {
		t.Fatal("no group for a watch after the last one closed")
	}
}

// TestOOMGroupRacingFirstWatches: the first watches under a new parent,
// made at once, end in one group (the group is made outside the
// watcher's lock, so both may make one), and the extra one's fd is
// closed.
func TestOOMGroupRacingFirstWatches(t *testing.T) {
	w := newWatcher(t)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	for i := range 20 {
		parent := fakeV2At(t, filepath.Join(t.TempDir(), fmt.Sprintf("pod%d.slice", i)))
		kids := []fakeV2{fakeV2At(t, filepath.Join(parent.dir, "a.scope")), fakeV2At(t, filepath.Join(parent.dir, "b.scope"))}
		xs := make([]*OOMWatch, len(kids))
		errs := make([]error, len(kids))
		var start, done sync.WaitGroup
		start.Add(1)
		for k, c := range kids {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				xs[k], errs[k] = w.Watch(map[string]string{"": c.dir}, func(uint64) {})
			}()
		}
		start.Done()
		done.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if xs[0].group == nil || xs[0].group != xs[1].group {
			t.Fatalf("round %d: groups %p and %p, want one shared", i, xs[0].group, xs[1].group)
		}
		for _, x := range xs {
			x.Close()
		}
	}
	if after := fds(); after != before {
		t.Errorf("open fds: %d before, %d after every watch closed", before, after)
	}
}
