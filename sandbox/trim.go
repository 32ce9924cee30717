package sandbox

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Idle trim: the shim gives the heap it no longer uses back to the kernel
// once a burst of work is over.
//
// A pod shim lives as long as its pod and spends nearly all of it idle,
// between bursts: containers created, exec probes, a pod's containers
// restarted. Go's collector runs only when the heap reaches its goal
// (4 MiB at first, then twice the live heap), and its scavenger keeps
// about that much mapped afterwards: after 3,000 execs the shim stayed
// 5-6 MiB above its idle RSS, for as long as the pod lived (issue 15),
// and below K≈20 containers no collection ever ran, so the garbage of
// every create stayed resident. Neither is the live heap: a collection
// and a full scavenge, once nothing is happening, return both.
const (
	// trimIdle is how long the shim must have been idle, after work, before
	// it trims: long enough that a burst (a pod's containers, a probe's
	// exec and its delete) is over, short enough that the memory is back
	// before the next probe period (kubelet's default is 10 s).
	trimIdle = 2 * time.Second
	// trimMinAlloc is how much the shim must have allocated since the
	// last trim for another to be worth a collection: a probe's exec
	// allocates some tens of KiB, so a pod probed every few seconds is
	// trimmed every minute or so, not after every probe.
	trimMinAlloc = 1 << 20
)

// trimmer runs the idle trim. Work is reported with touch, from the
// Manager's calls and exits; one goroutine, owned by the Manager (close
// stops it and waits), waits for trimIdle without a touch and then
// trims, if enough was allocated since the last trim. An idle shim has
// no timer running: the goroutine sleeps on kick until work comes.
type trimmer struct {
	cfg trimConfig

	// work counts touches; the goroutine compares it across an idle
	// wait to see whether anything happened during it.
	work atomic.Uint64
	// kick wakes the goroutine after a touch; capacity 1, sends never
	// block, never closed.
	kick chan struct{}
	// stop is closed by close; done by the goroutine when it returns.
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// trimConfig is what a trimmer runs with; tests replace the clock, the
// counter and the trim.
type trimConfig struct {
	idle     time.Duration
	minAlloc uint64
	// trim collects and returns free memory: debug.FreeOSMemory.
	trim func()
	// allocated is the heap's cumulative allocation, in bytes.
	allocated func() uint64
	// after is time.After.
	after func(time.Duration) <-chan time.Time
	// roundDone, if set, is called after each idle wait that ended a
	// burst, trimmed or not.
	roundDone func()
}

// newTrimmer starts the idle trim.
func newTrimmer(cfg trimConfig) *trimmer {
	t := &trimmer{
		cfg:  cfg,
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	// The baseline is read here, not in the goroutine: work reported
	// as soon as this returns counts.
	go t.run(cfg.allocated())
	return t
}

// newIdleTrimmer is the shim's trimmer: the runtime's own collection
// and allocation counter.
func newIdleTrimmer() *trimmer {
	return newTrimmer(trimConfig{
		idle:      trimIdle,
		minAlloc:  trimMinAlloc,
		trim:      debug.FreeOSMemory,
		allocated: heapAllocated,
		after:     time.After,
	})
}

// touch notes work: the trim waits for trimIdle after the last one. It
// never blocks, and is a no-op after close.
func (t *trimmer) touch() {
	t.work.Add(1)
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// nudge notes a read that allocates but is not work: Stats and
// SandboxMetrics, which containerd 2.4's CRI plugin sends for every
// container and pod once a second (internal/cri/server/
// stats_collector.go), for the pod's whole life. A nudge does not delay a
// trim, as a touch does: under that polling the shim is never idle for
// trimIdle, and the garbage of the reads stayed resident up to the
// collector's goal. It wakes the goroutine, which trims once an idle
// period (touches only) has passed, if minAlloc was allocated since the
// last trim, as containerd's own shims free memory every 30 s
// (pkg/shim's setRuntime). It never blocks, and is a no-op after close.
func (t *trimmer) nudge() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// run is the goroutine: last is the allocation counter at the last trim
// (or at the start).
func (t *trimmer) run(last uint64) {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-t.kick:
		}
		// Wait until a whole idle period passes without work. A touch
		// during the wait leaves its kick pending; it only makes the
		// next round begin at once, which then finds little to trim.
		for {
			n := t.work.Load()
			select {
			case <-t.stop:
				return
			case <-t.cfg.after(t.cfg.idle):
			}
			if t.work.Load() == n {
				break
			}
		}
		if now := t.cfg.allocated(); now-last >= t.cfg.minAlloc {
			t.cfg.trim()
			// What the trim itself allocated does not count.
			last = t.cfg.allocated()
		}
		if t.cfg.roundDone != nil {
			t.cfg.roundDone()
		}
	}
}

// close stops the goroutine and waits for it; a trim under way finishes
// first. Safe to call more than once.
func (t *trimmer) close() {
	t.closeOnce.Do(func() { close(t.stop) })
	<-t.done
}

// heapAllocated reads the runtime's cumulative heap allocation.
func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
