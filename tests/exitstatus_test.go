package tests

import (
	"context"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// wantStatusAnswered asks p, several times, for its status and waits on
// it: each answer must be stopped with exit code want (and, for a task,
// an exit time after started), each Wait must return want at once. Kills in between
// (NotFound) must not change that.
func wantStatusAnswered(t *testing.T, e *env, what string, p client.Process, want uint32, started time.Time) {
	t.Helper()
	for i := range 3 {
		st, err := p.Status(e.ctx)
		if err != nil {
			t.Errorf("%s: Status #%d after exit: %v", what, i+1, err)
		} else {
			if st.Status != client.Stopped || st.ExitStatus != want {
				t.Errorf("%s: Status #%d = %q exit %d, want %q exit %d", what, i+1, st.Status, st.ExitStatus, client.Stopped, want)
			}
			// The client reports an exit time for a task only.
			if _, isTask := p.(client.Task); isTask && !st.ExitTime.After(started) {
				t.Errorf("%s: Status #%d exit time %v, want after the start (%v)", what, i+1, st.ExitTime, started)
			}
		}
		ch, err := p.Wait(e.ctx)
		if err != nil {
			t.Errorf("%s: Wait #%d after exit: %v", what, i+1, err)
			continue
		}
		if code := waitExitStatus(t, fmt.Sprintf("%s: Wait #%d", what, i+1), ch, 10*time.Second); code != want {
			t.Errorf("%s: Wait #%d = %d, want %d", what, i+1, code, want)
		}
		wantErrClass(t, fmt.Sprintf("%s: Kill(SIGKILL) #%d after exit", what, i+1), p.Kill(e.ctx, syscall.SIGKILL), "NotFound")
	}
}

// TestExitStatusAnswerable: after an exit and until Delete, the exit code
// of an init and of an exec stays answerable: State and Wait give it on
// every call (containerd's TestWaitStoppedTask, TestWaitStoppedProcess,
// TestContainerExitedAtSet: the init's exit time is after its start),
// and Delete returns it. A Wait whose context
// is already cancelled returns an error and disturbs nothing
// (TestContainerWait).
func TestExitStatusAnswerable(t *testing.T) {
	e := newDefaultEnv(t)
	started := time.Now()
	pr, pw := io.Pipe()
	r := e.run(ctrSpec{id: "answer", args: []string{"sh", "-c", "echo ready; read line; exit 7"}, stdin: pr})
	r.waitOutput(t, "ready\n", time.Minute)

	cancelled, cancel := context.WithCancel(e.ctx)
	cancel()
	ch, err := r.task.Wait(cancelled)
	if err == nil {
		select {
		case st := <-ch:
			err = st.Error()
		case <-time.After(10 * time.Second):
			t.Errorf("Wait with a cancelled context did not return within 10s")
		}
	}
	if err == nil {
		t.Errorf("Wait with a cancelled context: no error, want one")
	}
	if got := r.status(); got != client.Running {
		t.Errorf("status after a cancelled Wait = %q, want %q", got, client.Running)
	}

	x := r.exec(t, "x6", []string{"sh", "-c", "exit 6"}, nil)
	if code := x.wait(t, time.Minute); code != 6 {
		t.Errorf("exec exit code = %d, want 6", code)
	}
	wantStatusAnswered(t, e, "exec", x.proc, 6, started)

	pw.Close() // EOF on the init's stdin: it exits 7
	if code := r.wait(time.Minute); code != 7 {
		t.Errorf("init exit code = %d, want 7", code)
	}
	wantStatusAnswered(t, e, "init", r.task, 7, started)
	// The exec's status outlives its container's init exit too.
	wantStatusAnswered(t, e, "exec after the init's exit", x.proc, 6, started)

	st, err := x.proc.Delete(e.ctx)
	if err != nil {
		t.Fatalf("delete exec: %v", err)
	}
	if st.ExitCode() != 6 {
		t.Errorf("exec exit code from Delete = %d, want 6", st.ExitCode())
	}
	wantStatusAnswered(t, e, "init after its exec's delete", r.task, 7, started)
	st, err = r.task.Delete(e.ctx)
	if err != nil {
		t.Fatalf("delete task: %v", err)
	}
	if st.ExitCode() != 7 {
		t.Errorf("init exit code from Delete = %d, want 7", st.ExitCode())
	}
	if err := r.container.Delete(e.ctx, client.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
}

// TestInitKilledBeforeStart ports containerd's TestIssue9103: a created
// task is created; when its init (runc init, waiting to be started) is
// killed before Start, as an OOM kill would, Wait returns, the task is
// stopped, Start fails and Delete succeeds.
func TestInitKilledBeforeStart(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.create(ctrSpec{id: "stillborn", args: []string{"sleep", "1000"}})
	if got := r.status(); got != client.Created {
		t.Errorf("status after NewTask = %q, want %q", got, client.Created)
	}
	pid := int(r.task.Pid())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill runc init %d: %v", pid, err)
	}
	code := r.wait(time.Minute)
	t.Logf("exit code of the killed runc init: %d", code)
	if got := r.status(); got != client.Stopped {
		t.Errorf("status after the init was killed = %q, want %q", got, client.Stopped)
	}
	if err := r.task.Start(e.ctx); err == nil {
		t.Errorf("Start of a task whose init was killed: no error")
	} else {
		t.Logf("Start after the init was killed: %v (%s)", err, errClass(err))
	}
	wantErrClass(t, "Kill(SIGKILL) of the killed init", r.task.Kill(e.ctx, syscall.SIGKILL), "NotFound")
	r.delete()
	if alive(pid) {
		t.Errorf("init %d still alive after delete", pid)
	}
}
