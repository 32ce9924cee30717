package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// The kill contract, as containerd's integration tests (TestContainerKill,
// TestContainerWait, TestKillContainerDeletedByRunc) and the runc shim
// define it: a finished process, or a container the runtime no longer
// has, answers Kill with NotFound ("process already finished"), which is
// what clients such as the CRI plugin test for to treat a stop as done.

// afterExitSignals are the signals sent to a process that has exited.
var afterExitSignals = []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGUSR1}

// wantKillNotFound sends each of afterExitSignals to p and wants NotFound.
func wantKillNotFound(t *testing.T, e *env, what string, p client.Process) {
	t.Helper()
	for _, sig := range afterExitSignals {
		err := p.Kill(e.ctx, sig)
		wantErrClass(t, fmt.Sprintf("%s: Kill(%v) after its exit", what, sig), err, "NotFound")
	}
}

// TestKillAfterExit: once a task's init or an exec has exited and been
// waited for, Kill with SIGKILL, SIGTERM or SIGUSR1 is NotFound, however
// it exited; and the exit code stays what it was.
func TestKillAfterExit(t *testing.T) {
	e := newDefaultEnv(t)
	t.Run("init-sigkilled", func(t *testing.T) {
		r := e.sub(t).run(ctrSpec{id: "killed", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
		r.waitOutput(t, "ready\n", time.Minute)
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Errorf("exit code = %d, want 137", code)
		}
		wantKillNotFound(t, e, "init", r.task)
		r.delete()
	})
	t.Run("init-exited", func(t *testing.T) {
		r := e.sub(t).run(ctrSpec{id: "exited", args: []string{"sh", "-c", "exit 3"}})
		if code := r.wait(time.Minute); code != 3 {
			t.Errorf("exit code = %d, want 3", code)
		}
		wantKillNotFound(t, e, "init", r.task)
		st, err := r.task.Delete(e.ctx)
		if err != nil {
			t.Fatalf("delete task: %v", err)
		}
		if st.ExitCode() != 3 {
			t.Errorf("exit code from Delete after the kills = %d, want 3", st.ExitCode())
		}
		if err := r.container.Delete(e.ctx, client.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("exec", func(t *testing.T) {
		r := e.sub(t).run(ctrSpec{id: "host", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
		r.waitOutput(t, "ready\n", time.Minute)

		x1 := r.exec(t, "exited", []string{"sh", "-c", "exit 4"}, nil)
		if code := x1.wait(t, time.Minute); code != 4 {
			t.Errorf("exec %s: exit code = %d, want 4", x1.id, code)
		}
		wantKillNotFound(t, e, "exec "+x1.id, x1.proc)

		x2 := r.exec(t, "killed", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
		if err := x2.stdout.waitFor(e.ctx, []byte("up\n")); err != nil {
			t.Fatalf("exec %s output: %v", x2.id, err)
		}
		if err := x2.proc.Kill(e.ctx, syscall.SIGKILL); err != nil {
			t.Fatalf("kill exec %s: %v", x2.id, err)
		}
		if code := x2.wait(t, time.Minute); code != 137 {
			t.Errorf("exec %s: exit code = %d, want 137", x2.id, code)
		}
		wantKillNotFound(t, e, "exec "+x2.id, x2.proc)

		for _, x := range []*execProc{x1, x2} {
			if _, err := x.proc.Delete(e.ctx); err != nil {
				t.Errorf("delete exec %s: %v", x.id, err)
			}
		}
		// The container is untouched by its execs' kills.
		if got := r.status(); got != client.Running {
			t.Errorf("container status = %q, want %q", got, client.Running)
		}
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Errorf("container exit code = %d, want 137", code)
		}
		r.delete()
	})
}

// TestKillDeletedByRuntime: the container is deleted with `runc delete
// --force` behind the shim's back (containerd's
// TestKillContainerDeletedByRunc). Kill of the init and of an exec is
// then NotFound, Wait returns 137 for both (runc SIGKILLs the init, the
// PID namespace takes the exec with it), and the task and the container
// still delete cleanly, leaving no process, cgroup, runc state or bundle.
func TestKillDeletedByRuntime(t *testing.T) {
	e := newDefaultEnv(t)
	runc := runcUnderTest(t)
	r := e.run(ctrSpec{id: "gone", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)
	x := r.exec(t, "x1", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
	if err := x.stdout.waitFor(e.ctx, []byte("up\n")); err != nil {
		t.Fatalf("exec output: %v", err)
	}
	initPid, execPid := int(r.task.Pid()), int(x.proc.Pid())
	cg := r.cgroupsPath(t)

	root := runcRoot(e.ns)
	state := filepath.Join(root, r.id)
	if _, err := os.Stat(filepath.Join(state, "state.json")); err != nil {
		t.Fatalf("runc state of %s is not where the shims keep it: %v", r.id, err)
	}
	if out, err := exec.Command(runc, "--root", root, "delete", "--force", r.id).CombinedOutput(); err != nil {
		t.Fatalf("runc delete --force %s: %v: %s", r.id, err, out)
	}

	wantErrClass(t, "Kill(SIGKILL) of the init after runc delete", r.task.Kill(e.ctx, syscall.SIGKILL), "NotFound")
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("init exit code = %d, want 137", code)
	}
	if code := x.wait(t, time.Minute); code != 137 {
		t.Errorf("exec exit code = %d, want 137", code)
	}
	wantKillNotFound(t, e, "init (deleted by runc)", r.task)
	wantKillNotFound(t, e, "exec (deleted by runc)", x.proc)
	if got := r.status(); got != client.Stopped {
		t.Errorf("status = %q, want %q", got, client.Stopped)
	}

	if _, err := x.proc.Delete(e.ctx); err != nil {
		t.Errorf("delete exec: %v", err)
	}
	st, err := r.task.Delete(e.ctx)
	if err != nil {
		t.Fatalf("delete task after runc delete: %v", err)
	}
	if st.ExitCode() != 137 {
		t.Errorf("exit code from Delete = %d, want 137", st.ExitCode())
	}
	if err := r.container.Delete(e.ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatalf("delete container: %v", err)
	}
	assertGone(t, "after delete", cg, initPid, execPid)
	for _, dir := range []string{state, e.bundleDir(r.id)} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s still there after delete (%v)", dir, err)
		}
	}
	if _, _, exists, _ := frozen(cg); exists {
		t.Errorf("freezer cgroup %s still there after delete", cg)
	}
}

// TestKillPaused: SIGKILL of a paused container, to its init alone and
// with all: Kill succeeds, Wait returns 137, the container's cgroup is
// not left frozen, status is stopped, and Delete succeeds and removes
// the cgroup with nothing left in it.
func TestKillPaused(t *testing.T) {
	e := newDefaultEnv(t)
	for _, tc := range []struct {
		name string
		opts []client.KillOpts
	}{
		{"init", nil},
		{"all", []client.KillOpts{client.WithKillAll}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			se := e.sub(t)
			r := se.run(ctrSpec{id: "paused-" + tc.name, args: []string{"sh", "-c", "sleep 1000 & echo ready; exec sleep 1001"}})
			r.waitOutput(t, "ready\n", time.Minute)
			cg := r.cgroupsPath(t)
			pids := procsInCgroup(cg)
			if len(pids) < 2 {
				t.Fatalf("processes in cgroup %s = %v, want the init and its child", cg, pids)
			}
			err := r.task.Pause(se.ctx)
			skipIfNotImplemented(t, err, "pause")
			if err != nil {
				t.Fatalf("pause: %v", err)
			}
			if state, isFrozen, _, err := frozen(cg); err != nil || !isFrozen {
				t.Fatalf("freezer state of %s after Pause = %q (%v), want frozen", cg, state, err)
			}
			if got := r.status(); got != client.Paused {
				t.Errorf("status after pause = %q, want %q", got, client.Paused)
			}

			if err := r.task.Kill(se.ctx, syscall.SIGKILL, tc.opts...); err != nil {
				t.Fatalf("kill paused container: %v", err)
			}
			if code := r.wait(time.Minute); code != 137 {
				t.Errorf("exit code = %d, want 137", code)
			}
			if state, isFrozen, _, err := frozen(cg); err != nil || isFrozen {
				t.Errorf("freezer state of %s after the exit = %q (%v), want not frozen", cg, state, err)
			}
			if got := r.status(); got != client.Stopped {
				t.Errorf("status after the exit = %q, want %q", got, client.Stopped)
			}
			wantKillNotFound(t, se, "init", r.task)
			r.delete()
			assertGone(t, "after delete", cg, pids...)
			if _, _, exists, _ := frozen(cg); exists {
				t.Errorf("freezer cgroup %s still there after delete", cg)
			}
		})
	}
}
