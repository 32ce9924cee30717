package cgroups

import (
	"strings"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
)

// userHZ is the kernel's USER_HZ, the unit of cpuacct.stat: 100 on every
// Linux architecture (sysconf(_SC_CLK_TCK)), as containerd's cgroup1 also
// assumes to avoid cgo.
const userHZ = 100

// statsV1 reads a container's metrics from its cgroup v1 directories, by
// subsystem name as runc records them, filling what containerd's cgroup1
// Stat fills. procDir is where /proc is (for block device names).
func statsV1(paths map[string]string, procDir string) (*v1.Metrics, error) {
	// The subsystems that have stats, each with what reads its directory.
	// cpuacct and cpu both fill CPU, made here as cgroup1 makes it.
	readers := []struct {
		subsystem string
		read      func(dir, procDir string, m *v1.Metrics) error
	}{
		{"cpuacct", cpuacctV1},
		{"cpu", cpuV1},
		{"memory", memoryV1},
		{"pids", pidsV1},
		{"blkio", blkioV1},
		{"hugetlb", hugetlbV1},
		{"rdma", rdmaV1},
	}
	m := &v1.Metrics{CPU: &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}}}
	for _, r := range readers {
		dir := paths[r.subsystem]
		if dir == "" {
			continue
		}
		if err := checkDir(dir); err != nil {
			return nil, err
		}
		if err := r.read(dir, procDir, m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// cpuacctV1 fills CPU usage: cpuacct.usage and cpuacct.usage_percpu are in
// nanoseconds, cpuacct.stat in USER_HZ ticks.
func cpuacctV1(dir, _ string, m *v1.Metrics) error {
	u := m.CPU.Usage
	if err := readUint(dir, "cpuacct.usage", maxV1, &u.Total); err != nil {
		return err
	}
	data, ok, err := readFile(dir, "cpuacct.usage_percpu")
	if err != nil {
		return err
	}
	if ok {
		for _, s := range strings.Fields(data) {
			v, err := parseUint(s)
			if err != nil {
				return badFormat(dir, "cpuacct.usage_percpu", s, err)
			}
			u.PerCPU = append(u.PerCPU, v)
		}
	}
	var user, system uint64
	ok, err = readFields(dir, "cpuacct.stat", []field{{"user", &user}, {"system", &system}})
	if ok {
		u.User = user * (1e9 / userHZ)
		u.Kernel = system * (1e9 / userHZ)
	}
	return err
}

// cpuV1 fills CPU throttling from cpu.stat.
func cpuV1(dir, _ string, m *v1.Metrics) error {
	t := m.CPU.Throttling
	_, err := readFields(dir, "cpu.stat", []field{
		{"nr_periods", &t.Periods},
		{"nr_throttled", &t.ThrottledPeriods},
		{"throttled_time", &t.ThrottledTime},
	})
	return err
}

// memoryStatV1 maps memory.stat's keys to their fields.
func memoryStatV1(s *v1.MemoryStat) []field {
	return []field{
		{"cache", &s.Cache}, {"rss", &s.RSS}, {"rss_huge", &s.RSSHuge},
		{"mapped_file", &s.MappedFile}, {"dirty", &s.Dirty}, {"writeback", &s.Writeback},
		{"pgpgin", &s.PgPgIn}, {"pgpgout", &s.PgPgOut},
		{"pgfault", &s.PgFault}, {"pgmajfault", &s.PgMajFault},
		{"inactive_anon", &s.InactiveAnon}, {"active_anon", &s.ActiveAnon},
		{"inactive_file", &s.InactiveFile}, {"active_file", &s.ActiveFile},
		{"unevictable", &s.Unevictable},
		{"hierarchical_memory_limit", &s.HierarchicalMemoryLimit},
		{"hierarchical_memsw_limit", &s.HierarchicalSwapLimit},
		{"total_cache", &s.TotalCache}, {"total_rss", &s.TotalRSS}, {"total_rss_huge", &s.TotalRSSHuge},
		{"total_mapped_file", &s.TotalMappedFile}, {"total_dirty", &s.TotalDirty},
		{"total_writeback", &s.TotalWriteback},
		{"total_pgpgin", &s.TotalPgPgIn}, {"total_pgpgout", &s.TotalPgPgOut},
		{"total_pgfault", &s.TotalPgFault}, {"total_pgmajfault", &s.TotalPgMajFault},
		{"total_inactive_anon", &s.TotalInactiveAnon}, {"total_active_anon", &s.TotalActiveAnon},
		{"total_inactive_file", &s.TotalInactiveFile}, {"total_active_file", &s.TotalActiveFile},
		{"total_unevictable", &s.TotalUnevictable},
	}
}

// memoryV1 fills Memory (memory.stat and the usage, max usage, failcnt
// and limit of memory, memsw, kmem and kmem.tcp) and MemoryOomControl.
func memoryV1(dir, _ string, m *v1.Metrics) error {
	s := &v1.MemoryStat{Usage: &v1.MemoryEntry{}, Swap: &v1.MemoryEntry{}, Kernel: &v1.MemoryEntry{}, KernelTCP: &v1.MemoryEntry{}}
	m.Memory = s
	if _, err := readFields(dir, "memory.stat", memoryStatV1(s)); err != nil {
		return err
	}
	for _, e := range []struct {
		prefix string
		entry  *v1.MemoryEntry
	}{
		{"memory.", s.Usage},
		{"memory.memsw.", s.Swap},
		{"memory.kmem.", s.Kernel},
		{"memory.kmem.tcp.", s.KernelTCP},
	} {
		for _, f := range []field{
			{"usage_in_bytes", &e.entry.Usage},
			{"max_usage_in_bytes", &e.entry.Max},
			{"failcnt", &e.entry.Failcnt},
			{"limit_in_bytes", &e.entry.Limit},
		} {
			if err := readUint(dir, e.prefix+f.key, maxV1, f.dst); err != nil {
				return err
			}
		}
	}
	oom := &v1.MemoryOomControl{}
	m.MemoryOomControl = oom
	_, err := readFields(dir, "memory.oom_control", []field{
		{"oom_kill_disable", &oom.OomKillDisable},
		{"under_oom", &oom.UnderOom},
		{"oom_kill", &oom.OomKill},
	})
	return err
}

// pidsV1 fills Pids; a limit of "max" reads as 0.
func pidsV1(dir, _ string, m *v1.Metrics) error {
	p := &v1.PidsStat{}
	m.Pids = p
	if err := readUint(dir, "pids.current", maxV1, &p.Current); err != nil {
		return err
	}
	return readUint(dir, "pids.max", maxV1, &p.Limit)
}

// hugetlbV1 fills Hugetlb, one entry per page size the cgroup has files
// for (hugetlb.<size>.usage_in_bytes), in name order.
func hugetlbV1(dir, _ string, m *v1.Metrics) error {
	sizes, err := hugePageSizes(dir, ".usage_in_bytes")
	if err != nil {
		return err
	}
	for _, size := range sizes {
		h := &v1.HugetlbStat{Pagesize: size}
		for _, f := range []field{
			{"usage_in_bytes", &h.Usage},
			{"max_usage_in_bytes", &h.Max},
			{"failcnt", &h.Failcnt},
		} {
			if err := readUint(dir, "hugetlb."+size+"."+f.key, maxV1, f.dst); err != nil {
				return err
			}
		}
		m.Hugetlb = append(m.Hugetlb, h)
	}
	return nil
}
