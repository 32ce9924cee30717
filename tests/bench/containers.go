package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// shimRuntime is one of the two shims compared.
type shimRuntime struct {
	name   string // containerd runtime name
	label  string // column heading
	binary string // file name in the daemon's bin directory
	// options are the runtime options its containers are created with;
	// nil for none (the shim's defaults).
	options any
}

// runtimes are compared in this order: this shim first (A), the upstream
// runc shim second (B); every section alternates A B A B.
var runtimes = [2]shimRuntime{
	{name: "io.containerd.sandbox.v2", label: "sandbox-v2", binary: "containerd-shim-sandbox-v2"},
	{name: "io.containerd.runc.v2", label: "runc-v2", binary: "containerd-shim-runc-v2"},
}

// sleepArgs is what a container that only has to stay up runs.
var sleepArgs = []string{"sleep", "1000000"}

// podAnnotation groups containers into one pod shim, for both runtimes.
const podAnnotation = "io.kubernetes.cri.sandbox-id"

// snapshotter is what every container's rootfs comes from.
const snapshotter = "overlayfs"

// ctrSpec describes one container.
type ctrSpec struct {
	id     string
	pod    string // podAnnotation's value; "" for a standalone container
	args   []string
	stdin  io.Reader // nil: no stdin fifo
	stdout io.Writer // nil: io.Discard
	stderr io.Writer // nil: io.Discard
}

// task is a container and its task, with the exit channel subscribed
// before Start so that no exit can be missed.
type task struct {
	id    string
	pod   string // its pod, "" if standalone
	c     client.Container
	t     client.Task
	exitC <-chan client.ExitStatus
}

// newContainer makes the container (spec and a fresh snapshot) for s.
func (b *bench) newContainer(ctx context.Context, rt shimRuntime, s ctrSpec) (client.Container, error) {
	opts := []oci.SpecOpts{oci.WithImageConfig(b.img), oci.WithProcessArgs(s.args...)}
	if s.pod != "" {
		opts = append(opts, oci.WithAnnotations(map[string]string{podAnnotation: s.pod}))
	}
	c, err := b.c.NewContainer(ctx, s.id,
		client.WithImage(b.img),
		client.WithSnapshotter(snapshotter),
		client.WithNewSnapshot(s.id+"-snap", b.img),
		client.WithRuntime(rt.name, rt.options),
		client.WithNewSpec(opts...),
	)
	if err != nil {
		return nil, fmt.Errorf("%s: new container %s: %w", rt.label, s.id, err)
	}
	return c, nil
}

// newTask creates c's task with fifo IO as s asks and subscribes to its
// exit.
func (b *bench) newTask(ctx context.Context, c client.Container, s ctrSpec) (*task, error) {
	t, err := c.NewTask(ctx, b.creator(s.stdin, s.stdout, s.stderr))
	if err != nil {
		return nil, fmt.Errorf("new task %s: %w", s.id, err)
	}
	exitC, err := t.Wait(ctx)
	if err != nil {
		_, _ = t.Delete(ctx, client.WithProcessKill)
		return nil, fmt.Errorf("wait task %s: %w", s.id, err)
	}
	return &task{id: s.id, pod: s.pod, c: c, t: t, exitC: exitC}, nil
}

// creator gives a process fifo stdio in the bench's fifo directory;
// stdout and stderr default to io.Discard, so both always have a fifo.
func (b *bench) creator(stdin io.Reader, stdout, stderr io.Writer) cio.Creator {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	return cio.NewCreator(cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(b.fifoDir))
}

// run creates and starts the container s describes.
func (b *bench) run(ctx context.Context, rt shimRuntime, s ctrSpec) (*task, error) {
	c, err := b.newContainer(ctx, rt, s)
	if err != nil {
		return nil, err
	}
	x, err := b.newTask(ctx, c, s)
	if err != nil {
		_ = c.Delete(ctx, client.WithSnapshotCleanup)
		return nil, fmt.Errorf("%s: %w", rt.label, err)
	}
	if err := b.sockets.note(b.d.state(), b.ns, s.id, rt); err != nil {
		x.discard(ctx)
		return nil, err
	}
	if err := x.t.Start(ctx); err != nil {
		x.discard(ctx)
		return nil, fmt.Errorf("%s: start task %s: %w", rt.label, s.id, err)
	}
	return x, nil
}

