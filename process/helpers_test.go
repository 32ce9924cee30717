package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// waitFor polls cond every few milliseconds until it holds, failing the
// test with what when d passes first.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countFDs returns how many fds the test process has open.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// listFDs describes the open fds, for leak messages.
func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// checkNoLeaks records fds and goroutines now and, when the test ends,
// polls until both are back to that level (closing an fd or ending a
// goroutine may lag the call that asked for it).
func checkNoLeaks(t *testing.T) {
	t.Helper()
	fds, gs := countFDs(t), runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			gotFDs, gotGs := countFDs(t), runtime.NumGoroutine()
			if gotFDs <= fds && gotGs <= gs {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("leak: fds got %d, want <= %d; goroutines got %d, want <= %d\nfds:\n%s\ngoroutines:\n%s",
					gotFDs, fds, gotGs, gs, listFDs(), buf[:n])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// startSleeper starts a real child that lives until the test ends, so
// that pidfd_open and signals have a process to reach. The test reaps it.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/busybox", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// fakeEngine is the OCI runtime below the Engine boundary. It records each
// call as a line and runs the hook set for the verb, if any.
type fakeEngine struct {
	mu    sync.Mutex
	calls []string

	create func(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	start  func(ctx context.Context, id string) error
	exec   func(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	kill   func(ctx context.Context, id string, sig int, opts *runc.KillOpts) error
	delete func(ctx context.Context, id string, opts *runc.DeleteOpts) error
	ps     func(ctx context.Context, id string) ([]int, error)
	update func(ctx context.Context, id string, resources *specs.LinuxResources) error
	pause  func(ctx context.Context, id string) error
	resume func(ctx context.Context, id string) error
}

var _ Engine = (*fakeEngine)(nil)

func (e *fakeEngine) record(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls made so far.
func (e *fakeEngine) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.calls...)
}

func (e *fakeEngine) Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
	e.record("create %s", id)
	if e.create != nil {
		return e.create(ctx, id, bundle, opts)
	}
	return nil
}

func (e *fakeEngine) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	e.record("update %s", id)
	if e.update != nil {
		return e.update(ctx, id, resources)
	}
	return nil
}

func (e *fakeEngine) Pause(ctx context.Context, id string) error {
	e.record("pause %s", id)
	if e.pause != nil {
		return e.pause(ctx, id)
	}
	return nil
}

func (e *fakeEngine) Resume(ctx context.Context, id string) error {
	e.record("resume %s", id)
	if e.resume != nil {
		return e.resume(ctx, id)
	}
	return nil
}

func (e *fakeEngine) Start(ctx context.Context, id string) error {
	e.record("start %s", id)
	if e.start != nil {
		return e.start(ctx, id)
	}
	return nil
}

func (e *fakeEngine) Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error {
	e.record("exec %s", id)
	if e.exec != nil {
		return e.exec(ctx, id, spec, opts)
	}
	return nil
}

func (e *fakeEngine) Kill(ctx context.Context, id string, sig int, opts *runc.KillOpts) error {
	e.record("kill %s %d all=%v", id, sig, opts != nil && opts.All)
	if e.kill != nil {
		return e.kill(ctx, id, sig, opts)
	}
	return nil
}

func (e *fakeEngine) Delete(ctx context.Context, id string, opts *runc.DeleteOpts) error {
	e.record("delete %s force=%v", id, opts != nil && opts.Force)
	if e.delete != nil {
		return e.delete(ctx, id, opts)
	}
	return nil
}

func (e *fakeEngine) Ps(ctx context.Context, id string) ([]int, error) {
	e.record("ps %s", id)
	if e.ps != nil {
		return e.ps(ctx, id)
	}
	return nil, nil
}

// writePid returns a fake create hook that writes pid to the pid file, as
// `runc create --pid-file` does.
func writePid(pid int) func(context.Context, string, string, *runc.CreateOpts) error {
	return func(_ context.Context, _, _ string, opts *runc.CreateOpts) error {
		return os.WriteFile(opts.PidFile, []byte(fmt.Sprint(pid)), 0o600)
	}
}

func numGoroutines() int { return runtime.NumGoroutine() }
