package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/console"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
)

// runcExec stands in for `runc exec --detach`: it makes runc's checks of
// the process spec against the console socket, sends a PTY master whose
// slave has written "tty-out\n" when there is a socket, and starts a child
// as the exec's process.
func runcExec(e *forkEngine) func(context.Context, string, specs.Process, *runc.ExecOpts) error {
	return func(_ context.Context, _ string, spec specs.Process, opts *runc.ExecOpts) error {
		e.record(fmt.Sprintf("exec terminal=%v console-socket=%v", spec.Terminal, opts.ConsoleSocket != nil))
		switch {
		case opts.ConsoleSocket != nil && !spec.Terminal:
			return errors.New("cannot use console socket if runc will not detach or allocate tty")
		case opts.ConsoleSocket == nil && spec.Terminal:
			return errors.New("cannot allocate tty if runc will detach without setting console socket")
		}
		if spec.Terminal {
			if err := sendPtyMaster(opts.ConsoleSocket.Path(), "tty-out\n"); err != nil {
				return err
			}
		}
		return e.fork(opts.PidFile)
	}
}

// sendPtyMaster sends a new PTY's master over the console socket at path,
// as runc does, after out was written to its slave.
func sendPtyMaster(path, out string) error {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return err
	}
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	_, err = slave.WriteString(out)
	slave.Close()
	if err != nil {
		return err
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, _, err = conn.(*net.UnixConn).WriteMsgUnix([]byte(slavePath), unix.UnixRights(int(master.Fd())), nil)
	return err
}

// TestExecTerminalFromRequest: the ExecProcessRequest's Terminal flag, not
// the process spec's, decides whether an exec gets a terminal, as in the
// runc shim. containerd's Go client sets only the request's flag
// (cio.WithTerminal); runc refuses a console socket for a spec without a
// terminal.
func TestExecTerminalFromRequest(t *testing.T) {
	tests := []struct {
		name       string
		request    bool // ExecProcessRequest.Terminal
		spec       bool // the process spec's Terminal
		wantCall   string
		wantOutput string
	}{
		{name: "request only", request: true, spec: false, wantCall: "exec terminal=true console-socket=true", wantOutput: "tty-out\r\n"},
		{name: "spec only", request: false, spec: true, wantCall: "exec terminal=false console-socket=false", wantOutput: ""},
		{name: "both", request: true, spec: true, wantCall: "exec terminal=true console-socket=true", wantOutput: "tty-out\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tk, eng := newTestTask(t)
			eng.exec = runcExec(eng)
			bundle := newBundle(t)
			if _, err := tk.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle}); err != nil {
				t.Fatalf("Create: %v", err)
			}
			if _, err := tk.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err != nil {
				t.Fatalf("Start: %v", err)
			}
			stdout := filepath.Join(t.TempDir(), "stdout")
			if err := os.WriteFile(stdout, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			spec := fmt.Sprintf(`{"args":["sh"],"cwd":"/","terminal":%v}`, tt.spec)
			_, err := tk.Exec(ctx, &taskapi.ExecProcessRequest{
				ID: "c1", ExecID: "e1", Terminal: tt.request, Stdout: stdout,
				Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(spec)},
			})
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if _, err := tk.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e1"}); err != nil {
				t.Fatalf("Start exec: %v", err)
			}
			if _, err := tk.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: 9}); err != nil {
				t.Fatalf("Kill exec: %v", err)
			}
			if wr, err := tk.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: "e1"}); err != nil || wr.ExitStatus != 137 {
				t.Fatalf("Wait exec: got (%v, %v), want exit 137", wr, err)
			}
			// Delete closes the exec's streams after the PTY's output is
			// copied.
			if _, err := tk.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
				t.Fatalf("Delete exec: %v", err)
			}
			if got, err := os.ReadFile(stdout); err != nil || string(got) != tt.wantOutput {
				t.Errorf("exec stdout: got (%q, %v), want %q", got, err, tt.wantOutput)
			}
			eng.mu.Lock()
			calls := slices.Clone(eng.calls)
			eng.mu.Unlock()
			if !slices.Contains(calls, tt.wantCall) {
				t.Errorf("runtime calls: got %q, want one %q", calls, tt.wantCall)
			}
		})
	}
}
