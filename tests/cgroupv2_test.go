package tests

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The cgroup v2 tests: what the shim reads and does through cgroups, on a
// real pure v2 hierarchy (the qemu guest of tests/vm/run.sh; they skip
// elsewhere, see requireCgroupV2). Each runs for the runtime under test,
// the runc shim validating the tests themselves.

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

// withUnified sets the spec's linux.resources.unified: cgroup v2 files
// the runtime writes as they are.
func withUnified(kv map[string]string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		s.Linux.Resources.Unified = kv
		return nil
	}
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

	filesBefore, oracleBefore := readCgroupFlat(t, cg), oracleStat(t, cg)
	m := metricsV2(t, r)
	filesAfter, oracleAfter := readCgroupFlat(t, cg), oracleStat(t, cg)
	got := flatten(m)
	files := cgDump(cg, "cpu.stat", "memory.current", "memory.stat", "memory.events", "pids.current", "io.stat", "cpu.pressure", "memory.pressure", "io.pressure")

	t.Run("files", func(t *testing.T) {
		for _, want := range []string{"pids.current", "pids.limit", "cpu.usage_usec", "memory.usage", "memory.usage_limit", "memory.file",
			"cpu.psi.some{}", "memory.psi.some{}", "io.psi.some{}"} {
			if _, ok := got[want]; !ok {
				t.Errorf("metrics have no (or a zero) %s", want)
			}
		}
		if !slices.ContainsFunc(m.GetIo().GetUsage(), func(e *v2stats.IOEntry) bool { return e.Wbytes >= 8<<20 }) {
			t.Errorf("io usage %v: no device with the 8 MiB the container wrote; its stdout %q, stderr %q", m.GetIo().GetUsage(), r.stdout.Bytes(), r.stderr.Bytes())
		}
		if m.GetPids().GetCurrent() != 2 {
			t.Errorf("pids current = %d, want 2 (sleep 1000 and the init)", m.GetPids().GetCurrent())
		}
		if bad := compareBounded(got.leaves(), filesBefore, filesAfter); len(bad) > 0 {
			t.Errorf("metrics differ from the cgroup files of %s:\n  %s\nthe files (after):\n%s", cg, strings.Join(bad, "\n  "), files)
		}
	})
	t.Run("cgroup2-package", func(t *testing.T) {
		if bad := compareBounded(got.leaves(), oracleBefore.leaves(), oracleAfter.leaves()); len(bad) > 0 {
			t.Errorf("metrics differ from containerd's cgroup2 Stat of %s:\n  %s\nthe files (after):\n%s", cg, strings.Join(bad, "\n  "), files)
		}
		if g, w := got.presence(), oracleAfter.presence(); !slices.Equal(g, w) {
			t.Errorf("messages present in the metrics:\n  %v\nin containerd's cgroup2 Stat:\n  %v", g, w)
		}
	})
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

// oomHog allocates 64 MiB (dd's block buffer, filled from /dev/zero).
var oomHog = []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}

// waitEvents polls l until it holds a TaskExit of container id's init
// and returns the topics of id's init (TaskOOM, TaskExit, ...) in order.
func waitEvents(t *testing.T, l *eventLog, id string) []string {
	t.Helper()
	var evs []taskEvent
	pollUntil(20*time.Second, func() bool {
		evs = l.of(id, "")
		return slices.ContainsFunc(evs, func(ev taskEvent) bool { return ev.topic == "/tasks/exit" })
	})
	return topics(evs)
}

// countTopic counts topic in topics.
func countTopic(topics []string, topic string) int {
	n := 0
	for _, tp := range topics {
		if tp == topic {
			n++
		}
	}
	return n
}

