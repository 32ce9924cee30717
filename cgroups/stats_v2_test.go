package cgroups

import (
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
)

// v2Tree is a container's v2 cgroup as a 6.x kernel writes it, with
// distinct numbers so a misplaced value shows. Nobody boots cgroup v2 on
// the test host (hybrid), so this tree is all the v2 reader is tested on.
var v2Tree = map[string]string{
	"pids.current": "2\n",
	"pids.max":     "max\n",
	"cpu.stat": "usage_usec 1001\nuser_usec 1002\nsystem_usec 1003\nnice_usec 0\ncore_sched.force_idle_usec 0\n" +
		"nr_periods 1004\nnr_throttled 1005\nthrottled_usec 1006\nnr_bursts 1007\nburst_usec 1008\n",
	"cpu.pressure": "some avg10=0.50 avg60=1.25 avg300=2.00 total=1009\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1010\n",
	"memory.stat": "anon 2001\nfile 2002\nkernel 9\nkernel_stack 2003\npagetables 9\nsec_pagetables 0\npercpu 9\n" +
		"sock 2005\nvmalloc 0\nshmem 2006\nzswap 0\nfile_mapped 2007\nfile_dirty 2008\nfile_writeback 2009\n" +
		"swapcached 0\nanon_thp 2010\nfile_thp 0\nshmem_thp 0\ninactive_anon 2011\nactive_anon 2012\n" +
		"inactive_file 2013\nactive_file 2014\nunevictable 2015\nslab_reclaimable 2016\nslab_unreclaimable 2017\n" +
		"slab 2004\nworkingset_refault_anon 0\nworkingset_refault 2020\nworkingset_activate 2021\n" +
		"workingset_nodereclaim 2022\npgscan 2024\npgsteal 2025\npgscan_kswapd 0\npgrefill 2023\n" +
		"pgfault 2018\npgmajfault 2019\npgactivate 2026\npgdeactivate 2027\npglazyfree 2028\npglazyfreed 2029\n" +
		"thp_fault_alloc 2030\nthp_collapse_alloc 2031\n",
	"memory.current":      "3001\n",
	"memory.max":          "3002\n",
	"memory.peak":         "3003\n",
	"memory.swap.current": "3004\n",
	"memory.swap.max":     "max\n",
	"memory.swap.peak":    "3006\n",
	"memory.pressure":     "some avg10=1.00 avg60=0.00 avg300=0.00 total=3007\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3008\n",
	"memory.events":       "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n",
	"io.stat": "8:0 rbytes=4001 wbytes=4002 rios=4003 wios=4004 dbytes=0 dios=0\n" +
		"254:16 rbytes=4005 wbytes=0 rios=4006 wios=0 dbytes=7 dios=8\n",
	"io.pressure":              "some avg10=0.00 avg60=0.00 avg300=0.00 total=4007\n",
	"rdma.current":             "mlx4_0 hca_handle=2 hca_object=2000\nocrdma1 hca_handle=3 hca_object=0\n",
	"rdma.max":                 "mlx4_0 hca_handle=max hca_object=10000\n",
	"hugetlb.2MB.current":      "5001\n",
	"hugetlb.2MB.max":          "max\n",
	"hugetlb.2MB.events":       "max 5003\n",
	"hugetlb.2MB.rsvd.current": "9\n",
	"hugetlb.1GB.current":      "5011\n",
	"hugetlb.1GB.max":          "5012\n",
	"hugetlb.1GB.events":       "max 5013\n",
}

