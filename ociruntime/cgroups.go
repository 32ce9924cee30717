package ociruntime

import (
	"errors"
	"os"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// CgroupPaths returns the cgroup_paths runc recorded for id in its
// state.json. A runtime that keeps no such record (crun), or a record
// that names none, is answered from the init's /proc/<pid>/cgroup; the
// caller makes sure pid was still the container's init meanwhile.
func (r *Runc) CgroupPaths(id string, pid int) (map[string]string, error) {
	st, err := r.state(id)
	switch {
	case err == nil && len(st.CgroupPaths) > 0:
		return st.CgroupPaths, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	root := r.cgroupRoot
	if root == "" {
		root = cgroups.DefaultRoot
	}
	return cgroups.ProcPaths(root, pid)
}
