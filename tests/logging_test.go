package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// loggerScript is a binary:// logging driver: the shim starts it with the
// container's stdout on fd 3, stderr on fd 4 and a readiness pipe on fd 5
// (closing it means ready), and no PATH in its environment. Arguments come
// from the URI's query as key/value pairs in any order. It writes to
// OUT.tmp and ERR.tmp and renames them once both streams hit EOF, so the
// test knows the copy is complete. The shim sends it SIGTERM when the task
// is deleted (the runc shim does, right after closing the pipes), which it
// ignores so as to finish the copy.
const loggerScript = `#!/bin/sh
trap '' TERM
while [ $# -ge 2 ]; do
	case "$1" in out) OUT=$2 ;; err) ERR=$2 ;; esac
	shift 2
done
exec 5>&-
/bin/cat <&3 >"$OUT.tmp" &
/bin/cat <&4 >"$ERR.tmp" &
wait
/bin/mv "$OUT.tmp" "$OUT"
/bin/mv "$ERR.tmp" "$ERR"
`

// TestLogURI: task output written by the shim itself, as ctr --log-uri
// and nerdctl ask for: file:// (both streams into one file) and binary://
// (a logging process the shim starts and must reap).
func TestLogURI(t *testing.T) {
	e := newDefaultEnv(t)
	dir := filepath.Join(e.d.dir, "logs", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	script := "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2"

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(dir, "file.log")
		code := runWithIO(t, e.sub(t), "log-file", script, cio.LogFile(path))
		if code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// stdout and stderr are copied independently: their relative
		// order in the one file is not defined, each one's own order is.
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if !isSandboxRuntime() && len(filterPrefix(lines, "err-")) == 0 &&
			// The runc shim's close-counting writer race (see
			// TestLogURIFileStreams): seen here with containerd 1.6.
			knownDifference(t, e.d.version.name, "file-log-stderr-dropped", "the runc shim dropped stderr from %s: %q", path, data) {
			return
		}
		if got, want := filterPrefix(lines, "out-"), []string{"out-1", "out-2"}; !slices.Equal(got, want) {
			t.Errorf("stdout lines in %s = %q, want %q (file: %q)", path, got, want, data)
		}
		if got, want := filterPrefix(lines, "err-"), []string{"err-1", "err-2"}; !slices.Equal(got, want) {
			t.Errorf("stderr lines in %s = %q, want %q (file: %q)", path, got, want, data)
		}
		if len(lines) != 4 {
			t.Errorf("%s has %d lines, want 4: %q", path, len(lines), data)
		}
	})
	t.Run("binary", func(t *testing.T) {
		logger := filepath.Join(dir, "logger.sh")
		if err := os.WriteFile(logger, []byte(loggerScript), 0o755); err != nil {
			t.Fatal(err)
		}
		out, errp := filepath.Join(dir, "bin.out"), filepath.Join(dir, "bin.err")
		code := runWithIO(t, e.sub(t), "log-binary", script, cio.BinaryIO(logger, map[string]string{"out": out, "err": errp}))
		if code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
		for _, f := range []struct{ path, want string }{{out, "out-1\nout-2\n"}, {errp, "err-1\nerr-2\n"}} {
			if !pollUntil(20*time.Second, func() bool { _, err := os.Stat(f.path); return err == nil }) {
				t.Fatalf("logging binary did not finish %s within 20s", f.path)
			}
			data, err := os.ReadFile(f.path)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != f.want {
				t.Errorf("%s = %q, want %q", f.path, data, f.want)
			}
		}
	})
}

// runWithIO runs script in a container whose task IO comes from creator,
// waits for it, deletes it and returns its exit code.
func runWithIO(t *testing.T, e *env, id, script string, creator cio.Creator, opts ...ioRunOpt) uint32 {
	t.Helper()
	task, cleanup := newIOTask(t, e, id, script, creator, opts...)
	defer cleanup()
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		t.Fatalf("start task %s: %v", id, err)
	}
	select {
	case st := <-exitC:
		if _, err := task.Delete(e.ctx); err != nil {
			t.Fatalf("delete task %s: %v", id, err)
		}
		return st.ExitCode()
	case <-time.After(time.Minute):
		t.Fatalf("task %s did not exit within a minute", id)
		return 0
	}
}

// ioRunOpt adjusts the container newIOTask makes.
type ioRunOpt struct {
	spec        []oci.SpecOpts
	runtimeOpts any
	pod         string
}

// newIOTask creates the container and its task (not started); cleanup
// deletes both. A creation error fails the test.
func newIOTask(t *testing.T, e *env, id, script string, creator cio.Creator, opts ...ioRunOpt) (client.Task, func()) {
	t.Helper()
	task, cleanup, err := tryIOTask(t, e, id, script, creator, opts...)
	if err != nil {
		cleanup()
		t.Fatalf("create task %s: %v", id, err)
	}
	return task, cleanup
}

// tryIOTask is newIOTask that returns the task creation error.
func tryIOTask(t *testing.T, e *env, id, script string, creator cio.Creator, opts ...ioRunOpt) (client.Task, func(), error) {
	t.Helper()
	container, deleteContainer := newIOContainer(t, e, id, script, opts...)
	task, err := container.NewTask(e.ctx, creator)
	if err != nil {
		skipIfNotImplemented(t, err, fmt.Sprintf("task IO %T", creator))
		return nil, deleteContainer, err
	}
	e.noteSocket(id)
	return task, func() {
		task.Delete(e.ctx, client.WithProcessKill)
		deleteContainer()
	}, nil
}

// newIOContainer creates the container newIOTask makes a task for.
func newIOContainer(t *testing.T, e *env, id, script string, opts ...ioRunOpt) (client.Container, func()) {
	t.Helper()
	img := e.image()
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs("sh", "-c", script)}
	var runtimeOpts any
	for _, o := range opts {
		specOpts = append(specOpts, o.spec...)
		if o.pod != "" {
			specOpts = append(specOpts, oci.WithAnnotations(map[string]string{podAnnotation: o.pod}))
		}
		if o.runtimeOpts != nil {
			runtimeOpts = o.runtimeOpts
		}
	}
	container, err := e.c.NewContainer(e.ctx, id,
		client.WithImage(img),
		client.WithSnapshotter(snapshotter),
		client.WithNewSnapshot(id+"-snapshot", img),
		client.WithRuntime(runtimeUnderTest(), runtimeOptionsFor(t, runtimeOpts)),
		client.WithNewSpec(specOpts...),
	)
	if err != nil {
		t.Fatalf("create container %s: %v", id, err)
	}
	return container, func() { container.Delete(e.ctx, client.WithSnapshotCleanup) }
}

func filterPrefix(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
