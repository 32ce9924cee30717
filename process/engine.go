package process

import (
	"context"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Engine is the OCI runtime as the shim uses it: the subset of go-runc's
// *runc.Runc that container processes need. It is the boundary below which
// unit tests may fake.
type Engine interface {
	Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	Start(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	Kill(ctx context.Context, id string, sig int, opts *runc.KillOpts) error
	Delete(ctx context.Context, id string, opts *runc.DeleteOpts) error
	Ps(ctx context.Context, id string) ([]int, error)
	Update(ctx context.Context, id string, resources *specs.LinuxResources) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

var _ Engine = (*runc.Runc)(nil)
