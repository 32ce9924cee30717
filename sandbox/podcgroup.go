package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The pod cgroup: the CRI PodSandboxConfig's cgroup_parent, which the
// kubelet names as its cgroup driver does, a path ("/kubepods/burstable/
// pod<uid>") with cgroupfs, a slice ("kubepods-burstable-pod<uid>.slice")
// with systemd. The containers' specs name it as their parent already (CRI
// builds their cgroupsPath from it); the shim puts the holder there, reads
// it for SandboxMetrics, writes pod-level resources to it and removes it
// when the pod goes.

// cgroupPath turns a cgroup parent into a path relative to the hierarchy
// roots; a systemd slice name is expanded as systemd does
// ("a-b-c.slice" is /a.slice/a-b.slice/a-b-c.slice).
func cgroupPath(parent string) string {
	if parent == "" {
		return ""
	}
	if strings.Contains(parent, "/") || !strings.HasSuffix(parent, ".slice") {
		return filepath.Clean("/" + parent)
	}
	name := strings.TrimSuffix(parent, ".slice")
	path, prefix := "/", ""
	for _, part := range strings.Split(name, "-") {
		if part == "" {
			return filepath.Clean("/" + parent)
		}
		prefix += part
		path = filepath.Join(path, prefix+".slice")
		prefix += "-"
	}
	return path
}

// hierarchyDirs returns the directories of rel in every hierarchy under
// root: one on a v2 host, one per v1 mount (and "unified") otherwise.
// Symlinked names of co-mounted controllers ("cpu" to "cpu,cpuacct") are
// skipped: their directory is already in. So is a directory that is not
// a hierarchy's root, one without cgroup.procs: /sys/fs/cgroup is a
// tmpfs, and anything may have made a plain directory there (a
// "cpu,cpuacct" made by hand where cpu and cpuacct are mounted apart was
// taken for a hierarchy, and the pod's cgroup files written into it).
func hierarchyDirs(root, rel string) ([]string, bool, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(root, rel)}, true, nil
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, false, err
	}
	var dirs []string
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 || !e.IsDir() {
			continue
		}
		if _, err := os.Lstat(filepath.Join(root, e.Name(), "cgroup.procs")); err != nil {
			continue
		}
		dirs = append(dirs, filepath.Join(root, e.Name(), rel))
	}
	return dirs, false, nil
}

// placeInPodCgroup creates the pod cgroup rel under root where it is
// missing and moves the holder, pid, into holderCgroup(rel, id), a leaf
// below it.
func placeInPodCgroup(root, rel, id string, pid int) error {
	return placeIn(root, holderCgroup(rel, id), pid)
}

// holderCgroup is the holder's cgroup: a leaf of the pod cgroup rel named
// by the sandbox id, where the pause container's cgroup is. Not rel
// itself: on cgroup v2 a cgroup with processes cannot give controllers
// to its children (the no-internal-process rule: its
// cgroup.subtree_control refuses them with EBUSY), so with the holder in
// the pod cgroup the containers' cgroups get none; runc 1.1.5 then turns
// such a cgroup threaded, whose cgroup.procs it cannot read to kill the
// container (EOPNOTSUPP), and StopPodSandbox hangs. v1 has the same
// layout, one for both.
func holderCgroup(rel, id string) string {
	return filepath.Join(rel, id)
}

func placeIn(root, rel string, pid int) error {
	dirs, _, err := hierarchyDirs(root, rel)
	if err != nil {
		return fmt.Errorf("cgroup %q: %w", rel, err)
	}
	for _, dir := range dirs {
		if err := mkdirCgroup(dir); err != nil {
			return fmt.Errorf("cgroup %q: %w", dir, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup %q: %w", dir, err)
		}
	}
	return nil
}

// mkdirCgroup makes dir and its missing parents; in a v1 cpuset hierarchy
// a new cgroup has no cpus or mems until given its parent's.
func mkdirCgroup(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirCgroup(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || strings.TrimSpace(string(cur)) != "" {
			continue
		}
		if v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, f), v, 0)
		}
	}
	return nil
}

