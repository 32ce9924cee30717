package cgroups

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
)

// Stats reads the metrics of the container whose cgroup directories are
// paths, in the form runc records them (state.json's cgroup_paths): by v1
// subsystem name, the key "" being the container's directory in the
// unified (v2) hierarchy.
//
// The answer is what containerd-shim-runc-v2 answers, in the types
// containerd decodes: *cgroup1/stats.Metrics (io.containerd.cgroups.v1.
// Metrics) when paths names any v1 subsystem, as on a v1 or a hybrid host
// (the runc shim also reads v1 there); otherwise *cgroup2/stats.Metrics
// (io.containerd.cgroups.v2.Metrics) from paths[""]. The files are read
// here rather than through containerd's cgroup1 and cgroup2 packages,
// which would link godbus, go-systemd and cilium/ebpf into every shim.
//
// A file that is missing (a controller not enabled, no swap accounting)
// leaves its fields zero; a cgroup directory that is missing is
// errdefs.ErrNotFound; content that is not what the kernel writes is
// errdefs.ErrInternal naming the file and line.
func Stats(paths map[string]string) (proto.Message, error) {
	return stats(paths, "/proc")
}

func stats(paths map[string]string, procDir string) (proto.Message, error) {
	for subsystem, dir := range paths {
		if subsystem != "" && dir != "" {
			return statsV1(paths, procDir)
		}
	}
	if paths[""] == "" {
		return nil, fmt.Errorf("no cgroup: %w", errdefs.ErrNotFound)
	}
	return statsV2(paths[""])
}
