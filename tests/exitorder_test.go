package tests

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// The exit-order contract (containerd issues 10589, 10634, 10651): an
// init's TaskExit comes after the TaskExit of every exec that started; an
// exec cannot start once the init has exited; an exec that never started
// can still be deleted.

// wantExitOrder fails t unless the TaskExit events of container id are
// exactly want (as exitOf renders them), in that order. It polls, since
// events arrive asynchronously.
func wantExitOrder(t *testing.T, e *env, l *eventLog, id string, want []string) {
	t.Helper()
	var got []string
	pollUntil(20*time.Second, func() bool {
		got = exitsOf(l.exits(id))
		return len(got) >= len(want)
	})
	if !slices.Equal(got, want) {
		sameExits := slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
		if !sameExits || isSandboxRuntime() ||
			!knownDifference(t, e.d.version.name, "init-exit-before-exec-exits", "TaskExit order %v, want %v: %s", got, want, upstreamExitRaces) {
			t.Errorf("TaskExit events of %s = %v, want %v (execs' exits before the init's, each once)", id, got, want)
		}
	}
	l.streamErrors(t)
}

// startFailsAfterInitExit are the classes an exec start may fail with
// once its container's init has exited: FailedPrecondition (the runc
// shim of 2.x: "init process is not running") or NotFound.
var startFailsAfterInitExit = []string{"FailedPrecondition", "NotFound"}

// TestInitExitRefusesExecStart: a container with one exec running and two
// created; its init is SIGKILLed from the host, behind the shim's back.
// The running exec exits (137, the PID namespace dies with its init) and
// its TaskExit comes before the init's; starting a created exec then
// fails with FailedPrecondition or NotFound, and publishes nothing; both
// created execs, started or not, still delete.
func TestInitExitRefusesExecStart(t *testing.T) {
	e := newDefaultEnv(t)
	l := subscribe(t, e)
	r := e.run(ctrSpec{id: "racer", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)
	running := r.exec(t, "running", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
	if err := running.stdout.waitFor(e.ctx, []byte("up\n")); err != nil {
		t.Fatalf("exec output: %v", err)
	}
	late := r.createExec(t, "late", []string{"sleep", "1000"}, nil)
	never := r.createExec(t, "never", []string{"sleep", "1000"}, nil)

	if err := syscall.Kill(int(r.task.Pid()), syscall.SIGKILL); err != nil {
		t.Fatalf("kill init %d: %v", r.task.Pid(), err)
	}
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("init exit code = %d, want 137", code)
	}
	if code := running.wait(t, time.Minute); code != 137 {
		t.Errorf("exec %s exit code = %d, want 137", running.id, code)
	}

	err := late.proc.Start(e.ctx)
	if c := errClass(err); !slices.Contains(startFailsAfterInitExit, c) &&
		(err == nil || isSandboxRuntime() ||
			!knownDifference(t, e.d.version.name, "exec-start-after-init-exit", "exec start after the init's exit: %v (%s): %s", err, c, upstreamExitRaces)) {
		t.Errorf("start of an exec after the init's exit: got %v (%s), want %v", err, c, startFailsAfterInitExit)
	}
	if err == nil {
		// Do not leave it running for the rest of the test.
		_ = late.proc.Kill(e.ctx, syscall.SIGKILL)
	}
	if got := r.status(); got != client.Stopped {
		t.Errorf("container status = %q, want %q", got, client.Stopped)
	}
	wantExitOrder(t, e, l, r.id, []string{r.id + "/running:137", r.id + "/init:137"})

	for _, x := range []*execProc{running, late, never} {
		if _, err := x.proc.Delete(e.ctx); err != nil {
			t.Errorf("delete exec %s after the init's exit: %v", x.id, err)
		}
	}
	r.delete()
	for _, id := range []string{late.id, never.id} {
		if evs := l.of(r.id, id); slices.ContainsFunc(evs, func(ev taskEvent) bool { return ev.topic != "/tasks/exec-added" && ev.topic != "/tasks/delete" }) {
			t.Errorf("exec %s never ran, but published %v", id, topics(evs))
		}
	}
}

// holdingRuntime writes a runtime binary that runs runc, except that
// `runc exec` of a process whose environment has SHIMTEST_HOLD=<dir>
// first creates <dir>/ready and then waits for <dir>/go (at most a
// minute): the window between the shim deciding to start an exec and
// the exec starting, which containerd's runc-fp "delayExec" failpoint
// opens in TestIssue10589.
func holdingRuntime(t *testing.T, dir string) string {
	t.Helper()
	runc := runcUnderTest(t)
	wrapper := filepath.Join(dir, "runc-holding")
	script := fmt.Sprintf(`#!/bin/sh
proc= prev=
for a in "$@"; do
	[ "$prev" = --process ] && proc=$a
	case "$a" in --process=*) proc=${a#--process=} ;; esac
	prev=$a
done
if [ -n "$proc" ]; then
	dir=$(sed -n 's/.*"SHIMTEST_HOLD=\([^"]*\)".*/\1/p' "$proc")
	if [ -n "$dir" ]; then
		: >"$dir/ready"
		i=0
		while [ ! -e "$dir/go" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
	fi
fi
exec %s "$@"
`, runc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper
}

// heldExec is an exec whose `runc exec` the holding runtime holds. It is
// created and started in the background: done receives the error of the
// create, if that fails, else Start's result.
type heldExec struct {
	id      string
	dir     string
	x       *execProc // set before created is closed, nil if the create failed
	created chan struct{}
	done    chan error
}

// holdExec creates exec id in r, running sleep held in runc exec, and
// starts it, in the background.
func holdExec(t *testing.T, r *running, dir, id string) *heldExec {
	t.Helper()
	h := &heldExec{id: id, dir: filepath.Join(dir, id), created: make(chan struct{}), done: make(chan error, 1)}
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	go func() {
		x, err := r.tryCreateExec(id, []string{"sleep", "301"}, nil, "SHIMTEST_HOLD="+h.dir)
		h.x = x
		close(h.created)
		if err != nil {
			h.done <- fmt.Errorf("create: %w", err)
			return
		}
		h.done <- x.proc.Start(r.e.ctx)
	}()
	return h
}

// ready reports whether h's runc exec has reached the holding runtime.
func (h *heldExec) ready() bool {
	_, err := os.Stat(filepath.Join(h.dir, "ready"))
	return err == nil
}

// release lets h's runc exec go on.
func (h *heldExec) release() error {
	return os.WriteFile(filepath.Join(h.dir, "go"), nil, 0o644)
}

// result returns h's create or start error, failing t after a minute.
func (h *heldExec) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("create or start of %s did not return within a minute", h.id)
		return nil
	}
}

