package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// execSync runs cmd in container id through CRI ExecSync with a timeout
// in seconds, failing the test on an error or a non-zero exit.
func (e *criEnv) execSync(id string, timeout int64, cmd ...string) []byte {
	e.t.Helper()
	resp, err := e.d.rt.ExecSync(e.ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
	if err != nil {
		e.t.Fatalf("ExecSync %q in %s: %v", cmd, id, err)
	}
	if resp.ExitCode != 0 {
		e.t.Fatalf("ExecSync %q in %s: exit code %d, stdout %q, stderr %q", cmd, id, resp.ExitCode, resp.Stdout, resp.Stderr)
	}
	return resp.Stdout
}

// TestCRIExecSync: ExecSync returns each stream's bytes and the exit
// code; a command that outlives its timeout is killed and reported as a
// timeout; ExecSync into a stopped container fails.
func TestCRIExecSync(t *testing.T) {
	e := newCRIEnv(t)
	runs := helperRunsIfEngine(t, e)
	testCRIExecSync(t, e)
	if runs >= 0 && helperRunsIfEngine(t, e) == runs {
		t.Errorf("%s=libcontainer: the exec helper never ran for the CRI execs", engineEnv)
	}
}

// testCRIExecSync is TestCRIExecSync on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIExecSync(t *testing.T, e *criEnv) {
	p := e.runPod("execsync")
	id := p.run("sleeper", []string{"sleep", "1000"})

	resp, err := e.d.rt.ExecSync(e.ctx, &runtimeapi.ExecSyncRequest{
		ContainerId: id, Timeout: 10,
		Cmd: []string{"sh", "-c", "echo out; echo err >&2; head -c 100000 /data/out.bin; exit 3"},
	})
	if err != nil {
		t.Fatalf("ExecSync: %v", err)
	}
	if resp.ExitCode != 3 {
		t.Errorf("exit code = %d, want 3", resp.ExitCode)
	}
	if want := append([]byte("out\n"), image.Pattern(1, 100000)...); !bytes.Equal(resp.Stdout, want) {
		t.Errorf("stdout: %d bytes, want %d (\"out\\n\" and the first 100000 bytes of /data/out.bin)", len(resp.Stdout), len(want))
	}
	if string(resp.Stderr) != "err\n" {
		t.Errorf("stderr = %q, want %q", resp.Stderr, "err\n")
	}

	// The timeout: a unique argument finds the process in /proc.
	const marker = "4242"
	began := time.Now()
	_, err = e.d.rt.ExecSync(e.ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 1, Cmd: []string{"sleep", marker}})
	took := time.Since(began)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("ExecSync of sleep %s with a 1s timeout = %v, want a timeout error", marker, err)
	}
	if took > 30*time.Second {
		t.Errorf("ExecSync with a 1s timeout returned after %v", took)
	}
	if !pollUntil(10*time.Second, func() bool { return len(procsWithArgs("sleep", marker)) == 0 }) {
		t.Errorf("the timed-out exec is still running: %v", procsWithArgs("sleep", marker))
	}
	// The container is undisturbed.
	if got := e.execSync(id, 10, "echo", "still here"); string(got) != "still here\n" {
		t.Errorf("exec after the timeout: stdout %q", got)
	}

	e.stopContainer(id, 0)
	if _, err := e.d.rt.ExecSync(e.ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 5, Cmd: []string{"true"}}); err == nil {
		t.Errorf("ExecSync into a stopped container succeeded, want an error")
	}
	e.removeContainer(id)
	p.remove()
}

// procsWithArgs returns the live processes whose arguments are args.
func procsWithArgs(args ...string) []int {
	var pids []int
	for _, p := range listProcs() {
		if p.state != 'Z' && slices.Equal(cmdlineOf(p.pid), args) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// newSPDYExecutor is how a kubelet-side client (crictl; the API server
// proxying kubectl) speaks to the CRI streaming server: SPDY,
// remotecommand protocols v1-v4. (The server's WebSocket endpoint speaks
// only the pre-v5 channel protocols, which cannot signal stdin EOF.)
func newSPDYExecutor(u *url.URL) (remotecommand.Executor, error) {
	return remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
}

// stream connects to a streaming URL from Exec or Attach and runs the
// session until it ends or ctx is done.
func stream(ctx context.Context, rawURL string, opts remotecommand.StreamOptions) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	ex, err := newSPDYExecutor(u)
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, opts)
}

// TestCRIExecStreaming: Exec through the streaming server: stdin reaches the process and its EOF ends it, stdout and
// stderr arrive apart and byte-exact, a non-zero exit arrives as the
// exit code, and a terminal exec sees a tty.
func TestCRIExecStreaming(t *testing.T) { testCRIExecStreaming(t, newCRIEnv(t)) }

