package tests

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
)

// metricsV2 returns the task's metrics through containerd, which must be
// the cgroup v2 type.
func metricsV2(t *testing.T, r *running) *v2stats.Metrics {
	t.Helper()
	m, err := r.task.Metrics(r.e.ctx)
	if err != nil {
		serr := shimAPI(t, r.e, r.id).stats(r.e.ctx, r.id)
		t.Fatalf("metrics of %s: %v (the shim's Stats answered: %v)", r.id, err, serr)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		t.Fatalf("metrics data %s: %v", m.Data.GetTypeUrl(), err)
	}
	s, ok := v.(*v2stats.Metrics)
	if !ok {
		t.Fatalf("metrics of %s on a cgroup v2 host: type %T (%s), want cgroup2 stats.Metrics", r.id, v, m.Data.GetTypeUrl())
	}
	return s
}

// oracleStat reads cgroup path with containerd's cgroup2 package, what
// containerd-shim-runc-v2 answers Stats with.
func oracleStat(t *testing.T, path string) flatMetrics {
	t.Helper()
	m, err := cgroup2.Load(path)
	if err != nil {
		t.Fatalf("cgroup2.Load(%s): %v", path, err)
	}
	s, err := m.Stat()
	if err != nil {
		t.Fatalf("cgroup2 Stat of %s: %v", path, err)
	}
	return flatten(s)
}

// statsWorkload writes 8 MiB to the container's rootfs with fsync (an
// io.stat entry for the root disk), burns a little CPU, and then sleeps
// with a second process beside it.
var statsWorkload = []string{"sh", "-c",
	`sleep 1000 & dd if=/dev/zero of=/written bs=1M count=8 conv=fsync 2>/dev/null || echo dd failed; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; echo ready; exec sleep 1001`}

// TestCgroupV2Stats: the metrics of a running container, compared field
// by field with its cgroup files (pids, cpu.stat, memory.current,
// memory.stat, memory.events, io.stat, the PSI of cpu, memory and io,
// hugetlb) read just before and just after, and with what containerd's
// cgroup2 package (the runc shim's reader) makes of the same cgroup;
// then with what the runc shim answers for a container with the same
// spec and workload: the same messages present, the same limits.
func TestCgroupV2Stats(t *testing.T) {
	requireCgroupV2(t)
	e := newDefaultEnv(t)
	limits := []oci.SpecOpts{oci.WithMemoryLimit(256 << 20), oci.WithPidsLimit(64), oci.WithCPUCFS(200000, 100000)}
	r := e.run(ctrSpec{id: "stats", args: statsWorkload, opts: limits})
	r.waitOutput(t, "ready\n", 2*time.Minute)
	cg := r.cgroupsPath(t)

	for file, want := range map[string]string{"memory.max": "268435456", "pids.max": "64", "cpu.max": "200000 100000"} {
		if got := cgRead(t, cg, file); got != want {
			t.Errorf("%s %s = %q, want %q (from the spec)", cg, file, got, want)
		}
	}

	st := takeStats(t, r, cg)
	got := st.got
	t.Run("files", st.checkFiles)
	t.Run("cgroup2-package", st.checkCgroup2)
	t.Run("runc-shim", func(t *testing.T) {
		se := e.sub(t)
		ref := se.run(ctrSpec{id: "stats-runc", args: statsWorkload, opts: limits, runtime: runcRuntime})
		ref.waitOutput(t, "ready\n", 2*time.Minute)
		want := flatten(metricsV2(t, ref))
		if g, w := got.presence(), want.presence(); !slices.Equal(g, w) {
			t.Errorf("messages present in the metrics:\n  %v\nin the runc shim's for the same spec and workload:\n  %v", g, w)
		}
		for _, k := range []string{"pids.current", "pids.limit", "memory.usage_limit", "memory.swap_limit"} {
			if got[k] != want[k] {
				t.Errorf("%s = %v, the runc shim's = %v", k, got[k], want[k])
			}
		}
		ref.kill(syscall.SIGKILL)
		ref.wait(time.Minute)
		refCg := ref.cgroupsPath(t)
		ref.delete()
		assertCgroupGone(t, refCg)
	})

	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("exit code = %d, want 137", code)
	}
	r.delete()
	assertCgroupGone(t, cg)
}

// statsSnapshot is a container's metrics through containerd, with its
// cgroup files and containerd's cgroup2 Stat of its cgroup read just
// before and just after.
type statsSnapshot struct {
	r                           *running
	cg                          string
	m                           *v2stats.Metrics
	got                         flatMetrics // m
	filesBefore, filesAfter     flatMetrics
	cgroup2Before, cgroup2After flatMetrics
	files                       string // the files, for messages
}

func takeStats(t *testing.T, r *running, cg string) statsSnapshot {
	t.Helper()
	s := statsSnapshot{r: r, cg: cg}
	s.filesBefore, s.cgroup2Before = readCgroupFlat(t, cg), oracleStat(t, cg)
	s.m = metricsV2(t, r)
	s.filesAfter, s.cgroup2After = readCgroupFlat(t, cg), oracleStat(t, cg)
	s.got = flatten(s.m)
	s.files = cgDump(cg, "cpu.stat", "memory.current", "memory.stat", "memory.events", "pids.current", "io.stat", "cpu.pressure", "memory.pressure", "io.pressure")
	return s
}

// checkFiles compares the metrics of statsWorkload's container with its
// cgroup files, field by field.
func (s statsSnapshot) checkFiles(t *testing.T) {
	for _, want := range []string{"pids.current", "pids.limit", "cpu.usage_usec", "memory.usage", "memory.usage_limit", "memory.file",
		"cpu.psi.some{}", "memory.psi.some{}", "io.psi.some{}"} {
		if _, ok := s.got[want]; !ok {
			t.Errorf("metrics have no (or a zero) %s", want)
		}
	}
	if !slices.ContainsFunc(s.m.GetIo().GetUsage(), func(e *v2stats.IOEntry) bool { return e.Wbytes >= 8<<20 }) {
		t.Errorf("io usage %v: no device with the 8 MiB the container wrote; its stdout %q, stderr %q", s.m.GetIo().GetUsage(), s.r.stdout.Bytes(), s.r.stderr.Bytes())
	}
	if s.m.GetPids().GetCurrent() != 2 {
		t.Errorf("pids current = %d, want 2 (sleep 1000 and the init)", s.m.GetPids().GetCurrent())
	}
	if bad := compareBounded(s.got.leaves(), s.filesBefore, s.filesAfter); len(bad) > 0 {
		t.Errorf("metrics differ from the cgroup files of %s:\n  %s\nthe files (after):\n%s", s.cg, strings.Join(bad, "\n  "), s.files)
	}
}

// checkCgroup2 compares the metrics with containerd's cgroup2 Stat.
func (s statsSnapshot) checkCgroup2(t *testing.T) {
	if bad := compareBounded(s.got.leaves(), s.cgroup2Before.leaves(), s.cgroup2After.leaves()); len(bad) > 0 {
		t.Errorf("metrics differ from containerd's cgroup2 Stat of %s:\n  %s\nthe files (after):\n%s", s.cg, strings.Join(bad, "\n  "), s.files)
	}
	if g, w := s.got.presence(), s.cgroup2After.presence(); !slices.Equal(g, w) {
		t.Errorf("messages present in the metrics:\n  %v\nin containerd's cgroup2 Stat:\n  %v", g, w)
	}
}
