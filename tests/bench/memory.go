package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// podSizes are the K of section 7.
var podSizes = []int{1, 10, 30, 100}

// marginalSpans are the K ranges section 7 reports the memory per
// container over.
var marginalSpans = [][2]int{{1, 30}, {30, 100}}

// nodePods is the number of one-container pods of section 8.
const nodePods = 10

const mib = 1 << 20

// podMemory measures section 7: one pod per runtime, grown to each K
// (containers added A B A B), then, once both shims' memory has settled
// (storm.go: RSS stable for settleWindow; this shim collects and returns
// its free heap by itself once idle, sandbox/trim.go, the runc shim
// does whatever it does when idle), the shim tree's CPU time over the
// idle window and its memory at the end of it.
func (b *bench) podMemory(ctx context.Context) error {
	var pods [2][]*task
	defer func() { discardAll(ctx, slices.Concat(pods[0], pods[1])) }()
	podIDs := [2]string{b.id("pod-mem"), b.id("pod-mem")}
	var pss [2]map[int]float64
	const sec = "7. pod: K `sleep` containers in one pod, shim tree (containers excluded)"
	for _, k := range podSizes {
		for len(pods[1]) < k {
			for i, rt := range runtimes {
				x, err := b.run(ctx, rt, ctrSpec{id: b.id("mem"), pod: podIDs[i], args: sleepArgs})
				if err != nil {
					return err
				}
				pods[i] = append(pods[i], x)
			}
		}
		var trees [2][]int
		for i := range runtimes {
			var err error
			if trees[i], err = b.shimTreeOf(pods[i]); err != nil {
				return err
			}
		}
		if _, _, err := b.settled(ctx, trees, fmt.Sprintf("at K=%d", k)); err != nil {
			return err
		}
		var before [2]usage
		for i := range runtimes {
			var err error
			if before[i], err = measure(trees[i]); err != nil {
				return err
			}
		}
		if err := sleepCtx(ctx, b.opts.idle); err != nil {
			return err
		}
		var after [2]usage
		for i := range runtimes {
			var err error
			if after[i], err = measure(trees[i]); err != nil {
				return fmt.Errorf("%s: shim tree %v changed during the idle window: %w", runtimes[i].label, trees[i], err)
			}
			if pss[i] == nil {
				pss[i] = map[int]float64{}
			}
			pss[i][k] = float64(after[i].pss)
		}
		kk := fmt.Sprintf("K=%d: ", k)
		b.rep.value(sec, kk+"shim processes", "", float64(after[0].procs), float64(after[1].procs))
		b.rep.value(sec, kk+"RSS", "MiB", float64(after[0].rss)/mib, float64(after[1].rss)/mib)
		b.rep.value(sec, kk+"PSS", "MiB", float64(after[0].pss)/mib, float64(after[1].pss)/mib)
		b.rep.value(sec, kk+"USS", "MiB", float64(after[0].uss)/mib, float64(after[1].uss)/mib)
		b.rep.value(sec, kk+fmt.Sprintf("CPU over %v idle", b.opts.idle), "ms",
			cpuMillis(after[0].ticks-before[0].ticks), cpuMillis(after[1].ticks-before[1].ticks))
	}
	for _, span := range marginalSpans {
		lo, hi := span[0], span[1]
		marginal := func(i int) float64 { return (pss[i][hi] - pss[i][lo]) / float64(hi-lo) / 1024 }
		b.rep.value(sec, fmt.Sprintf("marginal PSS per container, K=%d..%d", lo, hi), "KiB", marginal(0), marginal(1))
	}
	all := slices.Concat(pods[0], pods[1])
	pods = [2][]*task{}
	return stopEach(ctx, all)
}

// nodeMemory measures section 8: nodePods one-container pods per runtime
// at once (started A B A B), memory summed over every shim tree once it
// has settled (as in section 7) and divided by the number of pods.
func (b *bench) nodeMemory(ctx context.Context) error {
	var pods [2][]*task
	defer func() { discardAll(ctx, slices.Concat(pods[0], pods[1])) }()
	for range nodePods {
		for i, rt := range runtimes {
			x, err := b.run(ctx, rt, ctrSpec{id: b.id("node"), pod: b.id("pod-node"), args: sleepArgs})
			if err != nil {
				return err
			}
			pods[i] = append(pods[i], x)
		}
	}
	var trees [2][]int
	for i := range runtimes {
		var err error
		if trees[i], err = b.shimTreeOf(pods[i]); err != nil {
			return err
		}
	}
	if _, _, err := b.settled(ctx, trees, "of the node's pods"); err != nil {
		return err
	}
	var u [2]usage
	for i, rt := range runtimes {
		var err error
		if u[i], err = measure(trees[i]); err != nil {
			return err
		}
		if u[i].procs < nodePods {
			return fmt.Errorf("%s: %d pods are served by %d shim processes, want at least one each", rt.label, nodePods, u[i].procs)
		}
	}
	sec := fmt.Sprintf("8. node: %d one-container pods at once, per pod", nodePods)
	per := func(v uint64) float64 { return float64(v) / nodePods / mib }
	b.rep.value(sec, "shim processes", "", float64(u[0].procs), float64(u[1].procs))
	b.rep.value(sec, "RSS per pod", "MiB", per(u[0].rss), per(u[1].rss))
	b.rep.value(sec, "PSS per pod", "MiB", per(u[0].pss), per(u[1].pss))
	b.rep.value(sec, "USS per pod", "MiB", per(u[0].uss), per(u[1].uss))
	all := slices.Concat(pods[0], pods[1])
	pods = [2][]*task{}
	return stopEach(ctx, all)
}

// shimTreeOf returns the shim processes serving xs: their shims and the
// shims' shim-binary descendants.
func (b *bench) shimTreeOf(xs []*task) ([]int, error) {
	var roots []int
	for _, x := range xs {
		pid, err := b.shim(x)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(roots, pid) {
			roots = append(roots, pid)
		}
	}
	return shimTree(roots, b.d.bin), nil
}

func cpuMillis(ticks uint64) float64 { return float64(ticks) * 1000 / userHZ }

// sleepCtx sleeps for d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// discardAll is stopAll for failure paths: bounded, errors dropped,
// tasks already removed skipped.
func discardAll(ctx context.Context, xs []*task) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	for _, x := range xs {
		x.discard(ctx)
	}
}