func TestStatsV2(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c")
	writeFiles(t, dir, v2Tree)
	got, err := stats(map[string]string{"": dir}, t.TempDir())
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	want := &v2.Metrics{
		Pids: &v2.PidsStat{Current: 2, Limit: math.MaxUint64},
		CPU: &v2.CPUStat{
			UsageUsec: 1001, UserUsec: 1002, SystemUsec: 1003,
			NrPeriods: 1004, NrThrottled: 1005, ThrottledUsec: 1006, NrBursts: 1007, BurstUsec: 1008,
			PSI: &v2.PSIStats{
				Some: &v2.PSIData{Avg10: 0.5, Avg60: 1.25, Avg300: 2, Total: 1009},
				Full: &v2.PSIData{Total: 1010},
			},
		},
		Memory: &v2.MemoryStat{
			Anon: 2001, File: 2002, KernelStack: 2003, Slab: 2004, Sock: 2005, Shmem: 2006,
			FileMapped: 2007, FileDirty: 2008, FileWriteback: 2009, AnonThp: 2010,
			InactiveAnon: 2011, ActiveAnon: 2012, InactiveFile: 2013, ActiveFile: 2014, Unevictable: 2015,
			SlabReclaimable: 2016, SlabUnreclaimable: 2017, Pgfault: 2018, Pgmajfault: 2019,
			WorkingsetRefault: 2020, WorkingsetActivate: 2021, WorkingsetNodereclaim: 2022,
			Pgrefill: 2023, Pgscan: 2024, Pgsteal: 2025, Pgactivate: 2026, Pgdeactivate: 2027,
			Pglazyfree: 2028, Pglazyfreed: 2029, ThpFaultAlloc: 2030, ThpCollapseAlloc: 2031,
			Usage: 3001, UsageLimit: 3002, MaxUsage: 3003,
			SwapUsage: 3004, SwapLimit: math.MaxUint64, SwapMaxUsage: 3006,
			PSI: &v2.PSIStats{Some: &v2.PSIData{Avg10: 1, Total: 3007}, Full: &v2.PSIData{Total: 3008}},
		},
		MemoryEvents: &v2.MemoryEvents{Low: 1, High: 2, Max: 3, Oom: 4, OomKill: 5, OomGroupKill: 6},
		Io: &v2.IOStat{
			Usage: []*v2.IOEntry{
				{Major: 8, Minor: 0, Rbytes: 4001, Wbytes: 4002, Rios: 4003, Wios: 4004},
				{Major: 254, Minor: 16, Rbytes: 4005, Rios: 4006},
			},
			PSI: &v2.PSIStats{Some: &v2.PSIData{Total: 4007}},
		},
		Rdma: &v2.RdmaStat{
			Current: []*v2.RdmaEntry{{Device: "mlx4_0", HcaHandles: 2, HcaObjects: 2000}, {Device: "ocrdma1", HcaHandles: 3}},
			Limit:   []*v2.RdmaEntry{{Device: "mlx4_0", HcaHandles: math.MaxUint32, HcaObjects: 10000}},
		},
		Hugetlb: []*v2.HugeTlbStat{
			{Pagesize: "2MB", Current: 5001, Max: math.MaxUint64, Failcnt: 5003},
			{Pagesize: "1GB", Current: 5011, Max: 5012, Failcnt: 5013},
		},
	}
	wantMetrics(t, got, want)
}

