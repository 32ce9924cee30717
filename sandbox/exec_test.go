package sandbox

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// runningContainer creates and starts c1 over a fake engine and returns
// its bundle and init pid.
func runningContainer(t *testing.T, p *pod) (string, int) {
	t.Helper()
	ctx := context.Background()
	bundle := newBundle(t, nil)
	child := testutil.StartSleeper(t)
	p.engineFor(bundle).OnCreate = fakeruntime.WritePid(child.Process.Pid)
	pid, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: bundle})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return bundle, pid
}

// execWritesPid is a fake `runc exec --pid-file`; before returning it
// runs during, which may deliver the exec's exit early.
func execWritesPid(pid int, during func()) func(context.Context, string, specs.Process, *runc.ExecOpts) error {
	return func(_ context.Context, _ string, _ specs.Process, opts *runc.ExecOpts) error {
		if err := os.WriteFile(opts.PidFile, []byte(fmt.Sprint(pid)), 0o600); err != nil {
			return err
		}
		if during != nil {
			during()
		}
		return nil
	}
}

var trueSpec = specs.Process{Args: []string{"/bin/true"}, Cwd: "/"}

func execTopics(p *pod, execID string) []string {
	var out []string
	for _, e := range p.pub.all() {
		switch ev := e.event.(type) {
		case *eventstypes.TaskExecAdded:
			if ev.ExecID == execID {
				out = append(out, e.topic)
			}
		case *eventstypes.TaskExecStarted:
			if ev.ExecID == execID {
				out = append(out, e.topic)
			}
		case *eventstypes.TaskExit:
			if ev.ID == execID {
				out = append(out, e.topic)
			}
		case *eventstypes.TaskDelete:
			if ev.ID == execID {
				out = append(out, e.topic)
			}
		}
	}
	return out
}

var execLifecycle = []string{TopicTaskExecAdded, TopicTaskExecStarted, TopicTaskExit, TopicTaskDelete}