// TestCgroupV2OOM: a container over its 32 MiB memory limit is killed by
// the kernel: it exits 137, TaskOOM comes before its TaskExit, once per
// kill, memory.events counts the kill, and so do the metrics of the stopped
// container (what CRI reads for its "OOMKilled" reason).
func TestCgroupV2OOM(t *testing.T) {
	requireCgroupV2(t)
	e := newDefaultEnv(t)
	events := subscribeFiltered(t, e, fmt.Sprintf(`namespace==%q,topic~="^/tasks/(oom|exit)$"`, e.ns))
	r := e.create(ctrSpec{id: "oom", args: oomHog, opts: []oci.SpecOpts{oci.WithMemoryLimit(32 << 20)}})
	r.start()
	cg := r.cgroupsPath(t)
	if code := r.wait(2 * time.Minute); code != 137 {
		t.Errorf("exit code = %d, want 137 (SIGKILL by the OOM killer); stderr %q", code, r.stderr.Bytes())
	}
	evs := waitEvents(t, events, r.id)
	oom, exit := slices.Index(evs, "/tasks/oom"), slices.Index(evs, "/tasks/exit")
	if oom < 0 || exit < 0 || oom > exit {
		t.Errorf("events of %s = %v, want /tasks/oom before /tasks/exit\n%s", r.id, evs, cgDump(cg, "memory.events", "memory.max"))
	}
	ev := cgKV(t, cg, "memory.events")
	if ev["oom_kill"] < 1 || ev["oom"] < 1 {
		t.Errorf("memory.events of %s: oom %d, oom_kill %d; want >= 1", cg, ev["oom"], ev["oom_kill"])
	}
	if n := countTopic(evs, "/tasks/oom"); uint64(n) != ev["oom_kill"] {
		t.Errorf("%d TaskOOM events for %s (%v), want one per kill: memory.events oom_kill %d", n, r.id, evs, ev["oom_kill"])
	}
	m := metricsV2(t, r)
	if got := m.GetMemoryEvents().GetOomKill(); got != ev["oom_kill"] {
		t.Errorf("metrics of the stopped container: memory events oom_kill = %d, want %d (memory.events)", got, ev["oom_kill"])
	}
	r.delete()
	assertCgroupGone(t, cg)
}

// TestCgroupV2OOMGroup: linux.resources.unified {"memory.oom.group": "1"}
// reaches the cgroup, and the kernel then kills the whole container when
// one exec of it runs over the limit; without it only the exec dies.
func TestCgroupV2OOMGroup(t *testing.T) {
	requireCgroupV2(t)
	e := newDefaultEnv(t)
	for _, tc := range []struct {
		name  string
		group bool
	}{{"oom-group", true}, {"no-group", false}} {
		t.Run(tc.name, func(t *testing.T) {
			se := e.sub(t)
			events := subscribeFiltered(t, se, fmt.Sprintf(`namespace==%q,topic~="^/tasks/(oom|exit)$"`, se.ns))
			opts := []oci.SpecOpts{oci.WithMemoryLimit(32 << 20)}
			want := "0"
			if tc.group {
				opts = append(opts, withUnified(map[string]string{"memory.oom.group": "1"}))
				want = "1"
			}
			r := se.run(ctrSpec{id: tc.name, args: []string{"sh", "-c", "sleep 1000 & echo ready; exec sleep 1001"}, opts: opts})
			r.waitOutput(t, "ready\n", time.Minute)
			cg := r.cgroupsPath(t)
			if got := cgRead(t, cg, "memory.oom.group"); got != want {
				t.Fatalf("%s memory.oom.group = %q, want %q", cg, got, want)
			}
			x := r.exec(t, "hog", oomHog, nil)
			if code := x.wait(t, 2*time.Minute); code != 137 {
				t.Errorf("exec hog exit code = %d, want 137", code)
			}
			ev := cgKV(t, cg, "memory.events")
			if tc.group {
				if code := r.wait(time.Minute); code != 137 {
					t.Errorf("init exit code = %d, want 137: the group kill takes every process", code)
				}
				if ev["oom_group_kill"] < 1 {
					t.Errorf("memory.events of %s: oom_group_kill %d, want >= 1\n%s", cg, ev["oom_group_kill"], cgDump(cg, "memory.events"))
				}
				evs := waitEvents(t, events, r.id)
				if oom, exit := slices.Index(evs, "/tasks/oom"), slices.Index(evs, "/tasks/exit"); oom < 0 || oom > exit {
					t.Errorf("events of %s = %v, want /tasks/oom before /tasks/exit", r.id, evs)
				}
				t.Logf("events of %s: %v; memory.events oom_kill %d, oom_group_kill %d", r.id, evs, ev["oom_kill"], ev["oom_group_kill"])
			} else {
				if ev["oom_kill"] < 1 || ev["oom_group_kill"] != 0 {
					t.Errorf("memory.events of %s: oom_kill %d, oom_group_kill %d; want >= 1 and 0", cg, ev["oom_kill"], ev["oom_group_kill"])
				}
				// The container lives on: only the watch on memory.events
				// can tell of this kill.
				var evs []taskEvent
				if !pollUntil(20*time.Second, func() bool {
					evs = events.of(r.id, "")
					return uint64(countTopic(topics(evs), "/tasks/oom")) >= ev["oom_kill"]
				}) {
					t.Errorf("events of %s = %v while it runs on, want a /tasks/oom per kill (memory.events oom_kill %d)", r.id, topics(evs), ev["oom_kill"])
				}
				if got := r.status(); got != client.Running {
					t.Errorf("status after the exec's OOM kill = %q, want %q: only the hog dies", got, client.Running)
				}
				if pids := procsInCgroup(cg); len(pids) != 2 {
					t.Errorf("processes in %s after the exec's OOM kill = %v, want the init and its sleep", cg, describe(pids))
				}
				r.kill(syscall.SIGKILL)
				if code := r.wait(time.Minute); code != 137 {
					t.Errorf("init exit code = %d, want 137", code)
				}
			}
			if _, err := x.proc.Delete(se.ctx); err != nil {
				t.Errorf("delete exec hog: %v", err)
			}
			r.delete()
			assertCgroupGone(t, cg)
		})
	}
}

