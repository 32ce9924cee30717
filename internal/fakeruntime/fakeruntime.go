// Package fakeruntime is the OCI runtime below ociruntime.Runtime, for the
// unit tests of the packages above it (the only place the project fakes).
// A Runtime records every call as a line ("create c1", "kill c1 9
// all=true", "delete c1 stopped=true") and runs the hook set for the verb;
// a verb without a hook succeeds and does nothing.
package fakeruntime

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

// Runtime is a fake ociruntime.Runtime; set the On hooks before use.
type Runtime struct {
	OnCreate  func(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	OnStart   func(ctx context.Context, id string, pidfd int) error
	OnExec    func(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	OnKill    func(ctx context.Context, id string, sig int, all bool) error
	OnDelete  func(ctx context.Context, id string, stopped bool) error
	OnPs      func(ctx context.Context, id string) ([]int, error)
	OnUpdate  func(ctx context.Context, id string, resources *specs.LinuxResources) error
	OnPause   func(ctx context.Context, id string) error
	OnResume  func(ctx context.Context, id string) error
	OnCgroups func(id string, pid int) (map[string]string, error)

	mu    sync.Mutex
	calls []string
}

var _ ociruntime.Runtime = (*Runtime)(nil)

func (r *Runtime) record(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

// Calls returns the calls made so far, one line each.
func (r *Runtime) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *Runtime) Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
	r.record("create %s", id)
	if r.OnCreate != nil {
		return r.OnCreate(ctx, id, bundle, opts)
	}
	return nil
}

func (r *Runtime) Start(ctx context.Context, id string, pidfd int) error {
	r.record("start %s", id)
	if r.OnStart != nil {
		return r.OnStart(ctx, id, pidfd)
	}
	return nil
}

func (r *Runtime) Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error {
	r.record("exec %s", id)
	if r.OnExec != nil {
		return r.OnExec(ctx, id, spec, opts)
	}
	return nil
}

func (r *Runtime) Kill(ctx context.Context, id string, sig int, all bool) error {
	r.record("kill %s %d all=%v", id, sig, all)
	if r.OnKill != nil {
		return r.OnKill(ctx, id, sig, all)
	}
	return nil
}

func (r *Runtime) Delete(ctx context.Context, id string, stopped bool) error {
	r.record("delete %s stopped=%v", id, stopped)
	if r.OnDelete != nil {
		return r.OnDelete(ctx, id, stopped)
	}
	return nil
}

func (r *Runtime) Ps(ctx context.Context, id string) ([]int, error) {
	r.record("ps %s", id)
	if r.OnPs != nil {
		return r.OnPs(ctx, id)
	}
	return nil, nil
}

func (r *Runtime) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	r.record("update %s", id)
	if r.OnUpdate != nil {
		return r.OnUpdate(ctx, id, resources)
	}
	return nil
}

func (r *Runtime) Pause(ctx context.Context, id string) error {
	r.record("pause %s", id)
	if r.OnPause != nil {
		return r.OnPause(ctx, id)
	}
	return nil
}

func (r *Runtime) Resume(ctx context.Context, id string) error {
	r.record("resume %s", id)
	if r.OnResume != nil {
		return r.OnResume(ctx, id)
	}
	return nil
}

// CgroupPaths answers from OnCgroups; without it the runtime knows no
// cgroups (NotFound), and the call is not recorded.
func (r *Runtime) CgroupPaths(id string, pid int) (map[string]string, error) {
	if r.OnCgroups != nil {
		return r.OnCgroups(id, pid)
	}
	return nil, fmt.Errorf("fake runtime: no cgroups for %s: %w", id, errdefs.ErrNotFound)
}

// WritePid is a create hook that writes pid to the pid file, as `runc
// create --pid-file` does.
func WritePid(pid int) func(context.Context, string, string, *runc.CreateOpts) error {
	return func(_ context.Context, _, _ string, opts *runc.CreateOpts) error {
		return os.WriteFile(opts.PidFile, []byte(fmt.Sprint(pid)), 0o600)
	}
}
