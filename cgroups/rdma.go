package cgroups

import (
	"math"
	"strconv"
	"strings"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// rdmaEntry is one line of rdma.current or rdma.max, the same file format
// on v1 and v2: "mlx4_0 hca_handle=2 hca_object=2000".
type rdmaEntry struct {
	device           string
	handles, objects uint32
}

// readRdma reads rdma.current or rdma.max; a limit of "max" reads as
// math.MaxUint32, on v1 and v2 alike, as containerd's cgroups reads it.
func readRdma(dir, name string) (entries []rdmaEntry, ok bool, err error) {
	data, ok, err := readFile(dir, name)
	if !ok {
		return nil, false, err
	}
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, false, badFormat(dir, name, line, nil)
		}
		e := rdmaEntry{device: f[0]}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n := uint64(math.MaxUint32)
			if v != "max" {
				if n, err = strconv.ParseUint(v, 10, 32); err != nil {
					return nil, false, badFormat(dir, name, line, err)
				}
			}
			switch k {
			case "hca_handle":
				e.handles = uint32(n)
			case "hca_object":
				e.objects = uint32(n)
			default:
				return nil, false, badFormat(dir, name, line, nil)
			}
		}
		entries = append(entries, e)
	}
	return entries, true, nil
}

// rdmaV1 fills Rdma when the cgroup has both files.
func rdmaV1(dir, _ string, m *v1.Metrics) error {
	cur, ok1, err := readRdma(dir, "rdma.current")
	if err != nil {
		return err
	}
	limit, ok2, err := readRdma(dir, "rdma.max")
	if err != nil || !ok1 || !ok2 {
		return err
	}
	conv := func(in []rdmaEntry) []*v1.RdmaEntry {
		var out []*v1.RdmaEntry
		for _, e := range in {
			out = append(out, &v1.RdmaEntry{Device: e.device, HcaHandles: e.handles, HcaObjects: e.objects})
		}
		return out
	}
	m.Rdma = &v1.RdmaStat{Current: conv(cur), Limit: conv(limit)}
	return nil
}

// rdmaV2 fills Rdma, empty when the controller is not enabled, as
// containerd's cgroup2 leaves it.
func rdmaV2(dir string, m *v2.Metrics) error {
	r := &v2.RdmaStat{}
	m.Rdma = r
	for _, f := range []struct {
		name string
		dst  *[]*v2.RdmaEntry
	}{{"rdma.current", &r.Current}, {"rdma.max", &r.Limit}} {
		entries, _, err := readRdma(dir, f.name)
		if err != nil {
			return err
		}
		for _, e := range entries {
			*f.dst = append(*f.dst, &v2.RdmaEntry{Device: e.device, HcaHandles: e.handles, HcaObjects: e.objects})
		}
	}
	return nil
}
