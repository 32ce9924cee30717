package process

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// fakeEngine is the OCI runtime below the ociruntime.Runtime boundary. It
// records each call as a line and runs the hook set for the verb, if any.
type fakeEngine struct {
	mu    sync.Mutex
	calls []string

	create func(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	start  func(ctx context.Context, id string, pidfd int) error
	exec   func(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	kill   func(ctx context.Context, id string, sig int, all bool) error
	delete func(ctx context.Context, id string, stopped bool) error
	ps     func(ctx context.Context, id string) ([]int, error)
	update func(ctx context.Context, id string, resources *specs.LinuxResources) error
	pause  func(ctx context.Context, id string) error
	resume func(ctx context.Context, id string) error
	// cgroups answers CgroupPaths; without it the runtime knows none.
	cgroups func(id string, pid int) (map[string]string, error)
}

var _ ociruntime.Runtime = (*fakeEngine)(nil)

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

func (e *fakeEngine) Start(ctx context.Context, id string, pidfd int) error {
	e.record("start %s", id)
	if e.start != nil {
		return e.start(ctx, id, pidfd)
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

func (e *fakeEngine) Kill(ctx context.Context, id string, sig int, all bool) error {
	e.record("kill %s %d all=%v", id, sig, all)
	if e.kill != nil {
		return e.kill(ctx, id, sig, all)
	}
	return nil
}

func (e *fakeEngine) Delete(ctx context.Context, id string, stopped bool) error {
	e.record("delete %s stopped=%v", id, stopped)
	if e.delete != nil {
		return e.delete(ctx, id, stopped)
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

func (e *fakeEngine) CgroupPaths(id string, pid int) (map[string]string, error) {
	if e.cgroups != nil {
		return e.cgroups(id, pid)
	}
	return nil, fmt.Errorf("fake runtime: no cgroups for %s: %w", id, errdefs.ErrNotFound)
}

// writePid returns a fake create hook that writes pid to the pid file, as
// `runc create --pid-file` does.
func writePid(pid int) func(context.Context, string, string, *runc.CreateOpts) error {
	return func(_ context.Context, _, _ string, opts *runc.CreateOpts) error {
		return os.WriteFile(opts.PidFile, []byte(fmt.Sprint(pid)), 0o600)
	}
}

// errNotFound is how the runtime answers for a container it does not have.
var errNotFound = fmt.Errorf("container does not exist: %w", errdefs.ErrNotFound)
