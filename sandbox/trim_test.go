package sandbox

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

const testMinAlloc = 1 << 20

// trimHarness runs a trimmer whose clock, allocation counter and trim
// are the test's: each idle wait the trimmer begins arrives on waits,
// for the test to fire; each trim is counted on trims.
type trimHarness struct {
	t      *testing.T
	tr     *trimmer
	waits  chan chan time.Time
	rounds chan struct{}
	trims  atomic.Int32
	allocs atomic.Uint64
	// trimAllocs is what each trim allocates itself.
	trimAllocs uint64
}

func newTrimHarness(t *testing.T, trimAllocs uint64) *trimHarness {
	h := &trimHarness{t: t, waits: make(chan chan time.Time, 16), rounds: make(chan struct{}, 16), trimAllocs: trimAllocs}
	after := func(time.Duration) <-chan time.Time {
		c := make(chan time.Time, 1)
		h.waits <- c
		return c
	}
	trim := func() {
		h.allocs.Add(h.trimAllocs)
		h.trims.Add(1)
	}
	h.tr = newTrimmer(trimConfig{
		idle:      time.Second,
		minAlloc:  testMinAlloc,
		trim:      trim,
		allocated: h.allocs.Load,
		after:     after,
		roundDone: func() { h.rounds <- struct{}{} },
	})
	t.Cleanup(h.tr.close)
	return h
}

// burst is work that allocated n bytes.
func (h *trimHarness) burst(n uint64) {
	h.allocs.Add(n)
	h.tr.touch()
}

// read is a Stats call that allocated n bytes.
func (h *trimHarness) read(n uint64) {
	h.allocs.Add(n)
	h.tr.nudge()
}

// wait returns the idle wait the trimmer begins next.
func (h *trimHarness) wait() chan time.Time {
	h.t.Helper()
	select {
	case c := <-h.waits:
		return c
	case <-time.After(10 * time.Second):
		h.t.Fatal("the trimmer began no idle wait")
		return nil
	}
}

// idle lets the trimmer's current idle wait run out, with no work
// during it, and waits for the round it ends.
func (h *trimHarness) idle() {
	h.t.Helper()
	h.wait() <- time.Now()
	h.roundEnds()
}

// roundEnds waits for the trimmer to end its round.
func (h *trimHarness) roundEnds() {
	h.t.Helper()
	select {
	case <-h.rounds:
	case <-time.After(10 * time.Second):
		h.t.Fatal("the trimmer did not end its round")
	}
}

func TestTrimmer(t *testing.T) {
	tests := []struct {
		name       string
		trimAllocs uint64
		run        func(h *trimHarness)
		want       int32
	}{
		{"no work, no trim", 0, func(h *trimHarness) {}, 0},
		{"work then idle trims once", 0, func(h *trimHarness) {
			h.burst(2 * testMinAlloc)
			h.idle()
		}, 1},
		{"little allocated does not trim", 0, func(h *trimHarness) {
			h.burst(testMinAlloc / 2)
			h.idle()
		}, 0},
		{"work during the wait postpones the trim", 0, func(h *trimHarness) {
			h.burst(2 * testMinAlloc)
			first := h.wait()
			h.tr.touch()
			first <- time.Now()
			// Work happened during it: a whole idle period more.
			h.idle()
		}, 1},
		{"each burst trims", 0, func(h *trimHarness) {
			h.burst(2 * testMinAlloc)
			h.idle()
			h.burst(2 * testMinAlloc)
			h.idle()
		}, 2},
		{"small bursts add up", 0, func(h *trimHarness) {
			h.burst(testMinAlloc / 2)
			h.idle()
			h.burst(testMinAlloc / 2)
			h.idle()
		}, 1},
		{"what a trim allocates does not count", 4 * testMinAlloc, func(h *trimHarness) {
			h.burst(2 * testMinAlloc)
			h.idle()
			h.burst(testMinAlloc / 2)
			h.idle()
		}, 1},
		{"reads alone trim once enough is allocated", 0, func(h *trimHarness) {
			h.read(testMinAlloc / 2)
			h.idle()
			h.read(testMinAlloc / 2)
			h.idle()
		}, 1},
		{"a read during the wait does not postpone the trim", 0, func(h *trimHarness) {
			h.burst(2 * testMinAlloc)
			first := h.wait()
			h.read(0)
			first <- time.Now()
			h.roundEnds()
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newTrimHarness(t, tc.trimAllocs)
			tc.run(h)
			if got := h.trims.Load(); got != tc.want {
				t.Errorf("trims: got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestTrimmerClose: close returns while the trimmer waits for work and
// while it waits for an idle period; a second close and a touch after
// it return at once.
func TestTrimmerClose(t *testing.T) {
	for _, tc := range []struct {
		name    string
		waiting bool
	}{{"waiting for work", false}, {"waiting for idle", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTrimHarness(t, 0)
			if tc.waiting {
				h.burst(2 * testMinAlloc)
				h.wait()
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.tr.close()
				h.tr.close()
				for range 3 {
					h.tr.touch()
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("close did not return")
			}
			if got := h.trims.Load(); got != 0 {
				t.Errorf("trims: got %d, want 0", got)
			}
		})
	}
}

// TestManagerCloseStopsTrim: the Manager owns the idle trim; after Close
// its goroutine has returned, even with work just reported.
func TestManagerCloseStopsTrim(t *testing.T) {
	m := NewManager(context.Background(), Config{Namespace: "ns", Publisher: &fakePublisher{}})
	m.touch()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.trim.done:
	default:
		t.Error("the trim goroutine is still running after Close")
	}
	m.touch() // must not block
}