// TestCgroupV2Update: the spec's CPU, memory and pids limits are in
// cpu.max, memory.max and pids.max; Update changes them there and in the
// metrics, and -1 lifts them ("max").
func TestCgroupV2Update(t *testing.T) {
	requireCgroupV2(t)
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "update", args: []string{"sh", "-c", "echo ready; exec sleep 1000"},
		opts: []oci.SpecOpts{oci.WithMemoryLimit(128 << 20), oci.WithCPUCFS(100000, 100000), oci.WithPidsLimit(100)}})
	r.waitOutput(t, "ready\n", time.Minute)
	cg := r.cgroupsPath(t)
	check := func(what string, want map[string]string) {
		t.Helper()
		for file, w := range want {
			if got := cgRead(t, cg, file); got != w {
				t.Errorf("%s: %s %s = %q, want %q", what, cg, file, got, w)
			}
		}
	}
	check("from the spec", map[string]string{"cpu.max": "100000 100000", "memory.max": "134217728", "pids.max": "100"})

	for _, tc := range []struct {
		name                string
		quota, memory, pids int64
		period              uint64
		want                map[string]string
		wantLimit, wantPids uint64
	}{
		{"lower", 50000, 64 << 20, 50, 100000,
			map[string]string{"cpu.max": "50000 100000", "memory.max": "67108864", "pids.max": "50"}, 64 << 20, 50},
		{"new-period", 25000, 96 << 20, 80, 50000,
			map[string]string{"cpu.max": "25000 50000", "memory.max": "100663296", "pids.max": "80"}, 96 << 20, 80},
		{"unlimited", -1, -1, -1, 50000,
			map[string]string{"cpu.max": "max 50000", "memory.max": "max", "pids.max": "max"}, math.MaxUint64, math.MaxUint64},
	} {
		quota, memory, pids, period := tc.quota, tc.memory, tc.pids, tc.period
		err := r.task.Update(e.ctx, client.WithResources(&specs.LinuxResources{
			CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
			Memory: &specs.LinuxMemory{Limit: &memory},
			Pids:   &specs.LinuxPids{Limit: &pids},
		}))
		skipIfNotImplemented(t, err, "update")
		if err != nil {
			t.Fatalf("update %s: %v", tc.name, err)
		}
		check("after update "+tc.name, tc.want)
		m := metricsV2(t, r)
		if got := m.GetMemory().GetUsageLimit(); got != tc.wantLimit {
			t.Errorf("after update %s: metrics memory usage_limit = %d, want %d", tc.name, got, tc.wantLimit)
		}
		if got := m.GetPids().GetLimit(); got != tc.wantPids {
			t.Errorf("after update %s: metrics pids limit = %d, want %d", tc.name, got, tc.wantPids)
		}
	}

	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("exit code = %d, want 137", code)
	}
	r.delete()
	assertCgroupGone(t, cg)
}

