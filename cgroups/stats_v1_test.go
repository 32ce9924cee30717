package cgroups

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// writeFiles writes each name -> content under dir, making directories as
// needed, as a fake cgroupfs (or /proc) for the readers to read.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v1Tree is a container's v1 cgroups as this host's kernel (6.x, hybrid,
// BFQ) writes them, with distinct numbers so a misplaced value shows.
var v1Tree = map[string]string{
	"cpuacct/c/cpuacct.usage":        "9739393\n",
	"cpuacct/c/cpuacct.usage_percpu": "9739393 1202531 \n",
	"cpuacct/c/cpuacct.stat":         "user 3\nsystem 7\n",
	"cpu/c/cpu.stat":                 "nr_periods 11\nnr_throttled 12\nthrottled_time 13\nnr_bursts 0\nburst_time 0\n",
	"memory/c/memory.stat": "cache 101\nrss 102\nrss_huge 103\nshmem 0\nmapped_file 104\ndirty 105\nwriteback 106\n" +
		"workingset_refault_anon 0\nswap 0\npgpgin 107\npgpgout 108\npgfault 109\npgmajfault 110\n" +
		"inactive_anon 111\nactive_anon 112\ninactive_file 113\nactive_file 114\nunevictable 115\n" +
		"hierarchical_memory_limit 116\nhierarchical_memsw_limit 117\n" +
		"total_cache 118\ntotal_rss 119\ntotal_rss_huge 120\ntotal_shmem 0\ntotal_mapped_file 121\ntotal_dirty 122\n" +
		"total_writeback 123\ntotal_swap 0\ntotal_pgpgin 124\ntotal_pgpgout 125\ntotal_pgfault 126\ntotal_pgmajfault 127\n" +
		"total_inactive_anon 128\ntotal_active_anon 129\ntotal_inactive_file 130\ntotal_active_file 131\ntotal_unevictable 132\n",
	"memory/c/memory.usage_in_bytes":              "201\n",
	"memory/c/memory.max_usage_in_bytes":          "202\n",
	"memory/c/memory.failcnt":                     "203\n",
	"memory/c/memory.limit_in_bytes":              "9223372036854771712\n",
	"memory/c/memory.memsw.usage_in_bytes":        "211\n",
	"memory/c/memory.memsw.max_usage_in_bytes":    "212\n",
	"memory/c/memory.memsw.failcnt":               "213\n",
	"memory/c/memory.memsw.limit_in_bytes":        "214\n",
	"memory/c/memory.kmem.usage_in_bytes":         "221\n",
	"memory/c/memory.kmem.max_usage_in_bytes":     "222\n",
	"memory/c/memory.kmem.failcnt":                "223\n",
	"memory/c/memory.kmem.limit_in_bytes":         "224\n",
	"memory/c/memory.kmem.tcp.usage_in_bytes":     "231\n",
	"memory/c/memory.kmem.tcp.max_usage_in_bytes": "232\n",
	"memory/c/memory.kmem.tcp.failcnt":            "233\n",
	"memory/c/memory.kmem.tcp.limit_in_bytes":     "234\n",
	"memory/c/memory.oom_control":                 "oom_kill_disable 1\nunder_oom 0\noom_kill 4\n",
	"pids/c/pids.current":                         "2\n",
	"pids/c/pids.max":                             "max\n",
	"blkio/c/blkio.throttle.io_serviced_recursive": "254:0 Read 5\n254:0 Write 6\n254:0 Sync 7\n254:0 Async 4\n" +
		"254:0 Discard 0\n254:0 Total 11\nTotal 11\n",
	"blkio/c/blkio.throttle.io_service_bytes_recursive": "254:0 Read 4096\n254:0 Write 8192\nTotal 12288\n",
	"blkio/c/blkio.throttle.io_serviced":                "1:1 Read 999\nTotal 999\n",
	"blkio/c/blkio.bfq.io_serviced_recursive":           "254:0 Read 1\n",
	"hugetlb/c/hugetlb.2MB.usage_in_bytes":              "301\n",
	"hugetlb/c/hugetlb.2MB.max_usage_in_bytes":          "302\n",
	"hugetlb/c/hugetlb.2MB.failcnt":                     "303\n",
	"hugetlb/c/hugetlb.2MB.limit_in_bytes":              "9223372036854771712\n",
	"hugetlb/c/hugetlb.2MB.rsvd.usage_in_bytes":         "9\n",
	"hugetlb/c/hugetlb.64KB.usage_in_bytes":             "321\n",
	"rdma/c/rdma.current":                               "mlx4_0 hca_handle=2 hca_object=2000\n",
	"rdma/c/rdma.max":                                   "mlx4_0 hca_handle=max hca_object=max\n",
	"hugetlb/c/hugetlb.1GB.usage_in_bytes":              "311\n",
	"hugetlb/c/hugetlb.1GB.max_usage_in_bytes":          "312\n",
	"hugetlb/c/hugetlb.1GB.failcnt":                     "313\n",
	"proc/partitions":                                   "major minor  #blocks  name\n\n 254        0  268435456 vda\n",
}