// podCgroupPaths maps rel to its directories in the form cgroups.Stats
// reads: by v1 controller, "" for the unified hierarchy.
func podCgroupPaths(root, rel string) map[string]string {
	dirs, v2, err := hierarchyDirs(root, rel)
	paths := make(map[string]string)
	if err != nil {
		return paths
	}
	if v2 {
		paths[""] = dirs[0]
		return paths
	}
	for _, dir := range dirs {
		mount, _ := filepath.Rel(root, dir)
		mount = strings.SplitN(mount, "/", 2)[0]
		if mount == "unified" {
			paths[""] = dir
			continue
		}
		for _, c := range strings.Split(mount, ",") {
			paths[strings.TrimPrefix(c, "name=")] = dir
		}
	}
	return paths
}

// removePodCgroup removes the pod cgroup's directory in every hierarchy;
// one already gone is fine.
func removePodCgroup(rel string) error {
	dirs, _, err := hierarchyDirs("/sys/fs/cgroup", rel)
	if err != nil {
		return err
	}
	var errs []error
	for _, dir := range dirs {
		if err := removeCgroupTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes dir and the (empty) cgroups under it, deepest
// first.
func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && err != unix.ENOENT {
		return fmt.Errorf("remove cgroup %q: %w", dir, err)
	}
	return nil
}

// killPodCgroup SIGKILLs every process in the pod cgroup and the cgroups
// under it, in every hierarchy.
func killPodCgroup(rel string) {
	dirs, _, err := hierarchyDirs("/sys/fs/cgroup", rel)
	if err != nil {
		return
	}
	for _, dir := range dirs {
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
			return nil
		})
	}
}

// applyPodResources writes r to the pod cgroup under root.
func applyPodResources(root, rel string, r PodResources) error {
	dirs, v2, err := hierarchyDirs(root, rel)
	if err != nil {
		return err
	}
	write := func(dir, file string, v string) error {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(dir, file), err)
		}
		return nil
	}
	if v2 {
		dir := dirs[0]
		if r.CPUQuota != 0 || r.CPUPeriod != 0 {
			quota := "max"
			if r.CPUQuota > 0 {
				quota = strconv.FormatInt(r.CPUQuota, 10)
			}
			period := r.CPUPeriod
			if period == 0 {
				period = 100000
			}
			if err := write(dir, "cpu.max", fmt.Sprintf("%s %d", quota, period)); err != nil {
				return err
			}
		}
		if r.CPUShares != 0 {
			// runc's conversion of v1 shares to a v2 weight.
			weight := 1 + ((r.CPUShares-2)*9999)/262142
			if err := write(dir, "cpu.weight", strconv.FormatInt(weight, 10)); err != nil {
				return err
			}
		}
		if r.MemoryLimit != 0 {
			return write(dir, "memory.max", strconv.FormatInt(r.MemoryLimit, 10))
		}
		return nil
	}
	paths := podCgroupPaths(root, rel)
	if cpu := paths["cpu"]; cpu != "" {
		if r.CPUPeriod != 0 {
			if err := write(cpu, "cpu.cfs_period_us", strconv.FormatInt(r.CPUPeriod, 10)); err != nil {
				return err
			}
		}
		if r.CPUQuota != 0 {
			if err := write(cpu, "cpu.cfs_quota_us", strconv.FormatInt(r.CPUQuota, 10)); err != nil {
				return err
			}
		}
		if r.CPUShares != 0 {
			if err := write(cpu, "cpu.shares", strconv.FormatInt(r.CPUShares, 10)); err != nil {
				return err
			}
		}
	}
	if mem := paths["memory"]; mem != "" && r.MemoryLimit != 0 {
		return write(mem, "memory.limit_in_bytes", strconv.FormatInt(r.MemoryLimit, 10))
	}
	return nil
}
