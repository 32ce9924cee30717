package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// stdoutMiB is how much the throughput container writes.
const stdoutMiB = 256

// stdoutThroughput measures section 5: a container writing 256 MiB of
// zeros to stdout, drained by the client; from Start until the client
// has received the last byte. -stdout-rounds runs per runtime,
// alternating.
func (b *bench) stdoutThroughput(ctx context.Context) error {
	var rates, cpu [2][]float64
	for range b.opts.ioRounds {
		for i, rt := range runtimes {
			rate, ticks, err := b.stdoutOnce(ctx, rt)
			if err != nil {
				return fmt.Errorf("%s: %w", rt.label, err)
			}
			rates[i] = append(rates[i], rate)
			cpu[i] = append(cpu[i], cpuMillis(ticks))
		}
	}
	const sec = "5. stdout: 256 MiB from dd to the client (median of -stdout-rounds)"
	b.rep.values(sec, "throughput", "MiB/s", rates[0], rates[1])
	b.rep.values(sec, "shim CPU time for the 256 MiB", "ms", cpu[0], cpu[1])
	return nil
}

// stdoutOnce returns one run's MiB/s and the CPU time (in ticks) the
// shim spent meanwhile.
func (b *bench) stdoutOnce(ctx context.Context, rt shimRuntime) (float64, uint64, error) {
	const total = stdoutMiB << 20
	out := &byteCounter{target: total, reached: make(chan struct{})}
	s := ctrSpec{id: b.id("stdout"), stdout: out,
		args: []string{"dd", "if=/dev/zero", "bs=1048576", "count=" + strconv.Itoa(stdoutMiB)}}
	c, err := b.newContainer(ctx, rt, s)
	if err != nil {
		return 0, 0, err
	}
	x, err := b.newTask(ctx, c, s)
	if err != nil {
		_ = c.Delete(ctx, client.WithSnapshotCleanup)
		return 0, 0, err
	}
	if err := b.sockets.note(b.d.state(), b.ns, s.id, rt); err != nil {
		x.discard(ctx)
		return 0, 0, err
	}
	shim, err := b.shim(x)
	if err != nil {
		x.discard(ctx)
		return 0, 0, err
	}
	before, err := readStat(shim)
	if err != nil {
		x.discard(ctx)
		return 0, 0, err
	}
	t0 := time.Now()
	if err := x.t.Start(ctx); err != nil {
		x.discard(ctx)
		return 0, 0, fmt.Errorf("start %s: %w", s.id, err)
	}
	select {
	case <-out.reached:
	case <-ctx.Done():
		x.discard(ctx)
		return 0, 0, fmt.Errorf("%s: %d of %d bytes arrived: %w", s.id, out.n.Load(), total, ctx.Err())
	}
	d := time.Since(t0)
	after, err := readStat(shim)
	if err != nil {
		x.discard(ctx)
		return 0, 0, err
	}
	if code, err := x.wait(ctx); err != nil || code != 0 {
		x.discard(ctx)
		return 0, 0, fmt.Errorf("%s: dd exit %d, %v", s.id, code, err)
	}
	if err := x.remove(ctx); err != nil {
		return 0, 0, err
	}
	if got := out.n.Load(); got != total {
		return 0, 0, fmt.Errorf("%s: client received %d bytes on stdout, want %d", s.id, got, total)
	}
	return stdoutMiB / d.Seconds(), after.ticks - before.ticks, nil
}

// byteCounter counts what the client's stdout copy delivers and closes
// reached once target bytes have arrived.
type byteCounter struct {
	n       atomic.Int64
	target  int64
	once    sync.Once
	reached chan struct{}
}

func (w *byteCounter) Write(p []byte) (int, error) {
	if w.n.Add(int64(len(p))) >= w.target {
		w.once.Do(func() { close(w.reached) })
	}
	return len(p), nil
}

// stdinRoundTrip measures section 6: one short line written to a `cat`
// container's stdin until it is back on its stdout; 5n round trips per
// runtime, alternating, after 5 of warm-up.
func (b *bench) stdinRoundTrip(ctx context.Context) error {
	var cats [2]*catTask
	defer func() {
		for _, c := range cats {
			if c != nil {
				c.close(ctx)
			}
		}
	}()
	for i, rt := range runtimes {
		c, err := b.startCat(ctx, rt)
		if err != nil {
			return err
		}
		cats[i] = c
	}
	var samples [2][]float64
	const warmup = 5
	for round := range warmup + 5*b.opts.n {
		for i, c := range cats {
			d, err := c.roundTrip(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", runtimes[i].label, err)
			}
			if round >= warmup {
				samples[i] = append(samples[i], float64(d)/float64(time.Microsecond))
			}
		}
	}
	b.rep.latency("6. stdin: one line through `cat` and back", "round trip", "µs", samples[0], samples[1])
	return nil
}

// catTask is a running `cat` with its stdin pipe and a channel that gets
// one value per newline on its stdout.
type catTask struct {
	x     *task
	in    *io.PipeWriter
	lines chan struct{}
}

func (b *bench) startCat(ctx context.Context, rt shimRuntime) (*catTask, error) {
	pr, pw := io.Pipe()
	c := &catTask{in: pw, lines: make(chan struct{}, 64)}
	x, err := b.run(ctx, rt, ctrSpec{id: b.id("cat"), args: []string{"cat"}, stdin: pr, stdout: lineSignal(c.lines)})
	if err != nil {
		pw.Close()
		return nil, err
	}
	c.x = x
	return c, nil
}

// lineSignal is a writer that sends on lines for every newline written.
// Sends never block: a round trip waits for its line before the next
// one is written, so at most one is ever pending.
type lineSignal chan struct{}

func (l lineSignal) Write(p []byte) (int, error) {
	for range bytes.Count(p, []byte{'\n'}) {
		select {
		case l <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (c *catTask) roundTrip(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if _, err := c.in.Write([]byte("x\n")); err != nil {
		return 0, fmt.Errorf("write stdin of %s: %w", c.x.id, err)
	}
	select {
	case <-c.lines:
		return time.Since(t0), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%s: line not echoed on stdout: %w", c.x.id, ctx.Err())
	}
}

// close ends cat by closing its stdin (the client's end, then the
// shim's with CloseIO, as ctr does) and removes it; SIGKILL if that
// fails.
func (c *catTask) close(ctx context.Context) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	c.in.Close()
	if err := c.x.t.CloseIO(ctx, client.WithStdinCloser); err == nil {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = c.x.wait(wctx)
		wcancel()
		if err == nil && c.x.remove(ctx) == nil {
			return
		}
	}
	c.x.discard(ctx)
}