var v1Subsystems = []string{"cpuacct", "cpu", "memory", "pids", "blkio", "hugetlb", "rdma"}

// v1Paths returns cgroup_paths for the tree under root: every subsystem
// in its own hierarchy, plus ones with no stats.
func v1Paths(root string) map[string]string {
	paths := map[string]string{"": root + "/unified/c", "name=systemd": root + "/systemd/c", "devices": root + "/devices/c"}
	for _, s := range v1Subsystems {
		paths[s] = filepath.Join(root, s, "c")
	}
	return paths
}

func wantMetrics(t *testing.T, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("metrics:\ngot  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func TestStatsV1(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, v1Tree)
	got, err := stats(v1Paths(root), filepath.Join(root, "proc"))
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	want := &v1.Metrics{
		CPU: &v1.CPUStat{
			Usage:      &v1.CPUUsage{Total: 9739393, PerCPU: []uint64{9739393, 1202531}, User: 30_000_000, Kernel: 70_000_000},
			Throttling: &v1.Throttle{Periods: 11, ThrottledPeriods: 12, ThrottledTime: 13},
		},
		Memory: &v1.MemoryStat{
			Cache: 101, RSS: 102, RSSHuge: 103, MappedFile: 104, Dirty: 105, Writeback: 106,
			PgPgIn: 107, PgPgOut: 108, PgFault: 109, PgMajFault: 110,
			InactiveAnon: 111, ActiveAnon: 112, InactiveFile: 113, ActiveFile: 114, Unevictable: 115,
			HierarchicalMemoryLimit: 116, HierarchicalSwapLimit: 117,
			TotalCache: 118, TotalRSS: 119, TotalRSSHuge: 120, TotalMappedFile: 121, TotalDirty: 122,
			TotalWriteback: 123, TotalPgPgIn: 124, TotalPgPgOut: 125, TotalPgFault: 126, TotalPgMajFault: 127,
			TotalInactiveAnon: 128, TotalActiveAnon: 129, TotalInactiveFile: 130, TotalActiveFile: 131, TotalUnevictable: 132,
			Usage:     &v1.MemoryEntry{Usage: 201, Max: 202, Failcnt: 203, Limit: 9223372036854771712},
			Swap:      &v1.MemoryEntry{Usage: 211, Max: 212, Failcnt: 213, Limit: 214},
			Kernel:    &v1.MemoryEntry{Usage: 221, Max: 222, Failcnt: 223, Limit: 224},
			KernelTCP: &v1.MemoryEntry{Usage: 231, Max: 232, Failcnt: 233, Limit: 234},
		},
		MemoryOomControl: &v1.MemoryOomControl{OomKillDisable: 1, OomKill: 4},
		Pids:             &v1.PidsStat{Current: 2, Limit: 0},
		Blkio: &v1.BlkIOStat{
			IoServicedRecursive: []*v1.BlkIOEntry{
				{Device: "/dev/vda", Major: 254, Op: "Read", Value: 5},
				{Device: "/dev/vda", Major: 254, Op: "Write", Value: 6},
				{Device: "/dev/vda", Major: 254, Op: "Sync", Value: 7},
				{Device: "/dev/vda", Major: 254, Op: "Async", Value: 4},
				{Device: "/dev/vda", Major: 254, Op: "Discard", Value: 0},
				{Device: "/dev/vda", Major: 254, Op: "Total", Value: 11},
			},
			IoServiceBytesRecursive: []*v1.BlkIOEntry{
				{Device: "/dev/vda", Major: 254, Op: "Read", Value: 4096},
				{Device: "/dev/vda", Major: 254, Op: "Write", Value: 8192},
			},
		},
		Hugetlb: []*v1.HugetlbStat{
			{Pagesize: "64KB", Usage: 321},
			{Pagesize: "2MB", Usage: 301, Max: 302, Failcnt: 303},
			{Pagesize: "1GB", Usage: 311, Max: 312, Failcnt: 313},
		},
		Rdma: &v1.RdmaStat{
			Current: []*v1.RdmaEntry{{Device: "mlx4_0", HcaHandles: 2, HcaObjects: 2000}},
			Limit:   []*v1.RdmaEntry{{Device: "mlx4_0", HcaHandles: math.MaxUint32, HcaObjects: math.MaxUint32}},
		},
	}
	wantMetrics(t, got, want)
}

func TestStatsV1Blkio(t *testing.T) {
	const cfq = "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:0 Async 0\n8:0 Total 30\nTotal 30\n"
	entries := func(dev string, major, minor uint64, kv ...any) []*v1.BlkIOEntry {
		var out []*v1.BlkIOEntry
		for i := 0; i < len(kv); i += 2 {
			out = append(out, &v1.BlkIOEntry{Device: dev, Major: major, Minor: minor, Op: kv[i].(string), Value: uint64(kv[i+1].(int))})
		}
		return out
	}
	tests := []struct {
		name  string
		files map[string]string
		want  *v1.BlkIOStat
	}{
		{
			name: "cfq files that count",
			files: map[string]string{
				"blkio.io_serviced_recursive":          cfq,
				"blkio.io_service_bytes_recursive":     "8:0 Read 4096\nTotal 4096\n",
				"blkio.io_queued_recursive":            "8:0 Read 1\n",
				"blkio.io_service_time_recursive":      "8:0 Read 2\n",
				"blkio.io_wait_time_recursive":         "8:0 Read 3\n",
				"blkio.io_merged_recursive":            "8:0 Read 4\n",
				"blkio.time_recursive":                 "8:0 5\n",
				"blkio.sectors_recursive":              "8:0 6\n",
				"blkio.throttle.io_serviced":           "8:0 Read 999\n",
				"blkio.throttle.io_service_bytes":      "8:0 Read 999\n",
				"blkio.throttle.io_serviced_recursive": "8:0 Read 999\n",
			},
			want: &v1.BlkIOStat{
				IoServicedRecursive:     entries("/dev/sda", 8, 0, "Read", 10, "Write", 20, "Sync", 30, "Async", 0, "Total", 30),
				IoServiceBytesRecursive: entries("/dev/sda", 8, 0, "Read", 4096),
				IoQueuedRecursive:       entries("/dev/sda", 8, 0, "Read", 1),
				IoServiceTimeRecursive:  entries("/dev/sda", 8, 0, "Read", 2),
				IoWaitTimeRecursive:     entries("/dev/sda", 8, 0, "Read", 3),
				IoMergedRecursive:       entries("/dev/sda", 8, 0, "Read", 4),
				IoTimeRecursive:         entries("/dev/sda", 8, 0, "", 5),
				SectorsRecursive:        entries("/dev/sda", 8, 0, "", 6),
			},
		},
		{
			name: "empty cfq files fall back to throttle",
			files: map[string]string{
				"blkio.io_serviced_recursive":               "Total 0\n",
				"blkio.io_service_bytes_recursive":          "Total 0\n",
				"blkio.throttle.io_serviced_recursive":      "8:16 Read 7\n",
				"blkio.throttle.io_service_bytes_recursive": "8:16 Write 8\n",
			},
			want: &v1.BlkIOStat{
				IoServicedRecursive:     entries("/dev/sdb", 8, 16, "Read", 7),
				IoServiceBytesRecursive: entries("/dev/sdb", 8, 16, "Write", 8),
			},
		},
		{
			name: "throttle without recursive files",
			files: map[string]string{
				"blkio.throttle.io_serviced":      "8:0 Read 7\n",
				"blkio.throttle.io_service_bytes": "7:3 Read 8\n",
			},
			want: &v1.BlkIOStat{
				IoServicedRecursive:     entries("/dev/sda", 8, 0, "Read", 7),
				IoServiceBytesRecursive: entries("", 7, 3, "Read", 8),
			},
		},
		{
			name:  "no files",
			files: map[string]string{"cgroup.procs": ""},
			want:  &v1.BlkIOStat{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, filepath.Join(root, "blkio"), tt.files)
			writeFiles(t, root, map[string]string{"proc/partitions": "major minor  #blocks  name\n\n   8        0  100 sda\n   8       16  100 sdb\n"})
			got, err := stats(map[string]string{"blkio": filepath.Join(root, "blkio")}, filepath.Join(root, "proc"))
			if err != nil {
				t.Fatalf("stats: %v", err)
			}
			wantMetrics(t, got.(*v1.Metrics).GetBlkio(), tt.want)
		})
	}
}

