// Package cgroups places processes in cgroups and reads containers'
// stats (stats.go), on cgroup v1, hybrid and v2 hosts.
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// DefaultRoot is where the cgroup hierarchies are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// PlaceProcess moves pid into the cgroup at path, a path relative to the
// hierarchy roots (as the runc options' ShimCgroup is). On a v2 host that
// is one cgroup.procs; on v1 or hybrid, every hierarchy that has the path.
func PlaceProcess(root, path string, pid int) error {
	rel := filepath.Clean("/" + path)
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return writeProcs(filepath.Join(root, rel), pid)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	placed := 0
	for _, e := range entries {
		// "unified" is the hybrid host's v2 tree; its cgroups are managed
		// alongside the v1 ones and written the same way.
		dir := filepath.Join(root, e.Name(), rel)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		if err := writeProcs(dir, pid); err != nil {
			return err
		}
		placed++
	}
	if placed == 0 {
		return fmt.Errorf("cgroup %q exists in no hierarchy under %s: %w", path, root, os.ErrNotExist)
	}
	return nil
}

func writeProcs(dir string, pid int) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cgroup %q: %w", dir, err)
	}
	return err
}
