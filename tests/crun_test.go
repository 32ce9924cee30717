package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// hybridUnifiedControllers returns the controllers of the cgroup v2
// hierarchy of a v1/v2 hybrid host (mounted at /sys/fs/cgroup/unified),
// "" elsewhere. On these machines it is "hugetlb": no v1 hierarchy mounts
// hugetlb, so the kernel leaves it to v2.
func hybridUnifiedControllers() string {
	data, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// crunRuntime writes, in dir, a runtime binary that appends its arguments
// to calls and runs crun; it skips t when crun is not installed.
//
// On a hybrid host whose unified hierarchy has controllers, crun (1.8.1,
// Debian 12's) refuses every container, under every --cgroup-manager
// (disabled included), with "cgroups in hybrid mode not supported, drop
// all controllers from cgroupv2": libcrun_cgroup_enter checks it before
// it picks a manager. crun tells the cgroup mode from what is mounted:
// /sys/fs/cgroup a tmpfs and /sys/fs/cgroup/unified a cgroup2 is hybrid,
// the tmpfs alone legacy. There the wrapper runs crun in a mount
// namespace of its own with /sys/fs/cgroup/unified unmounted, so crun
// runs in legacy mode, with the v1 hierarchies only (its containers stay
// in the unified root cgroup: hugetlb is not limited). unshare(1) execs,
// so crun keeps the wrapper's pid; nothing outside that namespace changes.
func crunRuntime(t *testing.T, dir string) (wrapper, calls string) {
	t.Helper()
	crun, err := exec.LookPath("crun")
	if err != nil {
		t.Skipf("crun not installed: %v", err)
	}
	calls = filepath.Join(dir, "crun-calls.log")
	wrapper = filepath.Join(dir, "crun-wrapper")
	run := fmt.Sprintf(`exec %s "$@"`, crun)
	if c := hybridUnifiedControllers(); c != "" {
		t.Logf("cgroup hybrid host, unified hierarchy with controllers %q: crun runs without /sys/fs/cgroup/unified (legacy mode)", c)
		run = fmt.Sprintf(`exec unshare --mount --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$0" "$@"' %s "$@"`, crun)
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >>%s\n%s\n", calls, run)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, calls
}

// TestCrunLifecycle: a container whose OCI runtime is crun (BinaryName,
// through crunRuntime) runs, runs an exec with its exit code and output,
// pauses and resumes, is SIGKILLed (137) and deleted, and leaves no
// process in its cgroup; every step that must reach the runtime did.
func TestCrunLifecycle(t *testing.T) {
	e := newDefaultEnv(t)
	dir := filepath.Join(e.d.dir, "crun", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	crun, calls := crunRuntime(t, dir)

	// crun 1.8.1 rejects the runtime-spec version containerd 2.4 writes
	// (1.3.0); see TestRuntimeOptions.
	r := e.run(ctrSpec{id: "crun-life", args: []string{"sh", "-c", "echo ready; exec sleep 1000"},
		runtimeOpts: &options.Options{BinaryName: crun}, opts: []oci.SpecOpts{withSpecVersion("1.0.2")}})
	r.waitOutput(t, "ready\n", time.Minute)
	cg := r.cgroupsPath(t)

	x := r.exec(t, "x1", []string{"sh", "-c", "echo exec-out; exit 3"}, nil)
	if code := x.finish(t, e); code != 3 {
		t.Errorf("exec exit code = %d, want 3", code)
	}
	if got, want := string(x.stdout.Bytes()), "exec-out\n"; got != want {
		t.Errorf("exec stdout = %q, want %q", got, want)
	}

	if err := r.task.Pause(e.ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if got := r.status(); got != client.Paused {
		t.Errorf("status after pause = %q, want %q", got, client.Paused)
	}
	if err := r.task.Resume(e.ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := r.status(); got != client.Running {
		t.Errorf("status after resume = %q, want %q", got, client.Running)
	}

	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("exit code after SIGKILL = %d, want 137", code)
	}
	r.delete()
	if pids := procsInCgroup(cg); len(pids) > 0 {
		t.Errorf("processes %v still in cgroup %s after delete", pids, cg)
	}

	// The verb of each call: its first argument that is one (the global
	// flags before it take paths).
	data, _ := os.ReadFile(calls)
	var verbs []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if i := slices.IndexFunc(strings.Fields(line), func(f string) bool {
			return slices.Contains([]string{"create", "start", "exec", "pause", "resume", "kill", "delete", "state", "ps", "update"}, f)
		}); i >= 0 {
			verbs = append(verbs, strings.Fields(line)[i])
		}
	}
	t.Logf("crun calls: %q", verbs)
	for _, verb := range []string{"create", "exec", "pause", "resume"} {
		if !slices.Contains(verbs, verb) {
			t.Errorf("crun never called with %q; its calls:\n%s", verb, data)
		}
	}
}
