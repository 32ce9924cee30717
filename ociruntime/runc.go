package ociruntime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultRoot is where runc keeps container state unless the runtime
// options name another root; the namespace is appended, as the runc shim
// does, so namespaces cannot collide.
const DefaultRoot = "/run/containerd/runc"

// Options are the fields of containerd's io.containerd.runc.v1.Options
// the shim acts on, decoded by service so this package stays free of
// protobuf types.
type Options struct {
	BinaryName    string `json:"binary_name,omitempty"`
	Root          string `json:"root,omitempty"`
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	NoPivotRoot   bool   `json:"no_pivot_root,omitempty"`
	NoNewKeyring  bool   `json:"no_new_keyring,omitempty"`
	IoUID         uint32 `json:"io_uid,omitempty"`
	IoGID         uint32 `json:"io_gid,omitempty"`
	ShimCgroup    string `json:"shim_cgroup,omitempty"`
	CriuImagePath string `json:"criu_image_path,omitempty"`
	CriuWorkPath  string `json:"criu_work_path,omitempty"`
	// Engine chooses how execs run: EngineRunc ("" too) or
	// EngineLibcontainer (engine.go). Not one of runc's options: it is
	// set by the TOML options CRI passes (key "engine").
	Engine string `json:"engine,omitempty"`
}

// Runc is the Runtime for one container: go-runc's client for the binary
// the options name, plus the direct paths (direct.go).
type Runc struct {
	client *runc.Runc
	// cgroupRoot is where every cgroup the shim may remove lives.
	cgroupRoot string
	// direct says whether the direct paths may be taken at all; a test
	// turns them off to compare with the binary (conformance_test.go).
	direct bool

	// helper is the libcontainer exec helper's path when the options
	// choose that engine, else "" (engine.go). Set by New only.
	helper string
	// useHelper says the options chose the libcontainer engine.
	useHelper bool

	// probe is what the binary said of itself, asked for by Create.
	probeOnce sync.Once
	probe     *probe

	mu sync.Mutex
	// states caches runc's record of each container by id: what the
	// shim reads of it (hooks, namespaces, cgroups) is fixed at create,
	// so the OOM watch, the start and the delete parse state.json once.
	// Guarded by mu; an entry goes with the container's delete.
	states map[string]*runcState
}

// New returns the runtime for one container. Its log file lives in the
// bundle so that a failed call can report runc's own words (see fail).
//
// Every runtime command runs in the bundle: the runc shim's runtime
// inherits the shim's cwd, which containerd sets to the bundle, and
// runtime wrappers rely on it (containerd's failpoint runtime reads
// ./config.json). A bundle that is already gone (containerd removes it
// after the shim's delete) must not fail the command: the runtime then
// runs in "/" with no log file, as it can still delete the container.
func New(opts Options, namespace, bundle string) *Runc {
	binary := opts.BinaryName
	if binary == "" {
		binary = runc.DefaultCommand
	}
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	workDir, logFile := bundle, filepath.Join(bundle, "log.json")
	if fi, err := os.Stat(bundle); err != nil || !fi.IsDir() {
		workDir, logFile = "/", ""
	}
	r := &Runc{direct: true, client: &runc.Runc{
		Command:       binary,
		Root:          filepath.Join(root, namespace),
		Log:           logFile,
		LogFormat:     runc.JSON,
		WorkDir:       workDir,
		Setpgid:       true,
		SystemdCgroup: opts.SystemdCgroup,
	}}
	if opts.Engine == EngineLibcontainer {
		r.useHelper, r.helper = true, execHelperPath()
	}
	return r
}

// Create runs `create`. It also asks the binary, once per binary and in
// parallel, what it is (probe.go): Start and Delete need to know.
func (r *Runc) Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
	r.startProbe()
	return r.fail("create", id, r.client.Create(ctx, id, bundle, opts))
}

// Start starts a created container: directly when runc would do nothing
// more than read its exec fifo, otherwise with `start`.
func (r *Runc) Start(ctx context.Context, id string, pidfd int) error {
	if pidfd >= 0 && r.directOK(ctx) {
		if done, err := r.startCreated(ctx, id, pidfd); done {
			return err
		}
	}
	return r.fail("start", id, r.client.Start(ctx, id))
}

// Exec runs `exec`; runc's words come from opts.LogFile when it is set.
// With the libcontainer engine, the helper runs instead of the binary
// when the binary is a runc whose state.json the matrix covers (the same
// gate as the direct paths: libcontainer reads that record); any other
// runtime runs its binary.
func (r *Runc) Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error {
	logPath := r.client.Log
	if opts != nil && opts.LogFile != "" {
		logPath = opts.LogFile
	}
	if r.useHelper && helperCovers(opts) && r.directOK(ctx) {
		return failLog("exec", id, logPath, r.execHelper(ctx, id, spec, opts, logPath))
	}
	return failLog("exec", id, logPath, r.client.Exec(ctx, id, spec, opts))
}

// Kill runs `kill`, with --all when all is set.
func (r *Runc) Kill(ctx context.Context, id string, sig int, all bool) error {
	return r.fail("kill", id, r.client.Kill(ctx, id, sig, &runc.KillOpts{All: all}))
}

// Delete removes the container: directly when it has stopped and runc
// would only remove its cgroups and state, otherwise with `delete
// --force`. A container whose state directory is gone is not asked
// about: the runtime would only say it does not exist. That holds for
// every runtime with runc's command line, which keeps a container's
// state in <root>/<id>, and is what makes containerd's `delete` action
// after a clean shim exit cheap.
func (r *Runc) Delete(ctx context.Context, id string, stopped bool) error {
	if r.forgotten(id) {
		r.forget(id)
		return nil
	}
	if stopped && r.directOK(ctx) {
		if done, err := r.deleteStopped(ctx, id); done {
			return err
		}
	}
	err := r.fail("delete", id, r.client.Delete(ctx, id, &runc.DeleteOpts{Force: true}))
	if err == nil || IsNotFound(err) {
		r.forget(id)
		return nil
	}
	return err
}

// Ps runs `ps`.
func (r *Runc) Ps(ctx context.Context, id string) ([]int, error) {
	pids, err := r.client.Ps(ctx, id)
	return pids, r.fail("ps", id, err)
}

// Update runs `update`.
func (r *Runc) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	return r.fail("update", id, r.client.Update(ctx, id, resources))
}

// Pause runs `pause`.
func (r *Runc) Pause(ctx context.Context, id string) error {
	return r.fail("pause", id, r.client.Pause(ctx, id))
}

// Resume runs `resume`.
func (r *Runc) Resume(ctx context.Context, id string) error {
	return r.fail("resume", id, r.client.Resume(ctx, id))
}

// stateDir is the runtime's state directory of container id.
func (r *Runc) stateDir(id string) string { return filepath.Join(r.client.Root, id) }

// forgotten reports that id has no state directory under the runtime's
// root.
func (r *Runc) forgotten(id string) bool {
	_, err := os.Lstat(r.stateDir(id))
	return errors.Is(err, os.ErrNotExist)
}

// state returns runc's record of id, read once.
func (r *Runc) state(id string) (*runcState, error) {
	r.mu.Lock()
	st := r.states[id]
	r.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := readRuncState(r.stateDir(id))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.states == nil {
		r.states = map[string]*runcState{}
	}
	r.states[id] = st
	return st, nil
}

func (r *Runc) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.states, id)
}