// frozenV2 returns cgroup.freeze and the frozen key of cgroup.events.
func frozenV2(t *testing.T, cg string) (freeze string, frozen uint64) {
	t.Helper()
	return cgRead(t, cg, "cgroup.freeze"), cgKV(t, cg, "cgroup.events")["frozen"]
}

// TestCgroupV2PauseResume: Pause freezes the cgroup (cgroup.freeze 1 and
// cgroup.events "frozen 1": every process stopped), Resume thaws it and
// the container runs on; SIGKILL of a paused container gives 137 and
// leaves no cgroup after delete.
func TestCgroupV2PauseResume(t *testing.T) {
	requireCgroupV2(t)
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "freeze", args: []string{"sh", "-c",
		`sleep 1000 & i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done`}})
	r.waitOutput(t, "tick-1\n", time.Minute)
	cg := r.cgroupsPath(t)

	pause := func(what string) {
		t.Helper()
		err := r.task.Pause(e.ctx)
		skipIfNotImplemented(t, err, "pause")
		if err != nil {
			t.Fatalf("%s: pause: %v", what, err)
		}
		if freeze, frozen := frozenV2(t, cg); freeze != "1" || frozen != 1 {
			t.Errorf("%s: after Pause cgroup.freeze = %q, cgroup.events frozen = %d; want 1 and 1\n%s", what, freeze, frozen, cgDump(cg, "cgroup.events", "cgroup.procs"))
		}
		if got := r.status(); got != client.Paused {
			t.Errorf("%s: status after pause = %q, want %q", what, got, client.Paused)
		}
	}
	pause("first pause")
	if m := metricsV2(t, r); m.GetPids().GetCurrent() < 2 {
		t.Errorf("metrics of the paused container: pids current %d, want 2 or more", m.GetPids().GetCurrent())
	}
	if err := r.task.Resume(e.ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if freeze, frozen := frozenV2(t, cg); freeze != "0" || frozen != 0 {
		t.Errorf("after Resume cgroup.freeze = %q, cgroup.events frozen = %d; want 0 and 0", freeze, frozen)
	}
	if got := r.status(); got != client.Running {
		t.Errorf("status after resume = %q, want %q", got, client.Running)
	}
	r.waitOutput(t, fmt.Sprintf("tick-%d\n", lastTick(r.stdout.Bytes())+2), time.Minute)

	pause("second pause")
	pids := procsInCgroup(cg)
	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("exit code of the paused container after SIGKILL = %d, want 137", code)
	}
	if got := r.status(); got != client.Stopped {
		t.Errorf("status after the exit = %q, want %q", got, client.Stopped)
	}
	r.delete()
	assertGone(t, "after delete", cg, pids...)
	assertCgroupGone(t, cg)
}

