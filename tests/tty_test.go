package tests

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// TestTerminalExecResize: an exec with a terminal sees a tty on stdin, and
// a ResizePty sent while it waits for input reaches `stty size`.
func TestTerminalExecResize(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "ttyhost", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	spec, err := r.container.Spec(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Terminal = true
	pspec.Args = []string{"sh", "-c", "test -t 0 && echo stdin-is-tty; read line; stty size; exit 6"}
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	out := newSyncBuffer()
	x, err := r.task.Exec(e.ctx, "tty1", &pspec, cio.NewCreator(
		cio.WithStreams(stdinR, out, nil), cio.WithTerminal, cio.WithFIFODir(filepath.Join(e.d.dir, "fifo"))))
	skipIfNotImplemented(t, err, "terminal exec")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	exitC, err := x.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Start(e.ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if !pollUntil(time.Minute, func() bool { return strings.Contains(string(out.Bytes()), "stdin-is-tty") }) {
		t.Fatalf("no tty on stdin; output %q", out.Bytes())
	}
	if err := x.Resize(e.ctx, 100, 40); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if _, err := stdinW.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-exitC:
		if code, _, _ := st.Result(); code != 6 {
			t.Errorf("exit code = %d, want 6", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("terminal exec did not exit within a minute")
	}
	if _, err := x.Delete(e.ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	// stty size prints rows then columns.
	if got := string(out.Bytes()); !strings.Contains(got, "40 100") {
		t.Errorf("output %q does not contain the resized size \"40 100\"", got)
	}
}
