package process

import (
	"os"
	"path/filepath"

	runc "github.com/containerd/go-runc"
)

// DefaultRuntimeRoot is where runc keeps container state unless the
// runtime options name another root; the namespace is appended, as the
// runc shim does, so namespaces cannot collide.
const DefaultRuntimeRoot = "/run/containerd/runc"

// RuntimeOptions are the fields of containerd's io.containerd.runc.v1.Options
// the shim acts on, decoded by service so this package stays free of
// protobuf types.
type RuntimeOptions struct {
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
}

// NewRuncEngine returns the runtime client for one container. Its log file
// lives in the bundle so that a failed call can report runc's own words
// (see runtimeError).
//
// Every runtime command runs in the bundle: the runc shim's runtime
// inherits the shim's cwd, which containerd sets to the bundle, and
// runtime wrappers rely on it (containerd's failpoint runtime reads
// ./config.json). A bundle that is already gone (containerd removes it
// after the shim's delete) must not fail the command: the runtime then
// runs in "/" with no log file, as it can still delete the container.
func NewRuncEngine(opts RuntimeOptions, namespace, bundle string) *RuncEngine {
	binary := opts.BinaryName
	if binary == "" {
		binary = runc.DefaultCommand
	}
	root := opts.Root
	if root == "" {
		root = DefaultRuntimeRoot
	}
	workDir, logFile := bundle, filepath.Join(bundle, "log.json")
	if fi, err := os.Stat(bundle); err != nil || !fi.IsDir() {
		workDir, logFile = "/", ""
	}
	return &RuncEngine{Runc: &runc.Runc{
		Command:       binary,
		Root:          filepath.Join(root, namespace),
		Log:           logFile,
		LogFormat:     runc.JSON,
		WorkDir:       workDir,
		Setpgid:       true,
		SystemdCgroup: opts.SystemdCgroup,
	}}
}
