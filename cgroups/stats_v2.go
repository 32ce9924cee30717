package cgroups

import (
	"strconv"
	"strings"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// statsV2 reads a container's metrics from its cgroup v2 directory,
// filling what containerd's cgroup2 Manager.Stat fills.
func statsV2(dir string) (*v2.Metrics, error) {
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	m := &v2.Metrics{}
	for _, read := range []func(string, *v2.Metrics) error{pidsV2, cpuV2, memoryV2, memoryEventsV2, ioV2, rdmaV2, hugetlbV2} {
		if err := read(dir, m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// pidsV2 fills Pids; a limit of "max" reads as math.MaxUint64.
func pidsV2(dir string, m *v2.Metrics) error {
	p := &v2.PidsStat{}
	m.Pids = p
	if err := readUint(dir, "pids.current", maxV2, &p.Current); err != nil {
		return err
	}
	return readUint(dir, "pids.max", maxV2, &p.Limit)
}

// cpuV2 fills CPU from cpu.stat (microseconds) and cpu.pressure.
func cpuV2(dir string, m *v2.Metrics) error {
	c := &v2.CPUStat{}
	m.CPU = c
	if _, err := readFields(dir, "cpu.stat", []field{
		{"usage_usec", &c.UsageUsec},
		{"user_usec", &c.UserUsec},
		{"system_usec", &c.SystemUsec},
		{"nr_periods", &c.NrPeriods},
		{"nr_throttled", &c.NrThrottled},
		{"throttled_usec", &c.ThrottledUsec},
		{"nr_bursts", &c.NrBursts},
		{"burst_usec", &c.BurstUsec},
	}); err != nil {
		return err
	}
	var err error
	c.PSI, err = readPSI(dir, "cpu.pressure")
	return err
}

// memoryStatV2 maps memory.stat's keys to their fields.
func memoryStatV2(s *v2.MemoryStat) []field {
	return []field{
		{"anon", &s.Anon}, {"file", &s.File}, {"kernel_stack", &s.KernelStack},
		{"slab", &s.Slab}, {"sock", &s.Sock}, {"shmem", &s.Shmem},
		{"file_mapped", &s.FileMapped}, {"file_dirty", &s.FileDirty},
		{"file_writeback", &s.FileWriteback}, {"anon_thp", &s.AnonThp},
		{"inactive_anon", &s.InactiveAnon}, {"active_anon", &s.ActiveAnon},
		{"inactive_file", &s.InactiveFile}, {"active_file", &s.ActiveFile},
		{"unevictable", &s.Unevictable},
		{"slab_reclaimable", &s.SlabReclaimable}, {"slab_unreclaimable", &s.SlabUnreclaimable},
		{"pgfault", &s.Pgfault}, {"pgmajfault", &s.Pgmajfault},
		{"workingset_refault", &s.WorkingsetRefault},
		{"workingset_activate", &s.WorkingsetActivate},
		{"workingset_nodereclaim", &s.WorkingsetNodereclaim},
		{"pgrefill", &s.Pgrefill}, {"pgscan", &s.Pgscan}, {"pgsteal", &s.Pgsteal},
		{"pgactivate", &s.Pgactivate}, {"pgdeactivate", &s.Pgdeactivate},
		{"pglazyfree", &s.Pglazyfree}, {"pglazyfreed", &s.Pglazyfreed},
		{"thp_fault_alloc", &s.ThpFaultAlloc}, {"thp_collapse_alloc", &s.ThpCollapseAlloc},
	}
}

// memoryV2 fills Memory: memory.stat, the usage, limit and peak of
// memory and swap, and memory.pressure. Without memory.stat (the memory
// controller not enabled) it is empty, as in containerd's cgroup2.
func memoryV2(dir string, m *v2.Metrics) error {
	s := &v2.MemoryStat{}
	m.Memory = s
	if ok, err := readFields(dir, "memory.stat", memoryStatV2(s)); !ok {
		return err
	}
	for _, f := range []field{
		{"memory.current", &s.Usage},
		{"memory.max", &s.UsageLimit},
		{"memory.peak", &s.MaxUsage},
		{"memory.swap.current", &s.SwapUsage},
		{"memory.swap.max", &s.SwapLimit},
		{"memory.swap.peak", &s.SwapMaxUsage},
	} {
		if err := readUint(dir, f.key, maxV2, f.dst); err != nil {
			return err
		}
	}
	var err error
	s.PSI, err = readPSI(dir, "memory.pressure")
	return err
}

// memoryEventsV2 fills MemoryEvents from memory.events; it stays nil when
// the file is missing or empty, as in containerd's cgroup2.
func memoryEventsV2(dir string, m *v2.Metrics) error {
	e := &v2.MemoryEvents{}
	kv, ok, err := readKV(dir, "memory.events")
	if !ok || len(kv) == 0 {
		return err
	}
	for _, f := range []field{
		{"low", &e.Low}, {"high", &e.High}, {"max", &e.Max},
		{"oom", &e.Oom}, {"oom_kill", &e.OomKill}, {"oom_group_kill", &e.OomGroupKill},
	} {
		*f.dst = kv[f.key]
	}
	m.MemoryEvents = e
	return nil
}

// ioV2 fills Io from io.stat ("major:minor key=value ..." per device;
// keys other than bytes and ios read and written are ignored) and
// io.pressure.
func ioV2(dir string, m *v2.Metrics) error {
	s := &v2.IOStat{}
	m.Io = s
	data, ok, err := readFile(dir, "io.stat")
	if err != nil {
		return err
	}
	if ok {
		for _, line := range strings.Split(data, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			e, err := parseIOLine(f)
			if err != nil {
				return badFormat(dir, "io.stat", line, err)
			}
			s.Usage = append(s.Usage, e)
		}
	}
	s.PSI, err = readPSI(dir, "io.pressure")
	return err
}

func parseIOLine(f []string) (*v2.IOEntry, error) {
	major, minor, ok := strings.Cut(f[0], ":")
	if !ok {
		return nil, strconv.ErrSyntax
	}
	e := &v2.IOEntry{}
	var err error
	if e.Major, err = strconv.ParseUint(major, 10, 64); err != nil {
		return nil, err
	}
	if e.Minor, err = strconv.ParseUint(minor, 10, 64); err != nil {
		return nil, err
	}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, strconv.ErrSyntax
		}
		var dst *uint64
		switch k {
		case "rbytes":
			dst = &e.Rbytes
		case "wbytes":
			dst = &e.Wbytes
		case "rios":
			dst = &e.Rios
		case "wios":
			dst = &e.Wios
		default:
			continue
		}
		if *dst, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// hugetlbV2 fills Hugetlb, one entry per page size the cgroup has files
// for (hugetlb.<size>.current), in name order; Failcnt is the "max" count
// of hugetlb.<size>.events.
func hugetlbV2(dir string, m *v2.Metrics) error {
	sizes, err := hugePageSizes(dir, ".current")
	if err != nil {
		return err
	}
	for _, size := range sizes {
		h := &v2.HugeTlbStat{Pagesize: size}
		if err := readUint(dir, "hugetlb."+size+".current", maxV2, &h.Current); err != nil {
			return err
		}
		if err := readUint(dir, "hugetlb."+size+".max", maxV2, &h.Max); err != nil {
			return err
		}
		if _, err := readFields(dir, "hugetlb."+size+".events", []field{{"max", &h.Failcnt}}); err != nil {
			return err
		}
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}

// readPSI reads a pressure file ("some avg10=0.00 avg60=0.00 avg300=0.00
// total=0", and a "full" line). It is nil when the file is missing or the
// kernel has PSI switched off.
func readPSI(dir, name string) (*v2.PSIStats, error) {
	data, ok, err := readFile(dir, name)
	if !ok {
		return nil, err
	}
	psi := &v2.PSIStats{}
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		d := &v2.PSIData{}
		switch f[0] {
		case "some":
			psi.Some = d
		case "full":
			psi.Full = d
		default:
			return nil, badFormat(dir, name, line, nil)
		}
		for _, kv := range f[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, badFormat(dir, name, line, nil)
			}
			var err error
			switch k {
			case "avg10":
				d.Avg10, err = strconv.ParseFloat(v, 64)
			case "avg60":
				d.Avg60, err = strconv.ParseFloat(v, 64)
			case "avg300":
				d.Avg300, err = strconv.ParseFloat(v, 64)
			case "total":
				d.Total, err = strconv.ParseUint(v, 10, 64)
			}
			if err != nil {
				return nil, badFormat(dir, name, line, err)
			}
		}
	}
	return psi, nil
}
