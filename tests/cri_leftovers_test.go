package tests

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// leftovers lists what remains of a removed pod whose sandbox and
// container ids are ids: live processes among pids (its shim and
// container inits) or in its cgroup; mounts whose path names an id;
// files, directories and fifos named by an id under the daemon's
// directory (bundles, CRI state and root, fifos), in runc's state root and
// in the pod's cgroup (every v1 hierarchy, or the v2 one); the pod cgroup
// itself if the shim held the pod (its to remove; with a pause container
// the kubelet's); the pod shim's socket; and containerd, snapshot and CRI
// objects that still know an id.
func (p *criPod) leftovers(ids []string, pids []int) []string {
	e := p.e
	var out []string
	names := func(s string) bool {
		return slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(s, id) })
	}
	for _, pid := range pids {
		if alive(pid) {
			out = append(out, fmt.Sprintf("process %d %q", pid, cmdlineOf(pid)))
		}
	}
	cgroup := p.config.Linux.CgroupParent
	for _, pr := range listProcs() {
		if pr.state == 'Z' || slices.Contains(pids, pr.pid) {
			continue
		}
		if cg := procCgroups(pr.pid); strings.Contains(cg, cgroup+"/") {
			out = append(out, fmt.Sprintf("process %d %q in the pod's cgroup", pr.pid, cmdlineOf(pr.pid)))
		}
	}
	// Rootfs overlays and the pod's shm are mounted below the daemon's
	// directory, runc's state below /run/containerd.
	for _, dir := range []string{e.d.dir, "/run/containerd"} {
		for _, m := range mountsIn(dir) {
			if names(m.point) {
				out = append(out, fmt.Sprintf("mount %s (%s)", m.point, m.fstype))
			}
		}
	}
	roots := []string{e.d.dir, filepath.Join("/run/containerd/runc", criNamespace)}
	cgRoots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", cgroup))
	if cgroupV2() {
		cgRoots = []string{filepath.Join("/sys/fs/cgroup", cgroup)}
	}
	if p.sandboxer {
		for _, dir := range cgRoots {
			if _, err := os.Stat(dir); err == nil {
				out = append(out, "pod cgroup "+dir)
			}
		}
	}
	roots = append(roots, cgRoots...)
	for _, root := range roots {
		// Every fifo is reported; of a named directory, only the topmost
		// (the walk goes on inside, for fifos).
		var reported []string
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if path == e.d.logRoot {
				return fs.SkipDir // the kubelet's to clean, named by container name
			}
			fifo := d.Type()&fs.ModeNamedPipe != 0
			if !names(d.Name()) && !(fifo && names(path)) {
				return nil
			}
			under := slices.ContainsFunc(reported, func(dir string) bool { return strings.HasPrefix(path, dir+"/") })
			switch {
			case fifo:
				out = append(out, "fifo "+path)
			case under:
			case d.IsDir():
				out = append(out, "directory "+path)
				reported = append(reported, path)
			default:
				out = append(out, "file "+path)
			}
			return nil
		})
	}
	if p.shimSocket != "" {
		if _, err := os.Lstat(p.shimSocket); err == nil {
			out = append(out, "shim socket "+p.shimSocket)
		}
	}
	sn := e.d.client.SnapshotService(snapshotter)
	for _, id := range ids {
		if _, err := e.d.client.LoadContainer(e.ctx, id); err == nil {
			out = append(out, "containerd container "+id)
		}
		if _, err := sn.Stat(e.ctx, id); err == nil {
			out = append(out, "snapshot "+id)
		}
	}
	for _, id := range p.containers {
		_, err := e.d.rt.ContainerStatus(e.ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if status.Code(err) != codes.NotFound {
			out = append(out, fmt.Sprintf("CRI container %s (ContainerStatus: %v)", id, err))
		}
	}
	_, err := e.d.rt.PodSandboxStatus(e.ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.id})
	if status.Code(err) != codes.NotFound {
		out = append(out, fmt.Sprintf("CRI pod sandbox %s (PodSandboxStatus: %v)", p.id, err))
	}
	return out
}

// procCgroups returns /proc/<pid>/cgroup ("" when pid is gone).
func procCgroups(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return string(data)
}

// cgroupPath returns pid's cgroup path in the v1 hierarchy that holds
// controller (e.g. "memory", "cpu"), or "" if there is none.
func cgroupPath(pid int, controller string) string {
	for _, line := range strings.Split(procCgroups(pid), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), controller) {
			return parts[2]
		}
	}
	return ""
}
