package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// ProcPaths returns the cgroup directories of process pid, read from
// /proc/<pid>/cgroup, in the form runc records them (see Stats), for a
// runtime that keeps no runc state (crun). It assumes the hierarchies are
// mounted under root the usual way (systemd's and Debian's).
func ProcPaths(root string, pid int) (map[string]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("cgroups of pid %d: %w", pid, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return procPaths(root, string(data))
}

// procPaths maps the lines of a /proc/<pid>/cgroup to directories: a v1
// line "4:cpu,cpuacct:/p" gives cpu and cpuacct <root>/cpu,cpuacct/p (the
// mount point systemd makes for co-mounted controllers, and the name of
// one mounted alone), a named one "1:name=systemd:/p" gives name=systemd
// <root>/systemd/p, and the unified line "0::/p" gives "" <root>/p on a
// v2 host and <root>/unified/p on a hybrid one.
func procPaths(root, data string) (map[string]string, error) {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	unified := err == nil
	paths := make(map[string]string)
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			return nil, fmt.Errorf("parse /proc/<pid>/cgroup: %q: %w", line, errdefs.ErrInternal)
		}
		controllers, rel := parts[1], parts[2]
		switch {
		case controllers == "":
			if unified {
				paths[""] = filepath.Join(root, rel)
			} else if fi, err := os.Stat(filepath.Join(root, "unified")); err == nil && fi.IsDir() {
				paths[""] = filepath.Join(root, "unified", rel)
			}
		case unified:
			// A v2 host has no v1 hierarchy to map the line to.
		default:
			mount := strings.TrimPrefix(controllers, "name=")
			for _, c := range strings.Split(controllers, ",") {
				paths[c] = filepath.Join(root, mount, rel)
			}
		}
	}
	return paths, nil
}