// TestCgroupV2ShimCgroup: runtime option ShimCgroup puts the shim (and
// only the shim) in that cgroup.
func TestCgroupV2ShimCgroup(t *testing.T) {
	requireCgroupV2(t)
	shimCg := fmt.Sprintf("/shimtest-shim-%s-%d", suite.runID, os.Getpid())
	if err := os.Mkdir(cgDir(shimCg), 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered before the env's cleanup, so it runs after it: once the
	// shim has exited the cgroup is empty and can go.
	t.Cleanup(func() {
		if err := os.Remove(cgDir(shimCg)); err != nil {
			t.Errorf("remove the shim's cgroup %s: %v\n%s", shimCg, err, cgDump(shimCg, "cgroup.procs"))
		}
	})
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "shimcg", pod: "shimcgpod", args: []string{"sh", "-c", "echo ready; exec sleep 1000"},
		runtimeOpts: &options.Options{ShimCgroup: shimCg}})
	r.waitOutput(t, "ready\n", time.Minute)
	shim := r.shimPid()
	if got, want := strings.TrimSpace(procCgroups(shim)), "0::"+shimCg; got != want {
		t.Errorf("/proc/%d/cgroup of the shim = %q, want %q", shim, got, want)
	}
	cg := r.cgroupsPath(t)
	if got, want := strings.TrimSpace(procCgroups(int(r.task.Pid()))), "0::"+cg; got != want {
		t.Errorf("/proc/%d/cgroup of the init = %q, want %q", r.task.Pid(), got, want)
	}
	if got := cgRead(t, shimCg, "cgroup.procs"); got != fmt.Sprint(shim) {
		t.Errorf("%s cgroup.procs = %q, want the shim %d alone", shimCg, got, shim)
	}
	r.kill(syscall.SIGKILL)
	r.wait(time.Minute)
	r.delete()
	assertCgroupGone(t, cg)
	assertShimExits(t, shim, "the shim, after its last task was deleted")
}

// cgroupTree lists every cgroup below the root, as paths from it.
func cgroupTree(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(cgroupV2Root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != cgroupV2Root {
			out = append(out, strings.TrimPrefix(p, cgroupV2Root))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", cgroupV2Root, err)
	}
	return out
}

// TestCgroupV2NoLeftovers: after a pod's containers went through run,
// exec, pause, update, an OOM kill and SIGKILL, and were deleted, and
// their shim exited, no cgroup is left but the namespace's parent that
// runc creates and never removes (the same for both shims), and that one
// is empty.
func TestCgroupV2NoLeftovers(t *testing.T) {
	requireCgroupV2(t)
	before := cgroupTree(t)
	var ns string
	t.Cleanup(func() {
		var left []string
		for _, p := range cgroupTree(t) {
			if !slices.Contains(before, p) {
				left = append(left, p)
			}
		}
		for _, p := range left {
			if p == "/"+ns {
				if procs := cgRead(t, p, "cgroup.procs"); procs != "" {
					t.Errorf("namespace cgroup %s holds processes %q", p, procs)
				}
				continue
			}
			t.Errorf("cgroup %s left after every container was deleted and the shim exited; it holds:\n%s", p, cgDump(p, "cgroup.procs", "cgroup.events"))
		}
		if ns != "" {
			_ = os.Remove(cgDir("/" + ns))
		}
	})
	e := newDefaultEnv(t)
	ns = e.ns
	const pod = "leftpod"
	a := e.run(ctrSpec{id: "a", pod: pod, args: []string{"sh", "-c", "sleep 1000 & echo ready; exec sleep 1001"}})
	b := e.run(ctrSpec{id: "b", pod: pod, args: oomHog, opts: []oci.SpecOpts{oci.WithMemoryLimit(32 << 20)}})
	a.waitOutput(t, "ready\n", time.Minute)
	if code := b.wait(2 * time.Minute); code != 137 {
		t.Errorf("b: exit code = %d, want 137 (OOM)", code)
	}
	x := a.exec(t, "x", []string{"sh", "-c", "exit 3"}, nil)
	if code := x.finish(t, e); code != 3 {
		t.Errorf("exec x: exit code = %d, want 3", code)
	}
	limit := int64(64 << 20)
	if err := a.task.Update(e.ctx, client.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Errorf("update a: %v", err)
	}
	if err := a.task.Pause(e.ctx); err != nil {
		t.Fatalf("pause a: %v", err)
	}
	shim := a.shimPid()
	a.kill(syscall.SIGKILL)
	if code := a.wait(time.Minute); code != 137 {
		t.Errorf("a: exit code = %d, want 137", code)
	}
	cgs := []string{a.cgroupsPath(t), b.cgroupsPath(t)}
	a.delete()
	b.delete()
	for _, cg := range cgs {
		assertCgroupGone(t, cg)
	}
	assertShimExits(t, shim, "the pod's shim, after its last task was deleted")
}
