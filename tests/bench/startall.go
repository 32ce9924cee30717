package main

import (
	"context"
	"fmt"
	"time"
)

// startAllK is the pod size of section 9.
const startAllK = 30

// startAll measures section 9: the wall time from nothing to K running
// `sleep` containers of one pod: the first (which starts the pod's shim),
// then the other K-1 created and started concurrently, as a pod's
// containers reach the shim together. Then the time to stop them all,
// SIGKILL and Delete concurrently, as the kubelet kills a pod's
// containers in parallel. -rounds pods per runtime, alternating.
func (b *bench) startAll(ctx context.Context) error {
	var starts, stops [2][]float64
	for range b.opts.rounds {
		for i, rt := range runtimes {
			d, xs, err := b.startPod(ctx, rt, startAllK)
			if err != nil {
				discardAll(ctx, xs)
				return err
			}
			t0 := time.Now()
			if err := stopAll(ctx, xs); err != nil {
				discardAll(ctx, xs)
				return fmt.Errorf("%s: %w", rt.label, err)
			}
			starts[i] = append(starts[i], ms(d))
			stops[i] = append(stops[i], ms(time.Since(t0)))
		}
	}
	sec := fmt.Sprintf("9. start-all: %d containers of one pod (1st, then %d concurrently); -rounds pods", startAllK, startAllK-1)
	b.rep.latency(sec, fmt.Sprintf("start all K=%d", startAllK), "ms", starts[0], starts[1])
	b.rep.latency(sec, fmt.Sprintf("stop all K=%d (SIGKILL+Delete, concurrent)", startAllK), "ms", stops[0], stops[1])
	return nil
}

// startPod starts a pod of k sleep containers and returns how long that
// took and the tasks it did start (also on error, for cleanup).
func (b *bench) startPod(ctx context.Context, rt shimRuntime, k int) (time.Duration, []*task, error) {
	pod := b.id("pod-start")
	spec := func() ctrSpec { return ctrSpec{id: b.id("start"), pod: pod, args: sleepArgs} }
	t0 := time.Now()
	first, err := b.run(ctx, rt, spec())
	if err != nil {
		return 0, nil, err
	}
	xs := []*task{first}
	type result struct {
		x   *task
		err error
	}
	results := make(chan result, k-1)
	for range k - 1 {
		s := spec()
		go func() {
			x, err := b.run(ctx, rt, s)
			results <- result{x, err}
		}()
	}
	var firstErr error
	for range k - 1 {
		r := <-results
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		if r.x != nil {
			xs = append(xs, r.x)
		}
	}
	return time.Since(t0), xs, firstErr
}