// TestInitExitDuringExecStart ports containerd's TestIssue10589: exec1's
// start is held inside `runc exec` while the init is SIGKILLed from the
// host; exec2 is created (the init's exit is not out yet, as exec1's
// start is in flight) and started; then both are let go. Neither may
// start (nothing runs in a dead container), both stay created and
// deletable, the task is stopped with 137, and the events hold exactly
// one TaskExit, the init's: no exec ever started. A runc exec held up
// must not hold up the shim's other calls.
func TestInitExitDuringExecStart(t *testing.T) {
	e := newDefaultEnv(t)
	dir := filepath.Join(e.d.dir, "hold", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var held []*heldExec
	t.Cleanup(func() {
		// Let every held runc exec go before the env's cleanup deletes
		// the container, even when the test failed half-way.
		for _, h := range held {
			_ = h.release()
			<-h.created
		}
		os.RemoveAll(dir)
	})
	l := subscribe(t, e)
	var ropts any = &options.Options{BinaryName: holdingRuntime(t, dir)}
	if isSandboxRuntime() {
		// The hold is in the runtime binary's `exec`: whatever
		// $SHIM_TEST_ENGINE says, this container's execs run it.
		var err error
		if ropts, err = withEngine(ropts, "runc"); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run(ctrSpec{id: "held", args: []string{"sleep", "1000"}, runtimeOpts: ropts})

	exec1 := holdExec(t, r, dir, "exec1")
	held = append(held, exec1)
	if !pollUntil(time.Minute, exec1.ready) {
		t.Fatalf("exec1's runc exec never reached the holding runtime")
	}
	if err := syscall.Kill(int(r.task.Pid()), syscall.SIGKILL); err != nil {
		t.Fatalf("kill init %d: %v", r.task.Pid(), err)
	}

	// exec2: created while exec1's start holds the init's exit back (the
	// runc shim of 2.x accepts it); its start either fails at once, the
	// init being gone, or reaches runc and is held too.
	exec2 := holdExec(t, r, dir, "exec2")
	held = append(held, exec2)
	var exec2Err error
	exec2Returned := false
	exec2Settled := func() bool {
		select {
		case exec2Err = <-exec2.done:
			exec2Returned = true
			return true
		default:
			return exec2.ready()
		}
	}
	released := false
	if !pollUntil(20*time.Second, exec2Settled) {
		if isSandboxRuntime() ||
			!knownDifference(t, e.d.version.name, "lock-held-across-runc-exec", "it holds a lock across runc exec: exec2's create or start waits for exec1's runc exec to return") {
			t.Fatalf("exec2's create and start neither returned nor reached runc within 20s while exec1's runc exec was held")
		}
		if err := exec1.release(); err != nil {
			t.Fatal(err)
		}
		released = true
		if !pollUntil(time.Minute, exec2Settled) {
			t.Fatalf("exec2's create and start neither returned nor reached runc")
		}
	}
	if !released {
		if err := exec1.release(); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec1.result(t); err == nil {
		t.Errorf("exec1 started in a container whose init is dead")
	} else {
		t.Logf("exec1 start: %v (%s)", err, errClass(err))
	}
	switch {
	case exec2Returned && exec2.x == nil:
		if isSandboxRuntime() ||
			!knownDifference(t, e.d.version.name, "exec-create-after-init-exit", "exec2: %v (%s): %s", exec2Err, errClass(exec2Err), upstreamExitRaces) {
			t.Errorf("exec2 created while exec1's start was in flight: %v (%s), want success", exec2Err, errClass(exec2Err))
		}
	case exec2Returned:
		wantErrClass(t, "exec2 start after the init's exit", exec2Err, startFailsAfterInitExit...)
	default:
		if err := exec2.release(); err != nil {
			t.Fatal(err)
		}
		if err := exec2.result(t); err == nil {
			t.Errorf("exec2 started in a container whose init is dead")
		} else {
			t.Logf("exec2 start (reached runc): %v (%s)", err, errClass(err))
		}
	}

	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("init exit code = %d, want 137", code)
	}
	var created []*execProc
	for _, h := range held {
		if h.x != nil {
			created = append(created, h.x)
		}
	}
	for _, x := range created {
		st, err := x.proc.Status(e.ctx)
		if err != nil {
			t.Errorf("status of %s: %v", x.id, err)
		} else if st.Status != client.Created {
			t.Errorf("status of %s = %q, want %q (its start failed)", x.id, st.Status, client.Created)
		}
	}
	if got := r.status(); got != client.Stopped {
		t.Errorf("container status = %q, want %q", got, client.Stopped)
	}
	wantExitOrder(t, e, l, r.id, []string{r.id + "/init:137"})
	for _, x := range created {
		if _, err := x.proc.Delete(e.ctx); err != nil {
			t.Errorf("delete exec %s: %v", x.id, err)
		}
	}
	r.delete()
}

// TestSharedPidNamespaceExit: container B joins container A's PID
// namespace, in the same shim. B's init exiting takes B's other
// processes with it, as the runc shim does (runc kill --all at the init's
// exit when the container has no PID namespace of its own): an exec that
// would outlive the init gets its TaskExit (137) and its Wait returns,
// before the init's TaskExit. The same when B's init is SIGKILLed and B
// deleted at once, and when B is deleted with WithProcessKill while the
// exec's Wait is in flight. Nothing of B is left; A runs on.
func TestSharedPidNamespaceExit(t *testing.T) {
	e := newDefaultEnv(t)
	l := subscribe(t, e)
	group := oci.WithAnnotations(map[string]string{groupAnnotation: "pidgroup"})
	a := e.run(ctrSpec{id: "pid-a", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}, opts: []oci.SpecOpts{group}})
	a.waitOutput(t, "ready\n", time.Minute)
	aPid := int(a.task.Pid())

	// guest starts B with init script and an exec that sleeps.
	guest := func(t *testing.T, id, script string, stdin io.Reader) (*running, *execProc) {
		t.Helper()
		b := e.sub(t).run(ctrSpec{id: id, args: []string{"sh", "-c", script}, stdin: stdin,
			opts: []oci.SpecOpts{group, withPidNamespaceOf(aPid)}})
		b.waitOutput(t, "ready\n", time.Minute)
		if got, want := b.shimPid(), a.shimPid(); got != want {
			t.Fatalf("%s is served by shim %d, want %d (A's, same group)", id, got, want)
		}
		x := b.exec(t, "outliver", []string{"sh", "-c", "echo up; exec sleep 1000"}, nil)
		if err := x.stdout.waitFor(e.ctx, []byte("up\n")); err != nil {
			t.Fatalf("exec output: %v", err)
		}
		return b, x
	}

	t.Run("init-exits", func(t *testing.T) {
		pr, pw := io.Pipe()
		b, x := guest(t, "pid-b1", "echo ready; read line; exit 3", pr)
		initPid, execPid, cg := int(b.task.Pid()), int(x.proc.Pid()), b.cgroupsPath(t)
		pw.Close() // EOF on the init's stdin: it exits 3
		if code := x.wait(t, time.Minute); code != 137 {
			t.Errorf("exec exit code = %d, want 137 (killed at its init's exit)", code)
		}
		if code := b.wait(time.Minute); code != 3 {
			t.Errorf("init exit code = %d, want 3", code)
		}
		wantExitOrder(t, e, l, b.id, []string{b.id + "/outliver:137", b.id + "/init:3"})
		assertGone(t, "after B's init exited", cg, initPid, execPid)
		if _, err := x.proc.Delete(e.ctx); err != nil {
			t.Errorf("delete exec: %v", err)
		}
		b.delete()
	})
	t.Run("init-killed-then-deleted", func(t *testing.T) {
		b, x := guest(t, "pid-b2", "echo ready; exec sleep 1000", nil)
		initPid, execPid, cg := int(b.task.Pid()), int(x.proc.Pid()), b.cgroupsPath(t)
		b.kill(syscall.SIGKILL)
		if code := b.wait(time.Minute); code != 137 {
			t.Errorf("init exit code = %d, want 137", code)
		}
		b.delete()
		if code := x.wait(t, time.Minute); code != 137 {
			t.Errorf("exec exit code = %d, want 137", code)
		}
		wantExitOrder(t, e, l, b.id, []string{b.id + "/outliver:137", b.id + "/init:137"})
		assertGone(t, "after B's delete", cg, initPid, execPid)
	})
	t.Run("deleted-while-exec-waits", func(t *testing.T) {
		b, x := guest(t, "pid-b3", "echo ready; exec sleep 1000", nil)
		initPid, execPid, cg := int(b.task.Pid()), int(x.proc.Pid()), b.cgroupsPath(t)
		// x's Wait is in flight since before its start.
		st, err := b.task.Delete(e.ctx, client.WithProcessKill)
		if err != nil {
			t.Fatalf("delete B with WithProcessKill: %v", err)
		}
		if st.ExitCode() != 137 {
			t.Errorf("init exit code from Delete = %d, want 137", st.ExitCode())
		}
		if code := x.wait(t, time.Minute); code != 137 {
			t.Errorf("exec exit code = %d, want 137", code)
		}
		if err := b.container.Delete(e.ctx, client.WithSnapshotCleanup); err != nil {
			t.Fatalf("delete container: %v", err)
		}
		wantExitOrder(t, e, l, b.id, []string{b.id + "/outliver:137", b.id + "/init:137"})
		assertGone(t, "after B's delete", cg, initPid, execPid)
	})

	if got := a.status(); got != client.Running {
		t.Errorf("A's status after B's exits = %q, want %q", got, client.Running)
	}
	a.kill(syscall.SIGKILL)
	if code := a.wait(time.Minute); code != 137 {
		t.Errorf("A's exit code = %d, want 137", code)
	}
	a.delete()
}
