// Package ociruntime is the shim's one boundary with the OCI runtime
// binary (runc, or a runtime with runc's command line such as crun). Above
// it, the process package asks for a container to be created, started,
// signalled, deleted; nothing above it knows runc's private files, its
// error wording or its version.
//
// # What a Runtime does
//
// Runc runs the runtime binary through go-runc for every call, with the
// container's bundle as the working directory and runc's JSON log in the
// bundle, so that a failed call reports runc's own last error (see fail).
// Errors come back typed: a container the runtime does not have is
// errdefs.ErrNotFound; Delete of such a container is success.
//
// # Direct paths
//
// Two calls on every container's lifecycle can be done without running
// the binary, each saving one runc exec (about 6 ms here):
//
//   - Start of a created container reads runc's exec fifo, as `runc
//     start` does (its Container.exec);
//   - Delete of a stopped container removes its cgroup directories and
//     its state directory, as `runc delete` does for a stopped container.
//
// Both read runc's private state.json and are exact only while runc does
// nothing more in those commands. So they are taken only when all of
// these hold, and the binary is run otherwise:
//
//   - the binary says it is runc of a minor version the test matrix covers
//     (DirectMinors; probed once per binary, see probe.go);
//   - the record says there is nothing else to do: no poststart hook at
//     start (some runc versions run them in `runc start`), no poststop
//     hook, no PID namespace shared with other processes, no systemd,
//     rootless or Intel RDT cgroups at delete.
//
// `runc start` relays a container's sd_notify READY=1 when NOTIFY_SOCKET
// is in its environment (a containerd started by systemd with
// Type=notify has it); go-runc strips it from every runc it runs, for the
// runc shim too, so that step never happens and the direct start skips
// nothing. conformance_test.go runs every lifecycle both ways with every
// runc of the matrix and compares hooks, NOTIFY_SOCKET, cgroups, state
// and processes left.
//
// A signal to one process of a container goes through its pidfd in the
// process package (runc kill does no more than kill(2) for one process);
// a signal to all of them, or SIGKILL to a frozen container, runs `runc
// kill`.
//
// # Where cgroups are
//
// CgroupPaths reads cgroup_paths from runc's record and, when the record
// has none (crun keeps no state.json; a future runc may rename the field),
// the container init's /proc/<pid>/cgroup.
//
// # What the runtime can do
//
// Features runs `<binary> features` for the shim's -info, which
// containerd reads to decide whether the runtime supports user
// namespaces and idmapped mounts. The answer is kept on disk per binary
// file (features.go), since containerd asks before every create of a
// container with idmapped mounts.
package ociruntime

import (
	"context"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Runtime is the OCI runtime for one container's processes, as the
// process package uses it. It is the boundary below which unit tests may
// fake.
type Runtime interface {
	// Create runs `create`, leaving the container's init waiting to be
	// started.
	Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	// Start starts the created container whose init pidfd refers to
	// (-1 when there is none: then the binary always runs).
	Start(ctx context.Context, id string, pidfd int) error
	// Exec runs a process in the container, detached.
	Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	// Kill signals the container's init, or with all every process in
	// its cgroups.
	Kill(ctx context.Context, id string, sig int, all bool) error
	// Delete removes the container, killing it if it was never started;
	// stopped says its init has exited, which allows the direct delete.
	// A container the runtime does not have is deleted already.
	Delete(ctx context.Context, id string, stopped bool) error
	// Ps lists the pids of the container's processes.
	Ps(ctx context.Context, id string) ([]int, error)
	// Update changes the container's resources.
	Update(ctx context.Context, id string, resources *specs.LinuxResources) error
	// Pause and Resume freeze and thaw every process of the container.
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// CgroupPaths returns the cgroup directories of container id, whose
	// init process is pid, by v1 subsystem name, the key "" being its
	// unified (v2) directory.
	CgroupPaths(id string, pid int) (map[string]string, error)
}

var _ Runtime = (*Runc)(nil)