// TestStatsV2Missing: a cgroup with no controllers enabled has few files;
// their fields stay zero, PSI and memory events stay nil. A directory that
// is gone is NotFound.
func TestStatsV2Missing(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  *v2.Metrics
	}{
		{
			name:  "no controllers",
			files: map[string]string{"cgroup.procs": "", "cpu.stat": "usage_usec 7\n"},
			want: &v2.Metrics{
				Pids: &v2.PidsStat{}, CPU: &v2.CPUStat{UsageUsec: 7},
				Memory: &v2.MemoryStat{}, Io: &v2.IOStat{}, Rdma: &v2.RdmaStat{},
			},
		},
		{
			name:  "empty memory.stat, memory.events and io.stat",
			files: map[string]string{"memory.stat": "", "memory.events": "", "io.stat": "\n", "memory.max": "max\n", "pids.max": "4096\n"},
			want: &v2.Metrics{
				Pids: &v2.PidsStat{Limit: 4096}, CPU: &v2.CPUStat{},
				Memory: &v2.MemoryStat{UsageLimit: math.MaxUint64}, Io: &v2.IOStat{}, Rdma: &v2.RdmaStat{},
			},
		},
		{
			// The memory controller is off: its other files are not read.
			name:  "memory files without memory.stat",
			files: map[string]string{"memory.current": "5\n", "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"},
			want: &v2.Metrics{
				Pids: &v2.PidsStat{}, CPU: &v2.CPUStat{}, Memory: &v2.MemoryStat{}, Io: &v2.IOStat{}, Rdma: &v2.RdmaStat{},
			},
		},
		{
			name:  "memory.events with other keys only",
			files: map[string]string{"memory.events": "sock_throttled 3\n"},
			want: &v2.Metrics{
				Pids: &v2.PidsStat{}, CPU: &v2.CPUStat{}, Memory: &v2.MemoryStat{}, Io: &v2.IOStat{},
				Rdma: &v2.RdmaStat{}, MemoryEvents: &v2.MemoryEvents{},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			got, err := stats(map[string]string{"": dir}, dir)
			if err != nil {
				t.Fatalf("stats: %v", err)
			}
			wantMetrics(t, got, tt.want)
		})
	}
	t.Run("directory gone", func(t *testing.T) {
		_, err := stats(map[string]string{"": filepath.Join(t.TempDir(), "gone")}, "/proc")
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("stats: got %v, want NotFound", err)
		}
	})
}

// TestStatsV2Garbage: content the kernel never writes is ErrInternal
// naming the file, never a panic or a silent zero.
func TestStatsV2Garbage(t *testing.T) {
	tests := []struct{ file, content string }{
		{"pids.current", "two\n"},
		{"pids.max", "\n"},
		{"cpu.stat", "usage_usec\n"},
		{"cpu.stat", "usage_usec 1 2\n"},
		{"cpu.pressure", "some avg10=x avg60=0 avg300=0 total=0\n"},
		{"cpu.pressure", "some avg10\n"},
		{"cpu.pressure", "some total=1.5\n"},
		{"cpu.pressure", "partial avg10=0\n"},
		{"memory.stat", "anon -\n"},
		{"memory.current", "1e6\n"},
		{"memory.max", "maximum\n"},
		{"memory.swap.max", "max max\n"},
		{"memory.events", "oom\n"},
		{"memory.pressure", "full avg300=?\n"},
		{"io.stat", "8:0 rbytes=x\n"},
		{"io.stat", "8:0 rbytes\n"},
		{"io.stat", "80 rbytes=1\n"},
		{"io.stat", "8:y rbytes=1\n"},
		{"io.stat", "z:0 rbytes=1\n"},
		{"io.pressure", "some avg60=-\n"},
		{"rdma.current", "mlx4_0 hca_handle=2\n"},
		{"rdma.current", "mlx4_0 hca_handle=2 hca_object=x\n"},
		{"rdma.max", "mlx4_0 hca_handle=4294967296 hca_object=1\n"},
		{"rdma.max", "mlx4_0 hca_handle=1 hca_objects=1\n"},
		{"hugetlb.2MB.current", "lots\n"},
		{"hugetlb.2MB.max", "-\n"},
		{"hugetlb.2MB.events", "max\n"},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.content, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string]string{tt.file: tt.content})
			// The files read only beside another one.
			if strings.HasPrefix(tt.file, "hugetlb.2MB.") && tt.file != "hugetlb.2MB.current" {
				writeFiles(t, dir, map[string]string{"hugetlb.2MB.current": "0\n"})
			}
			if strings.HasPrefix(tt.file, "memory.") && tt.file != "memory.stat" {
				writeFiles(t, dir, map[string]string{"memory.stat": "anon 1\n"})
			}
			_, err := stats(map[string]string{"": dir}, dir)
			if !errors.Is(err, errdefs.ErrInternal) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("stats: got %v, want ErrInternal naming %s", err, tt.file)
			}
		})
	}
}
