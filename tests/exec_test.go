package tests

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
)

// execProc is an exec process in a running task, with captured output.
type execProc struct {
	id     string
	proc   client.Process
	stdout *syncBuffer
	stderr *syncBuffer
	exitC  <-chan client.ExitStatus
}

// exec starts args as exec process execID in r's container, with the
// container's process spec otherwise.
func (r *running) exec(t *testing.T, execID string, args []string, stdin io.Reader) *execProc {
	t.Helper()
	x := r.createExec(t, execID, args, stdin)
	if err := x.proc.Start(r.e.ctx); err != nil {
		t.Fatalf("start exec %s in %s: %v", execID, r.id, err)
	}
	return x
}

// createExec creates exec process execID running args in r's container
// and waits on it (so no exit can be missed), but does not start it.
// env is appended to the container's environment.
func (r *running) createExec(t *testing.T, execID string, args []string, stdin io.Reader, env ...string) *execProc {
	t.Helper()
	x, err := r.tryCreateExec(execID, args, stdin, env...)
	skipIfNotImplemented(t, err, "exec")
	if err != nil {
		t.Fatalf("exec %s in %s: %v", execID, r.id, err)
	}
	return x
}

// tryCreateExec is createExec returning its errors (the task's Exec
// error as it is) instead of failing a test, so that it can run in a
// goroutine of its own.
func (r *running) tryCreateExec(execID string, args []string, stdin io.Reader, env ...string) (*execProc, error) {
	spec, err := r.container.Spec(r.e.ctx)
	if err != nil {
		return nil, fmt.Errorf("spec of %s: %v", r.id, err)
	}
	pspec := *spec.Process
	pspec.Args = args
	pspec.Env = append(slices.Clone(pspec.Env), env...)
	x := &execProc{id: execID, stdout: newSyncBuffer(), stderr: newSyncBuffer()}
	var in io.Reader
	var closer *stdinCloser
	if stdin != nil {
		closer = newStdinCloser(stdin)
		in = closer
	}
	fifoDir := filepath.Join(r.e.d.dir, "fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return nil, err
	}
	x.proc, err = r.task.Exec(r.e.ctx, execID, &pspec, cio.NewCreator(cio.WithStreams(in, x.stdout, x.stderr), cio.WithFIFODir(fifoDir)))
	if closer != nil {
		if err == nil {
			closer.proc, closer.ctx = x.proc, r.e.ctx
		}
		close(closer.ready)
	}
	if err != nil {
		return nil, err
	}
	if x.exitC, err = x.proc.Wait(r.e.ctx); err != nil {
		return nil, fmt.Errorf("wait exec %s: %v", execID, err)
	}
	return x, nil
}

// finish waits for the exec to exit, deletes it (which drains its IO) and
// returns its exit code.
func (x *execProc) finish(t *testing.T, ctxOf *env) uint32 {
	t.Helper()
	var code uint32
	select {
	case st := <-x.exitC:
		var err error
		if code, _, err = st.Result(); err != nil {
			t.Fatalf("exec %s exit status: %v", x.id, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("exec %s did not exit within a minute", x.id)
	}
	if _, err := x.proc.Delete(ctxOf.ctx); err != nil {
		t.Fatalf("delete exec %s: %v", x.id, err)
	}
	return code
}

// TestExec: exec processes in a running pod container: output and exit
// code, stdin, SIGKILL, a duplicate exec id, and the container itself
// undisturbed by all of it.
func TestExec(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "host", pod: "execpod", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	t.Run("output-and-exit-code", func(t *testing.T) {
		x := r.exec(t, "x1", []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 5"}, nil)
		if code := x.finish(t, e); code != 5 {
			t.Errorf("exit code = %d, want 5", code)
		}
		if got, want := string(x.stdout.Bytes()), "exec-out\n"; got != want {
			t.Errorf("stdout = %q, want %q", got, want)
		}
		if got, want := string(x.stderr.Bytes()), "exec-err\n"; got != want {
			t.Errorf("stderr = %q, want %q", got, want)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		in := bytes.Repeat([]byte("exec stdin line\n"), 4096)
		x := r.exec(t, "x2", []string{"cat"}, bytes.NewReader(in))
		if code := x.finish(t, e); code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
		assertBytes(t, "stdout", x.stdout.Bytes(), in)
	})
	t.Run("sigkill", func(t *testing.T) {
		x := r.exec(t, "x3", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
		ctx, cancel := contextWithTimeout(e, time.Minute)
		defer cancel()
		if err := x.stdout.waitFor(ctx, []byte("up\n")); err != nil {
			t.Fatalf("exec output: %v", err)
		}
		if err := x.proc.Kill(e.ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill exec: %v", err)
		}
		if code := x.finish(t, e); code != 137 {
			t.Errorf("exit code = %d, want 137", code)
		}
	})
	t.Run("duplicate-id", func(t *testing.T) {
		x := r.exec(t, "x4", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
		spec, err := r.container.Spec(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.task.Exec(e.ctx, "x4", spec.Process, cio.NullIO)
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("second exec with id x4: got %v (%s), want AlreadyExists", err, errClass(err))
		}
		if err := x.proc.Kill(e.ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill exec: %v", err)
		}
		x.finish(t, e)
	})

	if got := r.status(); got != client.Running {
		t.Errorf("container status after the execs = %q, want %q", got, client.Running)
	}
	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("container exit code = %d, want 137", code)
	}
	r.delete()
	if got, want := string(r.stdout.Bytes()), "ready\n"; got != want {
		t.Errorf("container stdout = %q, want %q (exec output must not leak into it)", got, want)
	}
}
