package tests

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// requireSystemd skips t unless systemd is the init of a pure cgroup v2
// host (the qemu guest of tests/vm/run.sh with VM_INIT=systemd); with
// SHIM_TEST_SYSTEMD=1, as that guest sets it, it fails instead.
func requireSystemd(t *testing.T) {
	t.Helper()
	requireCgroupV2(t)
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		return
	}
	why := "systemd is not the init here (no /run/systemd/system): the SystemdCgroup tests run in the qemu guest's systemd lane (tests/vm/run.sh)"
	if os.Getenv("SHIM_TEST_SYSTEMD") == "1" {
		t.Fatal("SHIM_TEST_SYSTEMD=1, but " + why)
	}
	t.Skip(why)
}

// withCgroupsPath sets the spec's cgroupsPath; for runc's systemd driver
// "slice:prefix:name", the unit prefix-name.scope in slice.
func withCgroupsPath(path string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		s.Linux.CgroupsPath = path
		return nil
	}
}

// TestCgroupV2Systemd: with runtime option SystemdCgroup (the cgroup
// driver kubelet uses on systemd hosts) each container is a systemd
// scope in its slice; its metrics match its cgroup files and containerd's
// cgroup2 package; an OOM kill gives 137 with TaskOOM before TaskExit;
// Update, Pause and Resume reach the scope's cgroup; nothing is left of
// it after delete.
func TestCgroupV2Systemd(t *testing.T) {
	requireSystemd(t)
	e := newDefaultEnv(t)
	const slice = "shimtest.slice"
	prefix := "shimtest-" + suite.runID
	opts := &options.Options{SystemdCgroup: true}
	run := func(e *env, id string, args []string, o ...oci.SpecOpts) (*running, string) {
		t.Helper()
		r := e.run(ctrSpec{id: id, args: args, runtimeOpts: opts,
			opts: append(o, withCgroupsPath(slice+":"+prefix+":"+id))})
		return r, "/" + slice + "/" + prefix + "-" + id + ".scope"
	}

	t.Run("stats-update-freeze", func(t *testing.T) {
		se := e.sub(t)
		r, cg := run(se, "sd", statsWorkload, oci.WithMemoryLimit(256<<20), oci.WithPidsLimit(64))
		r.waitOutput(t, "ready\n", 2*time.Minute)
		if got, want := strings.TrimSpace(procCgroups(int(r.task.Pid()))), "0::"+cg; got != want {
			t.Errorf("/proc/%d/cgroup of the init = %q, want %q (the container's scope)", r.task.Pid(), got, want)
		}
		for file, want := range map[string]string{"memory.max": "268435456", "pids.max": "64"} {
			if got := cgRead(t, cg, file); got != want {
				t.Errorf("%s %s = %q, want %q (from the spec)", cg, file, got, want)
			}
		}
		st := takeStats(t, r, cg)
		t.Run("files", st.checkFiles)
		t.Run("cgroup2-package", st.checkCgroup2)

		limit, quota, period := int64(64<<20), int64(50000), uint64(100000)
		err := r.task.Update(se.ctx, client.WithResources(&specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &limit},
			CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
		}))
		skipIfNotImplemented(t, err, "update")
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		for file, want := range map[string]string{"memory.max": "67108864", "cpu.max": "50000 100000"} {
			if got := cgRead(t, cg, file); got != want {
				t.Errorf("after update: %s %s = %q, want %q", cg, file, got, want)
			}
		}

		if err := r.task.Pause(se.ctx); err != nil {
			t.Fatalf("pause: %v", err)
		}
		if freeze, frozen := frozenV2(t, cg); freeze != "1" || frozen != 1 {
			t.Errorf("after Pause cgroup.freeze = %q, cgroup.events frozen = %d; want 1 and 1", freeze, frozen)
		}
		if err := r.task.Resume(se.ctx); err != nil {
			t.Fatalf("resume: %v", err)
		}
		if freeze, frozen := frozenV2(t, cg); freeze != "0" || frozen != 0 {
			t.Errorf("after Resume cgroup.freeze = %q, cgroup.events frozen = %d; want 0 and 0", freeze, frozen)
		}
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Errorf("exit code = %d, want 137", code)
		}
		r.delete()
		assertCgroupGone(t, cg)
	})

	t.Run("oom", func(t *testing.T) {
		se := e.sub(t)
		events := subscribeFiltered(t, se, fmt.Sprintf(`namespace==%q,topic~="^/tasks/(oom|exit)$"`, se.ns))
		r, cg := run(se, "sd-oom", oomHog, oci.WithMemoryLimit(32<<20))
		if code := r.wait(2 * time.Minute); code != 137 {
			t.Errorf("exit code = %d, want 137 (SIGKILL by the OOM killer)", code)
		}
		evs := waitEvents(t, events, r.id)
		oom, exit := slices.Index(evs, "/tasks/oom"), slices.Index(evs, "/tasks/exit")
		switch {
		case exit >= 0 && oom < 0 && knownDifference(t, se.d.version.name, "systemd-taskoom-missed",
			"events of %s = %v, no /tasks/oom\n%s", r.id, evs, cgDump(cg, "memory.events")):
		case oom < 0 || exit < 0 || oom > exit:
			t.Errorf("events of %s = %v, want /tasks/oom before /tasks/exit\n%s", r.id, evs, cgDump(cg, "memory.events"))
		}
		r.delete()
		assertCgroupGone(t, cg)
	})
}
