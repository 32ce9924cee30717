package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
)

// execPhases are the client calls of one exec, timed in turn.
var execPhases = []string{"Exec+Wait", "Start", "Start to exit", "Delete"}

// execHelper is the libcontainer exec engine's helper binary, installed
// beside the shim (ociruntime.ExecHelperName).
const execHelper = "containerd-shim-sandbox-v2-exec"

// libcontainerEngine is this shim choosing the libcontainer exec engine
// through its TOML runtime options.
func libcontainerEngine() shimRuntime {
	rt := runtimes[0]
	rt.label = "sandbox-v2 libcontainer"
	rt.options = &runtimeoptions.Options{ConfigBody: []byte("engine = \"libcontainer\"\n")}
	return rt
}

// execs measures section 3: Exec(/bin/true) + Wait + Start + exit +
// Delete in a running pod container, A then B each round; and, when the
// helper is installed, again with this shim's libcontainer engine as A
// (3b). Each also reports the CPU time per exec of the pod's shim and
// everything it reaped (runc or the helper, their init, /bin/true).
func (b *bench) execs(ctx context.Context) error {
	if err := b.execSection(ctx, "3. exec: /bin/true in a running pod container", "exec", runtimes); err != nil {
		return err
	}
	if !b.helper {
		return nil
	}
	rts := runtimes
	rts[0] = libcontainerEngine()
	return b.execSection(ctx, "3c. exec, this shim's libcontainer engine: /bin/true in a running pod container", "exec-lc", rts)
}

func (b *bench) execSection(ctx context.Context, sec, what string, rts [2]shimRuntime) error {
	holders, release, err := b.holdersOf(ctx, what, rts)
	if err != nil {
		return err
	}
	defer release()
	var samples [2]phased
	var cpu [2]uint64 // ticks of the measured rounds
	for round := range b.opts.warmup + b.opts.n {
		for i, x := range holders {
			before, err := shimTicks(x)
			if err != nil {
				return fmt.Errorf("%s: %w", rts[i].label, err)
			}
			ds, err := b.execOnce(ctx, x, fmt.Sprintf("x%d", round))
			if err != nil {
				return fmt.Errorf("%s: %w", rts[i].label, err)
			}
			after, err := shimTicks(x)
			if err != nil {
				return fmt.Errorf("%s: %w", rts[i].label, err)
			}
			if round >= b.opts.warmup {
				samples[i].add(ds)
				cpu[i] += after - before
			}
		}
	}
	b.phasedRows(sec, "exec", execPhases, samples)
	perExec := func(ticks uint64) float64 { return float64(ticks) * 1000 / userHZ / float64(b.opts.n) }
	b.rep.value(sec, "CPU per exec: shim + what it reaped", "ms", perExec(cpu[0]), perExec(cpu[1]))
	// The pod shim's own memory after the section's execs: the engine
	// must not raise it (the helper is a process of its own).
	var uss [2]float64
	for i, x := range holders {
		init, err := readStat(int(x.t.Pid()))
		if err != nil {
			return fmt.Errorf("%s: stat of %s's init: %w", rts[i].label, x.id, err)
		}
		u, err := readRollup(init.ppid)
		if err != nil {
			return fmt.Errorf("%s: memory of %s's shim: %w", rts[i].label, x.id, err)
		}
		uss[i] = float64(u.uss) / (1 << 20)
	}
	b.rep.value(sec, "pod shim USS after the execs", "MiB", uss[0], uss[1])
	return nil
}

// shimTicks returns the CPU ticks of the shim of x's pod and of the
// children it reaped: the parent of x's init is the shim.
func shimTicks(x *task) (uint64, error) {
	init, err := readStat(int(x.t.Pid()))
	if err != nil {
		return 0, fmt.Errorf("stat of %s's init: %w", x.id, err)
	}
	shim, err := readStat(init.ppid)
	if err != nil {
		return 0, fmt.Errorf("stat of %s's shim: %w", x.id, err)
	}
	return shim.ticks, nil
}

// execOnce runs one exec of /bin/true in x and returns the duration of
// each of execPhases.
func (b *bench) execOnce(ctx context.Context, x *task, execID string) ([]time.Duration, error) {
	spec, err := x.c.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("spec of %s: %w", x.id, err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"/bin/true"}

	sw := startStopwatch()
	p, err := x.t.Exec(ctx, execID, &pspec, b.creator(nil, nil, nil))
	if err != nil {
		return nil, fmt.Errorf("exec %s in %s: %w", execID, x.id, err)
	}
	exitC, err := p.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("wait exec %s: %w", execID, err)
	}
	sw.lap()
	if err := p.Start(ctx); err != nil {
		return nil, fmt.Errorf("start exec %s: %w", execID, err)
	}
	sw.lap()
	select {
	case st := <-exitC:
		if code, _, err := st.Result(); err != nil || code != 0 {
			return nil, fmt.Errorf("exec %s: exit %d, %v", execID, code, err)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("exec %s did not exit: %w", execID, ctx.Err())
	}
	sw.lap()
	if _, err := p.Delete(ctx); err != nil {
		return nil, fmt.Errorf("delete exec %s: %w", execID, err)
	}
	sw.lap()
	return sw.phases, nil
}

// kills measures section 4: from Kill(SIGKILL) until the exit arrives on
// Wait, for a `sleep` that is running (its comm says so) as a pod's
// second container.
func (b *bench) kills(ctx context.Context) error {
	holders, release, err := b.holders(ctx, "kill")
	if err != nil {
		return err
	}
	defer release()
	var samples [2][]float64
	for round := range b.opts.warmup + b.opts.n {
		for i, rt := range runtimes {
			d, err := b.killOnce(ctx, rt, holders[i].pod)
			if err != nil {
				return err
			}
			if round >= b.opts.warmup {
				samples[i] = append(samples[i], ms(d))
			}
		}
	}
	b.rep.latency("4. kill->exit: SIGKILL to a running pod container", "Kill to exit on Wait", "ms", samples[0], samples[1])
	return nil
}

func (b *bench) killOnce(ctx context.Context, rt shimRuntime, pod string) (time.Duration, error) {
	x, err := b.run(ctx, rt, ctrSpec{id: b.id("kill"), pod: pod, args: sleepArgs})
	if err != nil {
		return 0, err
	}
	if err := waitComm(ctx, int(x.t.Pid()), "sleep"); err != nil {
		x.discard(ctx)
		return 0, fmt.Errorf("%s: %w", rt.label, err)
	}
	t0 := time.Now()
	if err := x.t.Kill(ctx, syscall.SIGKILL); err != nil {
		x.discard(ctx)
		return 0, fmt.Errorf("%s: kill %s: %w", rt.label, x.id, err)
	}
	code, err := x.wait(ctx)
	d := time.Since(t0)
	if err != nil {
		x.discard(ctx)
		return 0, fmt.Errorf("%s: %w", rt.label, err)
	}
	if code != 128+uint32(syscall.SIGKILL) {
		return 0, fmt.Errorf("%s: %s exited %d after SIGKILL, want %d", rt.label, x.id, code, 128+syscall.SIGKILL)
	}
	if err := x.remove(ctx); err != nil {
		return 0, fmt.Errorf("%s: %w", rt.label, err)
	}
	return d, nil
}

// waitComm polls until pid's comm is comm: the container's init has
// executed its program (Start returns once runc start has, which can be
// before the execve).
func waitComm(ctx context.Context, pid int, comm string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(data)) == comm {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pid %d: comm %q, not %q: %w", pid, strings.TrimSpace(string(data)), comm, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}
