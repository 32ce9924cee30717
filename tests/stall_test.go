package tests

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// stallingWriter takes the first write, then blocks every later one until
// released: a client that stopped reading.
type stallingWriter struct {
	once    sync.Once
	wrote   chan struct{} // closed by the first write
	release chan struct{} // closed to let writes through again
}

func newStallingWriter() *stallingWriter {
	return &stallingWriter{wrote: make(chan struct{}), release: make(chan struct{})}
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	first := false
	w.once.Do(func() { close(w.wrote); first = true })
	if !first {
		<-w.release
	}
	return len(p), nil
}

// noisyTask runs `yes` in the pod with its stdout read by out.
func noisyTask(t *testing.T, e *env, id, pod string, out io.Writer) (client.Task, <-chan client.ExitStatus, cio.IO) {
	t.Helper()
	container, cleanup := newIOContainer(t, e, id, "exec yes noise", ioRunOpt{pod: pod})
	t.Cleanup(cleanup)
	fifoDir := filepath.Join(e.d.dir, "fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var taskIO cio.IO
	creator := cio.NewCreator(cio.WithStreams(nil, out, io.Discard), cio.WithFIFODir(fifoDir))
	task, err := container.NewTask(e.ctx, func(id string) (cio.IO, error) {
		var err error
		taskIO, err = creator(id)
		return taskIO, err
	})
	if err != nil {
		t.Fatalf("create task %s: %v", id, err)
	}
	e.noteSocket(id)
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	return task, exitC, taskIO
}

// TestStalledReaders: in one pod, a container whose client stopped reading
// its stdout, and one whose client closed its stdout altogether, both
// blocked on a full stream, wedge nothing else: another container of the
// pod runs its whole lifecycle and an exec, and both noisy containers still
// die on SIGKILL with their exits reported and their deletes returning.
func TestStalledReaders(t *testing.T) {
	e := newDefaultEnv(t)
	const pod = "stall-pod"
	holder := e.run(ctrSpec{id: "stall-holder", pod: pod, args: []string{"sh", "-c", "echo up; exec sleep 600"}})
	holder.waitOutput(t, "up\n", 30*time.Second)

	stalled := newStallingWriter()
	stalledTask, stalledExit, stalledIO := noisyTask(t, e, "stalled", pod, stalled)
	select {
	case <-stalled.wrote:
	case <-time.After(30 * time.Second):
		t.Fatal("the noisy container wrote nothing within 30s")
	}
	vanished := newSyncBuffer()
	vanishedTask, vanishedExit, vanishedIO := noisyTask(t, e, "vanished", pod, vanished)
	if !pollUntil(30*time.Second, func() bool { return len(vanished.Bytes()) > 0 }) {
		t.Fatal("the second noisy container wrote nothing within 30s")
	}
	// The client goes away from this one's streams: its fifo readers close.
	vanishedIO.Cancel()
	vanishedIO.Close()

	quiet := e.run(ctrSpec{id: "stall-quiet", pod: pod, args: []string{"echo", "quiet-ok"}})
	if code := quiet.wait(30 * time.Second); code != 0 {
		t.Errorf("quiet container exit code = %d, want 0", code)
	}
	if got := string(quiet.stdout.Bytes()); got != "quiet-ok\n" {
		t.Errorf("quiet container stdout = %q, want %q", got, "quiet-ok\n")
	}
	quiet.delete()
	x := holder.exec(t, "stall-exec", []string{"echo", "exec-ok"}, nil)
	select {
	case st := <-x.exitC:
		if code, _, _ := st.Result(); code != 0 {
			t.Errorf("exec exit code = %d, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("exec beside the stalled containers did not exit within 30s")
	}

	for _, n := range []struct {
		name  string
		task  client.Task
		exitC <-chan client.ExitStatus
	}{{"stalled", stalledTask, stalledExit}, {"vanished", vanishedTask, vanishedExit}} {
		if err := n.task.Kill(e.ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", n.name, err)
		}
		select {
		case st := <-n.exitC:
			if st.ExitCode() != 137 {
				t.Errorf("%s exit code = %d, want 137", n.name, st.ExitCode())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no exit within 30s of SIGKILL while its stdout is full", n.name)
		}
	}
	// The client's Delete waits for its own copy of the streams to end,
	// so the stalled client must read again first. The shim's delete may
	// then wait a bounded time for a stream (the runc shim gives its copy
	// 2 s); it must return.
	close(stalled.release)
	for _, n := range []struct {
		name string
		task client.Task
	}{{"stalled", stalledTask}, {"vanished", vanishedTask}} {
		ctx, cancel := contextWithTimeout(e, 30*time.Second)
		if _, err := n.task.Delete(ctx); err != nil {
			t.Errorf("delete %s: %v", n.name, err)
		}
		cancel()
	}
	stalledIO.Cancel()
	stalledIO.Close()
	holder.kill(syscall.SIGKILL)
	holder.wait(30 * time.Second)
	holder.delete()
}
