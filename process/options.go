package process

import (
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
func NewRuncEngine(opts RuntimeOptions, namespace, bundle string) *RuncEngine {
	binary := opts.BinaryName
	if binary == "" {
		binary = runc.DefaultCommand
	}
	root := opts.Root
	if root == "" {
		root = DefaultRuntimeRoot
	}
	return &RuncEngine{Runc: &runc.Runc{
		Command:       binary,
		Root:          filepath.Join(root, namespace),
		Log:           filepath.Join(bundle, "log.json"),
		LogFormat:     runc.JSON,
		Setpgid:       true,
		SystemdCgroup: opts.SystemdCgroup,
	}}
}
