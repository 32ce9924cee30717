package main

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// lifecyclePhases are the client calls of one /bin/true container's life,
// timed one after another; their sum is the lifecycle figure.
var lifecyclePhases = []string{"NewContainer", "NewTask+Wait", "Start", "Start to exit", "Delete task", "Delete container"}

// phased collects the per-phase samples of one figure, in milliseconds.
type phased struct {
	total  []float64
	phases [][]float64 // by phase index
}

func (p *phased) add(ds []time.Duration) {
	if p.phases == nil {
		p.phases = make([][]float64, len(ds))
	}
	var sum time.Duration
	for i, d := range ds {
		p.phases[i] = append(p.phases[i], ms(d))
		sum += d
	}
	p.total = append(p.total, ms(sum))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// stopwatch times consecutive phases.
type stopwatch struct {
	last   time.Time
	phases []time.Duration
}

func startStopwatch() *stopwatch { return &stopwatch{last: time.Now()} }

// skip restarts the current phase, leaving out the time since the last
// lap.
func (s *stopwatch) skip() { s.last = time.Now() }

// lap ends the current phase.
func (s *stopwatch) lap() {
	now := time.Now()
	s.phases = append(s.phases, now.Sub(s.last))
	s.last = now
}

// lifecycle measures sections 1 and 2 in one alternation: per round, a
// standalone container on A then B, a pod's next container on A then B,
// then (with floor) the same spec under `runc run` with no shim.
func (b *bench) lifecycle(ctx context.Context, withShims, withFloor bool) error {
	var standalone, inPod [2]phased
	var bare phased
	var holders [2]*task
	var fl *floor
	if withShims {
		var release func()
		var err error
		if holders, release, err = b.holders(ctx, "life"); err != nil {
			return err
		}
		defer release()
	}
	if withFloor {
		var err error
		if fl, err = b.newFloor(ctx); err != nil {
			return err
		}
	}
	for round := range b.opts.warmup + b.opts.n {
		keep := round >= b.opts.warmup
		if withShims {
			for i, rt := range runtimes {
				ds, err := b.lifecycleOnce(ctx, rt, "")
				if err != nil {
					return err
				}
				if keep {
					standalone[i].add(ds)
				}
			}
			for i, rt := range runtimes {
				ds, err := b.lifecycleOnce(ctx, rt, holders[i].pod)
				if err != nil {
					return err
				}
				if keep {
					inPod[i].add(ds)
				}
			}
		}
		if withFloor {
			ds, err := fl.run(ctx, b.id("floor"))
			if err != nil {
				return err
			}
			if keep {
				bare.add(ds)
			}
		}
	}

	const sec = "1. lifecycle: /bin/true, NewContainer to Delete"
	if withShims {
		b.phasedRows(sec, "standalone", lifecyclePhases, standalone)
		b.phasedRows(sec, "in pod, 2nd..Kth container", lifecyclePhases, inPod)
	}
	if withFloor {
		const fsec = "2. floor: the same spec by `runc run`, no shim"
		b.rep.latency(fsec, "mount + runc run + unmount", "ms", bare.total, nil)
		for i, name := range floorPhases {
			b.rep.latency(fsec, "· "+name, "ms", bare.phases[i], nil)
		}
		if withShims {
			f := percentile(bare.total, 50)
			b.rep.value(fsec, "standalone p50 above floor", "ms",
				percentile(standalone[0].total, 50)-f, percentile(standalone[1].total, 50)-f)
			b.rep.value(fsec, "in pod p50 above floor", "ms",
				percentile(inPod[0].total, 50)-f, percentile(inPod[1].total, 50)-f)
		}
	}
	return nil
}

// phasedRows adds a total row and a row per phase.
func (b *bench) phasedRows(sec, what string, names []string, p [2]phased) {
	b.rep.latency(sec, what+": total", "ms", p[0].total, p[1].total)
	for i, name := range names {
		b.rep.latency(sec, "· "+name, "ms", p[0].phases[i], p[1].phases[i])
	}
}

// lifecycleOnce runs /bin/true in a new container (in pod, unless pod is
// "") and returns the duration of each of lifecyclePhases.
func (b *bench) lifecycleOnce(ctx context.Context, rt shimRuntime, pod string) ([]time.Duration, error) {
	s := ctrSpec{id: b.id("life"), pod: pod, args: []string{"/bin/true"}}
	sw := startStopwatch()
	c, err := b.newContainer(ctx, rt, s)
	if err != nil {
		return nil, err
	}
	sw.lap()
	x, err := b.newTask(ctx, c, s)
	if err != nil {
		_ = c.Delete(ctx, client.WithSnapshotCleanup)
		return nil, fmt.Errorf("%s: %w", rt.label, err)
	}
	sw.lap()
	err = b.sockets.note(b.d.state(), b.ns, s.id, rt)
	sw.skip() // bookkeeping, not the lifecycle's
	if err != nil {
		x.discard(ctx)
		return nil, err
	}
	if err := x.t.Start(ctx); err != nil {
		x.discard(ctx)
		return nil, fmt.Errorf("%s: start %s: %w", rt.label, s.id, err)
	}
	sw.lap()
	code, err := x.wait(ctx)
	if err != nil {
		x.discard(ctx)
		return nil, fmt.Errorf("%s: %w", rt.label, err)
	}
	if code != 0 {
		return nil, fmt.Errorf("%s: /bin/true in %s exited %d", rt.label, s.id, code)
	}
	sw.lap()
	if _, err := x.t.Delete(ctx); err != nil {
		return nil, fmt.Errorf("%s: delete task %s: %w", rt.label, s.id, err)
	}
	sw.lap()
	if err := c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return nil, fmt.Errorf("%s: delete container %s: %w", rt.label, s.id, err)
	}
	sw.lap()
	return sw.phases, nil
}
