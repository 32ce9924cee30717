package service

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// forkEngine is a fake OCI runtime whose create forks a real child of the
// test process (reaped by the Manager's reaper) and reports its pid.
type forkEngine struct {
	args []string
	// exec, when set before the first Exec, runs the exec call in place
	// of the default (record and succeed).
	exec func(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error

	mu    sync.Mutex
	cmds  []*exec.Cmd
	calls []string
}

func (e *forkEngine) record(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, s)
}

func (e *forkEngine) Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
	e.record("create " + id)
	return e.fork(opts.PidFile)
}

// fork starts a child running args and writes its pid to pidFile, as the
// runtime does with --pid-file.
func (e *forkEngine) fork(pidFile string) error {
	cmd := exec.Command(e.args[0], e.args[1:]...)
	if err := cmd.Start(); err != nil {
		return err
	}
	e.mu.Lock()
	e.cmds = append(e.cmds, cmd)
	e.mu.Unlock()
	return os.WriteFile(pidFile, []byte(fmt.Sprint(cmd.Process.Pid)), 0o600)
}

func (e *forkEngine) Start(ctx context.Context, id string, pidfd int) error {
	e.record("start " + id)
	return nil
}

func (e *forkEngine) Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error {
	e.record("exec " + id)
	if e.exec != nil {
		return e.exec(ctx, id, spec, opts)
	}
	return nil
}

func (e *forkEngine) Kill(ctx context.Context, id string, sig int, all bool) error {
	e.record(fmt.Sprintf("kill %s %d", id, sig))
	return nil
}

func (e *forkEngine) Delete(ctx context.Context, id string, stopped bool) error {
	e.record("delete " + id)
	return nil
}

// CgroupPaths answers that the fake keeps no cgroups.
func (e *forkEngine) CgroupPaths(id string, _ int) (map[string]string, error) {
	return nil, fmt.Errorf("fork engine: no cgroups for %s: %w", id, errdefs.ErrNotFound)
}

func (e *forkEngine) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	e.record("update " + id)
	return nil
}

func (e *forkEngine) Pause(ctx context.Context, id string) error {
	e.record("pause " + id)
	return nil
}

func (e *forkEngine) Resume(ctx context.Context, id string) error {
	e.record("resume " + id)
	return nil
}

func (e *forkEngine) Ps(ctx context.Context, id string) ([]int, error) {
	e.record("ps " + id)
	e.mu.Lock()
	defer e.mu.Unlock()
	var pids []int
	for _, c := range e.cmds {
		pids = append(pids, c.Process.Pid)
	}
	return pids, nil
}

func (e *forkEngine) cleanup() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.cmds {
		_ = c.Process.Kill()
		_ = c.Process.Release()
	}
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, string, proto.Message) error { return nil }

// newTestTask returns a Task over a Manager with a real reaper whose
// containers are children running args.
func newTestTask(t *testing.T, args ...string) (*Task, *forkEngine) {
	t.Helper()
	if len(args) == 0 {
		args = []string{"/bin/busybox", "sleep", "60"}
	}
	eng := &forkEngine{args: args}
	m := sandbox.NewManager(context.Background(), sandbox.Config{
		Namespace: "testns",
		Publisher: nopPublisher{},
		Reaper:    reaper.NewReaper(),
		NewEngine: func(ociruntime.Options, string) ociruntime.Runtime { return eng },
	})
	t.Cleanup(func() {
		eng.cleanup()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Manager.Close: %v", err)
		}
	})
	return NewTask(m, ociruntime.Options{}), eng
}

// newBundle makes a bundle with a minimal config.json: a container with
// its own PID namespace, whose SIGKILL goes to its init alone.
func newBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/config.json", []byte(`{"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}