// testCRIExecStreaming is TestCRIExecStreaming on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIExecStreaming(t *testing.T, e *criEnv) {
	p := e.runPod("exec")
	id := p.run("sleeper", []string{"sleep", "1000"})
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	exec := func(cmd []string, tty bool, stdin io.Reader) (stdout, stderr []byte, err error) {
		resp, err := e.d.rt.Exec(ctx, &runtimeapi.ExecRequest{
			ContainerId: id, Cmd: cmd, Tty: tty,
			Stdin: stdin != nil, Stdout: true, Stderr: !tty,
		})
		if err != nil {
			t.Fatalf("Exec %q: %v", cmd, err)
		}
		var out, errb bytes.Buffer
		opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: tty}
		if !tty {
			opts.Stderr = &errb
		}
		err = stream(ctx, resp.Url, opts)
		return out.Bytes(), errb.Bytes(), err
	}

	in := image.Pattern(7, 300000)
	out, errb, err := exec([]string{"sh", "-c", "cat; echo done >&2"}, false, bytes.NewReader(in))
	if err != nil {
		t.Fatalf("exec cat: %v", err)
	}
	if !bytes.Equal(out, in) || string(errb) != "done\n" {
		t.Errorf("exec cat: stdout %d bytes equal=%v (want the %d bytes sent), stderr %q (want \"done\\n\")", len(out), bytes.Equal(out, in), len(in), errb)
	}

	_, _, err = exec([]string{"sh", "-c", "exit 7"}, false, nil)
	var code utilexec.CodeExitError
	if !errors.As(err, &code) || code.Code != 7 {
		t.Errorf("exec exit 7: error %v (%T), want an exit code 7", err, err)
	}

	// No stdin: with both shims, containerd drops a terminal exec's
	// output when the client's stdin is at EOF at once.
	out, _, err = exec([]string{"sh", "-c", "test -t 0 && test -t 1 && echo tty; /bin/busybox tty"}, true, nil)
	if err != nil {
		t.Fatalf("tty exec: %v", err)
	}
	if got := strings.ReplaceAll(string(out), "\r\n", "\n"); !strings.HasPrefix(got, "tty\n/dev/pts/") {
		t.Errorf("tty exec output %q, want \"tty\" and a /dev/pts/N name", out)
	}
	e.stopContainer(id, 0)
	e.removeContainer(id)
	p.remove()
}

// TestCRIAttach: Attach to a container whose stdin is open: what is sent
// reaches it, its stdout comes back on the attach stream and goes to the
// CRI log as well, and the attach ends when the client goes while the
// container keeps running, so a second attach works the same.
func TestCRIAttach(t *testing.T) { testCRIAttach(t, newCRIEnv(t)) }

// testCRIAttach is TestCRIAttach on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIAttach(t *testing.T, e *criEnv) {
	p := e.runPod("attach")
	id := p.run("echoer", []string{"sh", "-c", "echo ready; while read line; do echo \"got:$line\"; done"},
		func(c *runtimeapi.ContainerConfig) { c.Stdin = true })
	waitLogLine(t, p.logPath("echoer"), "ready", 30*time.Second)
	for i := range 2 {
		t.Run(fmt.Sprintf("attach%d", i), func(t *testing.T) {
			e := e.sub(t)
			resp, err := e.d.rt.Attach(e.ctx, &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
			defer cancel()
			stdinR, stdinW := io.Pipe()
			out := newSyncBuffer()
			done := make(chan error, 1)
			go func() {
				done <- stream(ctx, resp.Url, remotecommand.StreamOptions{Stdin: stdinR, Stdout: out, Stderr: io.Discard})
			}()
			msg := fmt.Sprintf("hello-%d", i)
			// The write blocks until the session reads it; should the
			// session fail, closing stdinW below ends the write.
			go func() { _, _ = io.WriteString(stdinW, msg+"\n") }()
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if err := out.waitFor(wctx, []byte("got:"+msg+"\n")); err != nil {
				t.Errorf("attach stdout %q: no %q (%v)", out.Bytes(), "got:"+msg, err)
			}
			waitLogLine(t, p.logPath("echoer"), "got:"+msg, 30*time.Second)
			cancel()
			stdinW.Close()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("attach did not end within 30s of its context being cancelled")
			}
			if st := e.status(id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("container state after the attach ended: %v, want RUNNING", st.State)
			}
		})
	}
	e.stopContainer(id, 0)
	e.removeContainer(id)
	p.remove()
}
