package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// settleWindow and settleTolerance define an idle shim's memory as
// settled: its RSS, read every settlePoll, has moved by no more than
// settleTolerance (per process, for a set summed) over the last
// settleWindow. Go's scavenger returns
// freed pages a few at a time after a burst, so a single read right
// after the burst, or after a fixed sleep, says nothing about where the
// shim ends up; polling until the reads stop moving does.
const (
	settleWindow    = 5 * time.Second
	settleTolerance = 16 << 10
	settlePoll      = 250 * time.Millisecond
	// settleLimit bounds the wait; a shim still moving then is read as
	// it is, and the run says so in a note.
	settleLimit = 90 * time.Second
)

// storm measures section 3b: per runtime, a pod container's shim idle,
// then -storm execs of /bin/true in it (-storm-workers at a time, each
// worker alternating A B), then idle again. Memory is the shim's RSS
// (one process: the pod's shim; its runc children are gone by then),
// read once settled before the storm, right after it, and once settled
// after it. CPU per exec is the shim's utime+stime+cutime+cstime over
// the storm (the runc calls and exec processes it reaped count in the
// c* fields) divided by the execs.
func (b *bench) storm(ctx context.Context) error {
	holders, release, err := b.holders(ctx, "storm")
	if err != nil {
		return err
	}
	defer release()
	var pids [2]int
	for i, x := range holders {
		if pids[i], err = b.shim(x); err != nil {
			return err
		}
	}
	trees := [2][]int{{pids[0]}, {pids[1]}}
	idle, _, err := b.settled(ctx, trees, "before the storm")
	if err != nil {
		return err
	}
	var t0, t1 [2]procStat
	var th0 [2]int
	for i, pid := range pids {
		if t0[i], err = readStat(pid); err != nil {
			return err
		}
		th0[i] = threads(pid)
	}
	n := b.opts.storm
	start := time.Now()
	if err := b.execStorm(ctx, holders, n, b.opts.stormWorkers); err != nil {
		return err
	}
	wall := time.Since(start)
	var after [2]uint64
	var th1 [2]int
	for i, pid := range pids {
		if t1[i], err = readStat(pid); err != nil {
			return err
		}
		m, err := readRollup(pid)
		if err != nil {
			return err
		}
		after[i] = m.rss
		th1[i] = threads(pid)
	}
	settled, took, err := b.settled(ctx, trees, "after the storm")
	if err != nil {
		return err
	}
	sec := fmt.Sprintf("3b. exec storm: %d execs of /bin/true per runtime, %d workers alternating A B; the pod's shim", n, b.opts.stormWorkers)
	rss := func(v [2]uint64) (float64, float64) { return float64(v[0]) / mib, float64(v[1]) / mib }
	a, c := rss(idle)
	b.rep.value(sec, "RSS idle, before", "MiB", a, c)
	a, c = rss(after)
	b.rep.value(sec, "RSS right after", "MiB", a, c)
	a, c = rss(settled)
	b.rep.value(sec, fmt.Sprintf("RSS settled after (stable %v)", settleWindow), "MiB", a, c)
	growth := func(i int) float64 { return (float64(settled[i]) - float64(idle[i])) / mib }
	b.rep.value(sec, "RSS settled minus idle", "MiB", growth(0), growth(1))
	b.rep.value(sec, "time to settle after", "s", took[0].Seconds(), took[1].Seconds())
	b.rep.value(sec, "threads before", "", float64(th0[0]), float64(th0[1]))
	b.rep.value(sec, "threads right after", "", float64(th1[0]), float64(th1[1]))
	perExec := func(i int) float64 { return cpuMillis(t1[i].ticks-t0[i].ticks) / float64(n) }
	b.rep.value(sec, "CPU per exec: shim + reaped children (runc, the exec)", "ms", perExec(0), perExec(1))
	b.notes = append(b.notes, fmt.Sprintf("exec storm: %d execs per runtime in %v, both runtimes at once", n, wall.Round(time.Second)))
	return nil
}

// execStorm runs n execs in each holder, workers at a time; each worker
// runs one in A, then one in B.
func (b *bench) execStorm(ctx context.Context, holders [2]*task, n, workers int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1)
				if k > int64(n) || ctx.Err() != nil {
					return
				}
				for i, x := range holders {
					if _, err := b.execOnce(ctx, x, fmt.Sprintf("storm%d", k)); err != nil {
						errc <- fmt.Errorf("%s: %w", runtimes[i].label, err)
						cancel()
						return
					}
				}
				if k%500 == 0 {
					fmt.Fprintf(os.Stderr, "bench: storm: %d/%d\n", k, n)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// settled is settleRSS for the two runtimes' shim trees.
func (b *bench) settled(ctx context.Context, trees [2][]int, when string) ([2]uint64, [2]time.Duration, error) {
	var last [2]uint64
	var took [2]time.Duration
	l, t, err := b.settleRSS(ctx, trees[:], []string{runtimes[0].label, runtimes[1].label}, when)
	copy(last[:], l)
	copy(took[:], t)
	return last, took, err
}

// settleRSS polls the RSS summed over each set of processes until it has
// stayed within settleTolerance per process for settleWindow, and returns the last
// reads and how long each took. One still moving after settleLimit is
// read as it is, with a note naming it.
func (b *bench) settleRSS(ctx context.Context, sets [][]int, names []string, when string) ([]uint64, []time.Duration, error) {
	last := make([]uint64, len(sets))
	took := make([]time.Duration, len(sets))
	done := make([]bool, len(sets))
	hist := make([][]uint64, len(sets))
	window := int(settleWindow / settlePoll)
	start := time.Now()
	for {
		left := 0
		for i, set := range sets {
			if done[i] {
				continue
			}
			u, err := measure(set)
			if err != nil {
				return last, took, fmt.Errorf("%s: processes %v: %w", names[i], set, err)
			}
			last[i] = u.rss
			hist[i] = append(hist[i], u.rss)
			if len(hist[i]) > window {
				hist[i] = hist[i][len(hist[i])-window-1:]
				lo, hi := slices.Min(hist[i]), slices.Max(hist[i])
				if hi-lo <= settleTolerance*uint64(len(set)) {
					done[i] = true
					took[i] = time.Since(start)
					continue
				}
			}
			left++
		}
		if left == 0 {
			return last, took, nil
		}
		if time.Since(start) > settleLimit {
			for i := range sets {
				if !done[i] {
					took[i] = time.Since(start)
					b.notes = append(b.notes, fmt.Sprintf("%s: RSS %s still moving after %v; read as it was", names[i], when, settleLimit))
				}
			}
			return last, took, nil
		}
		if err := sleepCtx(ctx, settlePoll); err != nil {
			return last, took, err
		}
	}
}

// threads is the Threads line of /proc/PID/status, 0 if unreadable.
func threads(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
