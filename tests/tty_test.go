package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// TestCtrRunTerminal drives `ctr run -t` from a real pseudo-terminal
// (script(1)) whose size is set to 33x77: the container sees a tty on
// stdin and ctr's resize reaches `stty size`. The container polls (for
// at most a minute) until the size arrives, since ctr resizes only after
// the task has started.
func TestCtrRunTerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) (bsdutils) not installed")
	}
	e := newDefaultEnv(t)
	args := append([]string{e.d.version.ctr(), "--address", e.d.address, "--namespace", e.ns,
		"run", "-t", "--rm"}, ctrRuntimeArgs(t)...)
	inner := strings.Join(append(args, "--rootfs", e.d.rootfs, "ctrtty",
		"/bin/sh", "-c", `'test -t 0 && echo stdin-tty; i=0; while [ $i -lt 1200 ]; do stty size 2>/dev/null | { read r c; [ "${r:-0}" != 0 ] && echo "size $r $c"; } && break; i=$((i+1)); sleep 0.05; done'`,
	), " ")
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, "-qec", "stty rows 33 cols 77; "+inner, "/dev/null")
	cmd.Env = daemonEnv(e.d.bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v; output %q", err, out)
	}
	for _, want := range []string{"stdin-tty\r", "size 33 77\r"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not contain %q", out, want)
		}
	}
}

// TestTerminalExecLargeOutput: a terminal exec whose process spec says
// terminal=false, with only the request's flag set (cio.WithTerminal),
// as containerd's Go client sends it (containerd's
// TestContainerExecLargeOutputWithTTY does the same). The runc shim lets
// the request decide. 1 MiB of output comes back through the pty whole,
// every "\n" turned into "\r\n" by the tty's ONLCR, and the exit code
// arrives.
func TestTerminalExecLargeOutput(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "ttybig", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	// 16384 lines of 63 'x' and a newline: 1 MiB.
	const lines, line = 16384, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	want := bytes.Repeat([]byte(line+"\r\n"), lines)
	for i := range 3 {
		spec, err := r.container.Spec(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		pspec := *spec.Process
		pspec.Terminal = false
		pspec.Args = []string{"sh", "-c", fmt.Sprintf("yes %s | head -n %d; exit 3", line, lines)}
		out := newSyncBuffer()
		execID := fmt.Sprintf("ttybig-%d", i)
		x, err := r.task.Exec(e.ctx, execID, &pspec, cio.NewCreator(
			cio.WithStreams(nil, out, nil), cio.WithTerminal, cio.WithFIFODir(filepath.Join(e.d.dir, "fifo"))))
		skipIfNotImplemented(t, err, "terminal exec")
		if err != nil {
			t.Fatalf("exec %s: %v", execID, err)
		}
		exitC, err := x.Wait(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.Start(e.ctx); err != nil {
			t.Fatalf("start %s (terminal only in the request): %v", execID, err)
		}
		select {
		case st := <-exitC:
			if code, _, _ := st.Result(); code != 3 {
				t.Errorf("%s: exit code = %d, want 3", execID, code)
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s did not exit within a minute", execID)
		}
		// All output is copied before Delete closes the IO.
		x.IO().Wait()
		if _, err := x.Delete(e.ctx); err != nil {
			t.Fatalf("delete %s: %v", execID, err)
		}
		assertBytes(t, execID+" output through the tty", out.Bytes(), want)
	}
	r.kill(syscall.SIGKILL)
	r.wait(time.Minute)
	r.delete()
}
