package tests

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

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
