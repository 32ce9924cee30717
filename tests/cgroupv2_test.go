package tests

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The cgroup v2 tests: what the shim reads and does through cgroups, on a
// real pure v2 hierarchy (the qemu guest of tests/vm/run.sh; they skip
// elsewhere, see requireCgroupV2). Each runs for the runtime under test,
// the runc shim validating the tests themselves.

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
