package tests

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// writeLoggerScript writes a logging driver for binary:// URIs into dir:
// loggerScript with its ready line (closing fd 5) replaced by ready.
func writeLoggerScript(t *testing.T, dir, name, ready string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	script := strings.Replace(loggerScript, "exec 5>&-\n", ready, 1)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// binaryV2Supported tells whether the runtime under test knows
// binary-v2://: this shim does, the runc shim only from containerd 2.3.
func binaryV2Supported(e *env) bool {
	return isSandboxRuntime() || e.d.version.name == "2.4.2"
}

// logURI builds a log URI the way cio.LogURIGenerator does.
func logURI(scheme, path string, args map[string]string) *url.URL {
	q := url.Values{}
	for k, v := range args {
		q.Set(k, v)
	}
	return &url.URL{Scheme: scheme, Path: path, RawQuery: q.Encode()}
}

// TestLogURIBinaryV2: binary-v2:// means ready is a byte on fd 5; a logger
// that exits without writing it fails the task's creation, and the pod's
// other container runs on undisturbed.
func TestLogURIBinaryV2(t *testing.T) {
	e := newDefaultEnv(t)
	if !binaryV2Supported(e) {
		t.Skipf("the runc shim of containerd %s has no binary-v2://", e.d.version.name)
	}
	dir := filepath.Join(e.d.dir, "logs", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	t.Run("ready byte", func(t *testing.T) {
		logger := writeLoggerScript(t, dir, "v2.sh", "printf R >&5\nexec 5>&-\n")
		out, errp := filepath.Join(dir, "v2.out"), filepath.Join(dir, "v2.err")
		uri := logURI("binary-v2", logger, map[string]string{"out": out, "err": errp})
		if code := runWithIO(t, e.sub(t), "v2-ready", "echo hello; echo oops >&2", cio.LogURI(uri)); code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
		waitLoggerFile(t, out, "hello\n")
		waitLoggerFile(t, errp, "oops\n")
	})
	t.Run("no ready byte", func(t *testing.T) {
		se := e.sub(t)
		neighbour := se.run(ctrSpec{id: "v2-neighbour", pod: "v2-pod", args: []string{"sh", "-c", "echo up; exec sleep 600"}})
		neighbour.waitOutput(t, "up\n", 30*time.Second)
		logger := writeLoggerScript(t, dir, "v2-bad.sh", "exec 5>&-\nexit 0\n")
		uri := logURI("binary-v2", logger, map[string]string{"out": filepath.Join(dir, "bad.out"), "err": filepath.Join(dir, "bad.err")})
		_, cleanup, err := tryIOTask(t, se, "v2-bad", "echo never", cio.LogURI(uri), ioRunOpt{pod: "v2-pod"})
		defer cleanup()
		if err == nil {
			t.Fatal("task created although its binary-v2 logger never wrote the ready byte")
		}
		t.Logf("create failed as it must: %v", err)
		if st := neighbour.status(); st != client.Running {
			t.Errorf("neighbour in the same pod is %s after the failed create, want running", st)
		}
		neighbour.kill(9)
		neighbour.wait(30 * time.Second)
		neighbour.delete()
	})
}

// TestLogURIReadyGate: the container does not start before its logger is
// ready. The logger holds fd 5 open until the test opens a gate file;
// until then the task's creation must not return.
func TestLogURIReadyGate(t *testing.T) {
	e := newDefaultEnv(t)
	dir := filepath.Join(e.d.dir, "logs", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	gate, started := filepath.Join(dir, "gate"), filepath.Join(dir, "started")
	logger := writeLoggerScript(t, dir, "gated.sh",
		`: >"`+started+`"
while [ ! -e "`+gate+`" ]; do /bin/sleep 0.02; done
exec 5>&-
`)
	out, errp := filepath.Join(dir, "gated.out"), filepath.Join(dir, "gated.err")
	uri := logURI("binary", logger, map[string]string{"out": out, "err": errp})

	container, deleteContainer := newIOContainer(t, e, "gated", "echo first-line")
	defer deleteContainer()
	type created struct {
		task client.Task
		err  error
	}
	done := make(chan created, 1)
	go func() {
		task, err := container.NewTask(e.ctx, cio.LogURI(uri))
		done <- created{task, err}
	}()
	if !pollUntil(30*time.Second, func() bool { _, err := os.Stat(started); return err == nil }) {
		t.Fatal("the logging binary was not started within 30s")
	}
	select {
	case c := <-done:
		if c.task != nil {
			defer c.task.Delete(e.ctx, client.WithProcessKill)
		}
		t.Fatalf("task creation returned (err %v) while its logger was not ready", c.err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := <-done
	if c.err != nil {
		t.Fatalf("create task: %v", c.err)
	}
	e.noteSocket("gated")
	exitC, err := c.task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.task.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exitC:
		if st.ExitCode() != 0 {
			t.Errorf("exit code = %d, want 0", st.ExitCode())
		}
	case <-time.After(time.Minute):
		t.Fatal("task did not exit within a minute")
	}
	if _, err := c.task.Delete(e.ctx); err != nil {
		t.Fatal(err)
	}
	waitLoggerFile(t, out, "first-line\n")
}

// waitLoggerFile waits for the logging script to rename its copy into
// place (it does once both streams reached EOF) and checks its bytes.
func waitLoggerFile(t *testing.T, path, want string) {
	t.Helper()
	if !pollUntil(20*time.Second, func() bool { _, err := os.Stat(path); return err == nil }) {
		t.Fatalf("logging binary did not finish %s within 20s", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != want {
		t.Errorf("%s = %q, want %q", path, data, want)
	}
}
