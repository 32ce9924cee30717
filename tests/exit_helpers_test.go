package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// Helpers of the exit and kill contract tests (kill_test.go,
// exitorder_test.go, exitstatus_test.go).

// wantErrClass fails t unless err is of one of the errdefs classes want
// (names as errClass gives them: "NotFound", "FailedPrecondition", ...).
func wantErrClass(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if got := errClass(err); !slices.Contains(want, got) {
		t.Errorf("%s: got %v (%s), want %s", what, err, got, strings.Join(want, " or "))
	}
}

// waitExitStatus returns the exit code that ch delivers, failing t if it
// carries an error or nothing arrives within timeout.
func waitExitStatus(t *testing.T, what string, ch <-chan client.ExitStatus, timeout time.Duration) uint32 {
	t.Helper()
	select {
	case st := <-ch:
		code, _, err := st.Result()
		if err != nil {
			t.Fatalf("%s: exit status: %v", what, err)
		}
		return code
	case <-time.After(timeout):
		t.Fatalf("%s: no exit within %v", what, timeout)
		return 0
	}
}

// wait returns the exec's exit code, failing t if it does not exit within
// timeout. Unlike finish, it does not delete the exec.
func (x *execProc) wait(t *testing.T, timeout time.Duration) uint32 {
	t.Helper()
	return waitExitStatus(t, "exec "+x.id, x.exitC, timeout)
}

// cgroupsPath returns the cgroup path of r's container as its spec names
// it (the client's default is /<namespace>/<id>).
func (r *running) cgroupsPath(t *testing.T) string {
	t.Helper()
	spec, err := r.container.Spec(r.e.ctx)
	if err != nil {
		t.Fatalf("spec of %s: %v", r.id, err)
	}
	if spec.Linux == nil || spec.Linux.CgroupsPath == "" || !strings.HasPrefix(spec.Linux.CgroupsPath, "/") {
		t.Fatalf("%s: spec has no absolute cgroups path: %+v", r.id, spec.Linux)
	}
	return spec.Linux.CgroupsPath
}

// procsInCgroup lists the processes that are in cgroup path in any
// hierarchy (v1 or v2), found through /proc/<pid>/cgroup so that it
// works whether or not the cgroup directory still exists.
func procsInCgroup(path string) []int {
	var pids []int
	for _, p := range listProcs() {
		for _, line := range strings.Split(procCgroups(p.pid), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && parts[2] == path {
				pids = append(pids, p.pid)
				break
			}
		}
	}
	return pids
}

// cgroupV2 reports whether /sys/fs/cgroup is the unified hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// freezerFile is the file that says whether cgroup path is frozen:
// freezer.state (THAWED, FREEZING, FROZEN) in cgroup v1, cgroup.freeze
// (0, 1) in cgroup v2.
func freezerFile(path string) string {
	if cgroupV2() {
		return filepath.Join("/sys/fs/cgroup", path, "cgroup.freeze")
	}
	return filepath.Join("/sys/fs/cgroup/freezer", path, "freezer.state")
}

// frozen reads the freezer state of cgroup path: the file's content and
// whether it says frozen (or freezing). exists is false when the cgroup
// is gone.
func frozen(path string) (state string, isFrozen, exists bool, err error) {
	data, err := os.ReadFile(freezerFile(path))
	if os.IsNotExist(err) {
		return "", false, false, nil
	}
	if err != nil {
		return "", false, true, err
	}
	state = strings.TrimSpace(string(data))
	if cgroupV2() {
		return state, state == "1", true, nil
	}
	return state, state == "FROZEN" || state == "FREEZING", true, nil
}

// runcRoot is the runc state root the shims use for the containers of
// namespace ns: both shims default runtime option Root to
// /run/containerd/runc and append the namespace.
func runcRoot(ns string) string { return filepath.Join("/run/containerd/runc", ns) }

// assertGone fails t if any of pids is still alive or any process is in
// cgroup path.
func assertGone(t *testing.T, what string, path string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if pid > 0 && alive(pid) {
			t.Errorf("%s: pid %d (%q) still alive", what, pid, cmdlineOf(pid))
		}
	}
	if left := procsInCgroup(path); len(left) > 0 {
		t.Errorf("%s: processes left in cgroup %s: %v", what, path, describe(left))
	}
}

// exitOf formats a TaskExit for messages.
func exitOf(ev taskEvent) string {
	id := ev.execID
	if id == "" {
		id = "init"
	}
	return fmt.Sprintf("%s/%s:%d", ev.containerID, id, ev.exitStatus)
}

func exitsOf(evs []taskEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = exitOf(ev)
	}
	return out
}

// upstreamExitRaces is why containerd 1.6's runc shim fails the exit
// order checks: Debian's 1.6.20 predates containerd#10634 and #10651
// (runc-shim: refuse exec starts after the init's exit; publish the
// init's exit only after its execs'; both backported to later 1.6
// releases). It publishes an init's TaskExit as soon as it has run `runc
// kill --all`, before the execs that kill ends; it handles the init's
// exit while an exec start is in flight, so a second exec cannot even be
// created; and it lets an exec start reach runc after the init's exit,
// answering with runc's error (class Unknown).
const upstreamExitRaces = "1.6.20 predates containerd#10634/#10651 (exec starts vs init exit, init exit after exec exits)"