func TestExecLifecycleAndEarlyExit(t *testing.T) {
	tests := []struct {
		name string
		// early delivers the exit while runc exec still runs: /bin/true
		// exiting before its pid is known (DESIGN.md race 1).
		early bool
	}{
		{name: "exit after start"},
		{name: "exit before pid known", early: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p := newPod(t)
			bundle, _ := runningContainer(t, p)
			const execPid = 777001
			exit := reaper.Exit{Pid: execPid, Status: 5, Timestamp: time.Now()}
			var during func()
			if tt.early {
				during = func() { p.m.handleExit(exit) }
			}
			p.engineFor(bundle).OnExec = execWritesPid(execPid, during)
			if err := p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e1", Spec: trueSpec}); err != nil {
				t.Fatalf("Exec: %v", err)
			}
			pid, err := p.m.StartExec(ctx, "c1", "e1")
			if err != nil || pid != execPid {
				t.Fatalf("StartExec: got (%d, %v), want (%d, nil)", pid, err, execPid)
			}
			if !tt.early {
				p.m.handleExit(exit)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			st, err := p.m.WaitExec(wctx, "c1", "e1")
			if err != nil || st.ExitStatus != 5 {
				t.Fatalf("WaitExec: got (%d, %v), want (5, nil)", st.ExitStatus, err)
			}
			if st, err := p.m.DeleteExec(ctx, "c1", "e1"); err != nil || st.State != process.Deleted {
				t.Fatalf("DeleteExec: got (%v, %v), want deleted", st.State, err)
			}
			// The container itself is undisturbed.
			if st, _ := p.m.State(ctx, "c1"); st.State != process.Running {
				t.Errorf("container: got %s, want running", st.State)
			}
			p.close(t)
			if got := execTopics(p, "e1"); !slices.Equal(got, execLifecycle) {
				t.Errorf("exec events: got %q, want %q", got, execLifecycle)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle, initPid := runningContainer(t, p)
	p.engineFor(bundle).OnExec = execWritesPid(777002, nil)
	if err := p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e1", Spec: trueSpec}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	check := func(name string, err error, is func(error) bool, want string) {
		t.Helper()
		if !is(err) {
			t.Errorf("%s: got %v, want %s", name, err, want)
		}
	}
	check("duplicate exec id", p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e1", Spec: trueSpec}), errdefs.IsAlreadyExists, "AlreadyExists")
	check("unknown container", p.m.Exec(ctx, ExecRequest{ContainerID: "nosuch", ExecID: "e2", Spec: trueSpec}), errdefs.IsNotFound, "NotFound")
	check("bad exec id", p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "a/b", Spec: trueSpec}), errdefs.IsInvalidArgument, "InvalidArgument")
	check("no args", p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e3"}), errdefs.IsInvalidArgument, "InvalidArgument")
	_, err := p.m.StartExec(ctx, "c1", "nosuch")
	check("start unknown exec", err, errdefs.IsNotFound, "NotFound")
	check("kill before start", p.m.KillExec(ctx, "c1", "e1", 9), errdefs.IsFailedPrecondition, "FailedPrecondition")
	if _, err := p.m.StartExec(ctx, "c1", "e1"); err != nil {
		t.Fatalf("StartExec: %v", err)
	}
	_, err = p.m.StartExec(ctx, "c1", "e1")
	check("start twice", err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	_, err = p.m.DeleteExec(ctx, "c1", "e1")
	check("delete running exec", err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	if got := p.m.ExecPids("c1"); got[777002] != "e1" {
		t.Errorf("ExecPids: got %v, want 777002 -> e1", got)
	}

	// Exec into a stopped container. The init's exit is held until the
	// started exec's is out (exits.go rule 3).
	p.m.handleExit(reaper.Exit{Pid: initPid, Status: 0, Timestamp: time.Now()})
	_, err = p.m.StartExec(ctx, "c1", "e1")
	check("start exec after the init exited", err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	p.m.handleExit(reaper.Exit{Pid: 777002, Status: 137, Timestamp: time.Now()})
	if _, err := p.m.Wait(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	check("exec into stopped container", p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e4", Spec: trueSpec}), errdefs.IsFailedPrecondition, "FailedPrecondition")
}

// TestExecRacesDelete: an Exec that races the container's Delete either
// lands before it (and its exec is deleted with the container) or fails
// NotFound (or FailedPrecondition while the delete runs); it never writes into a deleted container (a panic that would
// take the pod's shim down) nor leaves an exec behind.
func TestExecRacesDelete(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	for i := range 50 {
		id := fmt.Sprintf("c%d", i)
		pid, e := p.createContainer(t, id)
		e.OnDelete = func(context.Context, string, bool) error {
			p.m.handleExit(reaper.Exit{Pid: pid, Status: 137, Timestamp: time.Now()})
			return nil
		}
		errs := make(chan error, 8)
		for j := range cap(errs) {
			go func() {
				errs <- p.m.Exec(ctx, ExecRequest{ContainerID: id, ExecID: fmt.Sprintf("e%d", j), Spec: trueSpec})
			}()
		}
		if _, err := p.m.Delete(ctx, id); err != nil {
			t.Fatalf("Delete %s: %v", id, err)
		}
		for range cap(errs) {
			// FailedPrecondition: it came while the delete ran.
			if err := <-errs; err != nil && !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Exec racing Delete of %s: got %v, want nil, NotFound or FailedPrecondition", id, err)
			}
		}
		if got := p.m.ExecPids(id); len(got) != 0 {
			t.Errorf("execs of deleted %s still listed: %v", id, got)
		}
		if _, err := p.m.StateExec(ctx, id, "e0"); !errdefs.IsNotFound(err) {
			t.Errorf("StateExec in deleted %s: got %v, want NotFound", id, err)
		}
	}
	p.close(t)
}

// TestExecStartPanicReleasesInitExit: an exec start that panics (the
// service recovers handler panics) still ends its start, so it does not
// hold the init's exit forever (exits.go rule 3).
func TestExecStartPanicReleasesInitExit(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle, initPid := runningContainer(t, p)
	p.engineFor(bundle).OnExec = func(context.Context, string, specs.Process, *runc.ExecOpts) error {
		panic("runtime wrapper bug")
	}
	if err := p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e1", Spec: trueSpec}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("StartExec did not panic")
			}
		}()
		_, _ = p.m.StartExec(ctx, "c1", "e1")
	}()
	p.m.handleExit(reaper.Exit{Pid: initPid, Status: 7, Timestamp: time.Now()})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if st, err := p.m.Wait(wctx, "c1"); err != nil || st.ExitStatus != 7 {
		t.Fatalf("Wait: got (%d, %v), want (7, nil)", st.ExitStatus, err)
	}
	p.close(t)
}
