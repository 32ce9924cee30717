package tests

import (
	"bytes"
	"cmp"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// ctrSpec describes one container for env.create.
type ctrSpec struct {
	id    string
	args  []string
	pod   string    // value of the io.kubernetes.cri.sandbox-id annotation; "" for none
	stdin io.Reader // nil: no stdin
	opts  []oci.SpecOpts
	// runtimeOpts are the runtime options (e.g. *options.Options of the
	// runc shim) containerd passes to the shim; nil for none.
	runtimeOpts any
	// terminal gives the task a pty: stdout and stderr arrive merged on
	// stdout, with the tty's line discipline applied.
	terminal bool
	// runtime is the container's runtime; "" for the runtime under test.
	runtime string
}

// running is a container with a task, its captured output and its exit
// channel (subscribed before Start, so no exit can be missed).
type running struct {
	e         *env
	id        string
	container client.Container
	task      client.Task
	stdout    *syncBuffer
	stderr    *syncBuffer
	exitC     <-chan client.ExitStatus
}

// create makes a container from the busybox image with the runtime under
// test, and its task with fifo IO into buffers; the task is not started.
func (e *env) create(s ctrSpec) *running {
	e.t.Helper()
	img := e.image()
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(s.args...)}
	if s.pod != "" {
		specOpts = append(specOpts, oci.WithAnnotations(map[string]string{podAnnotation: s.pod}))
	}
	if s.terminal {
		specOpts = append(specOpts, oci.WithTTY)
	}
	specOpts = append(specOpts, s.opts...)
	container, err := e.c.NewContainer(e.ctx, s.id,
		client.WithImage(img),
		client.WithSnapshotter(snapshotter),
		client.WithNewSnapshot(s.id+"-snapshot", img),
		client.WithRuntime(cmp.Or(s.runtime, runtimeUnderTest()), runtimeOptionsFor(e.t, s.runtimeOpts)),
		client.WithNewSpec(specOpts...),
	)
	if err != nil {
		e.t.Fatalf("create container %s: %v", s.id, err)
	}
	r := &running{e: e, id: s.id, container: container, stdout: newSyncBuffer(), stderr: newSyncBuffer()}
	fifoDir := filepath.Join(e.d.dir, "fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	var stdin io.Reader
	var closer *stdinCloser
	if s.stdin != nil {
		closer = newStdinCloser(s.stdin)
		stdin = closer
	}
	ioOpts := []cio.Opt{cio.WithStreams(stdin, r.stdout, r.stderr), cio.WithFIFODir(fifoDir)}
	if s.terminal {
		ioOpts = append(ioOpts, cio.WithTerminal)
	}
	r.task, err = container.NewTask(e.ctx, cio.NewCreator(ioOpts...))
	if closer != nil {
		if err == nil {
			closer.proc, closer.ctx = r.task, e.ctx
		}
		close(closer.ready)
	}
	if err != nil {
		container.Delete(e.ctx, client.WithSnapshotCleanup)
		skipIfNotImplemented(e.t, err, "create task "+s.id)
		e.t.Fatalf("create task %s: %v", s.id, err)
	}
	e.noteSocket(s.id)
	r.exitC, err = r.task.Wait(e.ctx)
	if err != nil {
		e.t.Fatalf("wait task %s: %v", s.id, err)
	}
	return r
}

// run is create then start.
func (e *env) run(s ctrSpec) *running {
	e.t.Helper()
	r := e.create(s)
	r.start()
	return r
}

func (r *running) start() {
	r.e.t.Helper()
	if err := r.task.Start(r.e.ctx); err != nil {
		r.e.t.Fatalf("start task %s: %v", r.id, err)
	}
}

// wait returns the task's exit code, failing the test if it does not exit
// within timeout.
func (r *running) wait(timeout time.Duration) uint32 {
	r.e.t.Helper()
	select {
	case st := <-r.exitC:
		code, _, err := st.Result()
		if err != nil {
			r.e.t.Fatalf("task %s exit status: %v", r.id, err)
		}
		return code
	case <-time.After(timeout):
		r.e.t.Fatalf("task %s did not exit within %v", r.id, timeout)
		return 0
	}
}

// kill sends sig to the task's init process.
func (r *running) kill(sig syscall.Signal) {
	r.e.t.Helper()
	if err := r.task.Kill(r.e.ctx, sig); err != nil {
		r.e.t.Fatalf("kill task %s with %v: %v", r.id, sig, err)
	}
}

// delete deletes the task (which waits for its output to be copied) and
// the container with its snapshot.
func (r *running) delete() {
	r.e.t.Helper()
	if _, err := r.task.Delete(r.e.ctx); err != nil {
		r.e.t.Fatalf("delete task %s: %v", r.id, err)
	}
	if err := r.container.Delete(r.e.ctx, client.WithSnapshotCleanup); err != nil {
		r.e.t.Fatalf("delete container %s: %v", r.id, err)
	}
}

// shimPid returns the shim serving the task: the parent of the
// container's init process (the shim is its subreaper once runc exits).
// It fails the test unless that parent runs the runtime under test's
// binary from the daemon's bin directory, so the suite can never pass by
// testing some other shim.
func (r *running) shimPid() int {
	r.e.t.Helper()
	pid := int(r.task.Pid())
	ppid := parentOf(pid)
	if ppid == 0 {
		r.e.t.Fatalf("task %s: no parent for init pid %d", r.id, pid)
	}
	want := filepath.Join(r.e.d.bin, shimBinaryName(runtimeUnderTest()))
	if got := exeOf(ppid); got != want {
		r.e.t.Fatalf("task %s: parent of init pid %d is pid %d running %q, want the shim %s", r.id, pid, ppid, got, want)
	}
	return ppid
}

// status returns the task's status as containerd reports it.
func (r *running) status() client.ProcessStatus {
	r.e.t.Helper()
	st, err := r.task.Status(r.e.ctx)
	if err != nil {
		r.e.t.Fatalf("status of task %s: %v", r.id, err)
	}
	return st.Status
}

// stdinCloser passes r to the task's stdin and, at r's EOF, closes the
// task's stdin with CloseIO, as ctr does: the shim holds its own write end
// of the stdin fifo (so the fifo survives a client reconnecting), hence
// the client closing its end alone never gives the container EOF. The
// copy can reach EOF before NewTask has returned the task, so it waits
// for ready.
type stdinCloser struct {
	r     io.Reader
	ready chan struct{}  // closed once proc and ctx are set (proc nil if creating it failed)
	proc  client.Process // the task or exec whose stdin this is
	ctx   context.Context
}

func newStdinCloser(r io.Reader) *stdinCloser {
	return &stdinCloser{r: r, ready: make(chan struct{})}
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		<-s.ready
		if s.proc != nil {
			_ = s.proc.CloseIO(s.ctx, client.WithStdinCloser)
		}
	}
	return n, err
}

// syncBuffer is a bytes.Buffer safe for one writer (the cio copy
// goroutine) and concurrent readers, which can wait for content.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer  // guarded by mu
	changed chan struct{} // closed and replaced on every write; guarded by mu
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return n, err
}

// Bytes returns a copy of what was written so far.
func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// waitFor blocks until the buffer contains sub, or ctx is done.
func (b *syncBuffer) waitFor(ctx context.Context, sub []byte) error {
	for {
		b.mu.Lock()
		found, changed := bytes.Contains(b.buf.Bytes(), sub), b.changed
		b.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitOutput waits up to timeout for sub on r's stdout.
func (r *running) waitOutput(t *testing.T, sub string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(r.e.ctx, timeout)
	defer cancel()
	if err := r.stdout.waitFor(ctx, []byte(sub)); err != nil {
		t.Fatalf("task %s: %q not on stdout within %v (%v); stdout %q, stderr %q", r.id, sub, timeout, err, r.stdout.Bytes(), r.stderr.Bytes())
	}
}