// TestStatsV1Missing: files the kernel may lack leave their fields zero;
// a directory that is gone is NotFound.
func TestStatsV1Missing(t *testing.T) {
	t.Run("only memory.stat and pids.current", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{
			"memory/c/memory.stat": "rss 5\n",
			"pids/c/pids.current":  "3\n",
			"cpu/c/cgroup.procs":   "",
			"cpuacct/c/tasks":      "",
			"hugetlb/c/tasks":      "",
			"rdma/c/rdma.current":  "mlx4_0 hca_handle=1 hca_object=1\n",
		})
		_, err := stats(v1Paths(root), filepath.Join(root, "proc"))
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "blkio") {
			t.Fatalf("stats with blkio dir gone: got %v, want NotFound naming blkio", err)
		}
		paths := v1Paths(root)
		delete(paths, "blkio")
		got, err := stats(paths, filepath.Join(root, "proc"))
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		want := &v1.Metrics{
			CPU:              &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}},
			Memory:           &v1.MemoryStat{RSS: 5, Usage: &v1.MemoryEntry{}, Swap: &v1.MemoryEntry{}, Kernel: &v1.MemoryEntry{}, KernelTCP: &v1.MemoryEntry{}},
			MemoryOomControl: &v1.MemoryOomControl{},
			Pids:             &v1.PidsStat{Current: 3},
		}
		wantMetrics(t, got, want)
	})
	t.Run("negative limit reads as zero", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{"memory/c/memory.memsw.limit_in_bytes": "-1\n", "memory/c/memory.limit_in_bytes": "-99999999999999999999999\n"})
		got, err := stats(map[string]string{"memory": root + "/memory/c"}, root)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if l := got.(*v1.Metrics).GetMemory(); l.GetSwap().GetLimit() != 0 || l.GetUsage().GetLimit() != 0 {
			t.Errorf("limits: got %d and %d, want 0", l.GetSwap().GetLimit(), l.GetUsage().GetLimit())
		}
	})
	t.Run("every directory gone", func(t *testing.T) {
		root := t.TempDir()
		_, err := stats(v1Paths(root), root)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("stats: got %v, want NotFound", err)
		}
	})
	t.Run("a file where the directory should be", func(t *testing.T) {
		root := t.TempDir()
		writeFiles(t, root, map[string]string{"memory/c": ""})
		_, err := stats(map[string]string{"memory": root + "/memory/c"}, root)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("stats: got %v, want NotFound", err)
		}
	})
}