// wait returns the task's exit code.
func (x *task) wait(ctx context.Context) (uint32, error) {
	select {
	case st := <-x.exitC:
		code, _, err := st.Result()
		if err != nil {
			return 0, fmt.Errorf("exit status of %s: %w", x.id, err)
		}
		return code, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("task %s did not exit: %w", x.id, ctx.Err())
	}
}

// remove deletes the exited task (which waits for its IO to drain) and
// the container with its snapshot.
func (x *task) remove(ctx context.Context) error {
	if _, err := x.t.Delete(ctx); err != nil {
		return fmt.Errorf("delete task %s: %w", x.id, err)
	}
	if err := x.c.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("delete container %s: %w", x.id, err)
	}
	return nil
}

// discard kills and deletes whatever is left of x, ignoring errors: for
// the failure paths, where x may be in any state.
func (x *task) discard(ctx context.Context) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	_, _ = x.t.Delete(ctx, client.WithProcessKill)
	_ = x.c.Delete(ctx, client.WithSnapshotCleanup)
}

// stop kills the task with SIGKILL, waits for its exit and removes it.
func (x *task) stop(ctx context.Context) error {
	if err := x.t.Kill(ctx, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill task %s: %w", x.id, err)
	}
	if _, err := x.wait(ctx); err != nil {
		return err
	}
	return x.remove(ctx)
}

// shim returns the pid of the shim serving x: the parent of its init
// process (both shims are subreapers of their containers). It must run a
// binary from the bench's bin directory, or the figure would be some
// other process's.
func (b *bench) shim(x *task) (int, error) {
	pid := int(x.t.Pid())
	st, err := readStat(pid)
	if err != nil {
		return 0, fmt.Errorf("task %s: init pid %d: %w", x.id, pid, err)
	}
	if exe := exeOf(st.ppid); filepath.Dir(exe) != b.d.bin {
		return 0, fmt.Errorf("task %s: parent %d of init pid %d runs %q, not a shim from %s", x.id, st.ppid, pid, exe, b.d.bin)
	}
	return st.ppid, nil
}

// stopAll stops every task concurrently, returning the first error.
func stopAll(ctx context.Context, xs []*task) error {
	errc := make(chan error, len(xs))
	for _, x := range xs {
		go func() { errc <- x.stop(ctx) }()
	}
	var first error
	for range xs {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// holders starts, per runtime, a long-running container as the first of
// a pod of its own, and returns them with a release that stops them.
func (b *bench) holders(ctx context.Context, what string) ([2]*task, func(), error) {
	return b.holdersOf(ctx, what, runtimes)
}

// holdersOf is holders for the runtimes rts.
func (b *bench) holdersOf(ctx context.Context, what string, rts [2]shimRuntime) ([2]*task, func(), error) {
	var xs [2]*task
	release := func() {
		ctx, cancel := cleanupContext(ctx)
		defer cancel()
		for _, x := range xs {
			if x != nil {
				x.discard(ctx)
			}
		}
	}
	for i, rt := range rts {
		x, err := b.run(ctx, rt, ctrSpec{id: b.id(what + "-holder"), pod: b.id("pod-" + what), args: sleepArgs})
		if err != nil {
			release()
			return xs, nil, err
		}
		xs[i] = x
	}
	return xs, release, nil
}

// cleanupContext is for cleanup that must run even once ctx is cancelled
// (a failed section, ^C), bounded so that a hung shim cannot hang it.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// stopEach stops the tasks one after another, returning the first error.
// Teardown that is not measured uses it: stopping a pod's 30 containers
// at once stalls containerd-shim-runc-v2 for tens of seconds (section 9
// measures that), which would only make the run longer.
func stopEach(ctx context.Context, xs []*task) error {
	var first error
	for _, x := range xs {
		if err := x.stop(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}