// TestStatsV1Garbage: content the kernel never writes is ErrInternal
// naming the file, never a panic or a silent zero.
func TestStatsV1Garbage(t *testing.T) {
	tests := []struct{ file, content string }{
		{"cpuacct/c/cpuacct.usage", "lots\n"},
		{"cpuacct/c/cpuacct.usage", ""},
		{"cpuacct/c/cpuacct.usage_percpu", "1 two 3\n"},
		{"cpuacct/c/cpuacct.stat", "user\n"},
		{"cpuacct/c/cpuacct.stat", "user 1 2\n"},
		{"cpu/c/cpu.stat", "nr_periods x\n"},
		{"memory/c/memory.stat", "cache 1\nrss\n"},
		{"memory/c/memory.stat", "cache 1.5\n"},
		{"memory/c/memory.kmem.failcnt", "0x10\n"},
		{"memory/c/memory.oom_control", "oom_kill_disable yes\n"},
		{"pids/c/pids.max", "unlimited\n"},
		{"pids/c/pids.current", "18446744073709551616\n"},
		{"blkio/c/blkio.throttle.io_serviced", "8-0 Read 1\n"},
		{"blkio/c/blkio.throttle.io_serviced", "8:x Read 1\n"},
		{"blkio/c/blkio.throttle.io_serviced", "x:0 Read 1\n"},
		{"blkio/c/blkio.throttle.io_serviced", "8:0 Read -1\n"},
		{"blkio/c/blkio.throttle.io_serviced", "8:0 Read 1 2\n"},
		{"blkio/c/blkio.throttle.io_serviced", "8:0\n"},
		{"hugetlb/c/hugetlb.2MB.usage_in_bytes", "2MB\n"},
		{"hugetlb/c/hugetlb.2MB.usage_in_bytes", "\x00\xff"},
		{"rdma/c/rdma.current", "mlx4_0 hca_handle=-1 hca_object=1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.file+" "+tt.content, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, map[string]string{tt.file: tt.content})
			paths := make(map[string]string)
			for _, s := range v1Subsystems {
				if strings.HasPrefix(tt.file, s+"/") {
					paths[s] = filepath.Join(root, s, "c")
				}
			}
			_, err := stats(paths, root)
			if !errors.Is(err, errdefs.ErrInternal) || !strings.Contains(err.Error(), filepath.Base(tt.file)) {
				t.Errorf("stats: got %v, want ErrInternal naming %s", err, filepath.Base(tt.file))
			}
		})
	}
}
