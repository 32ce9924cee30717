package tests

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// upstreamRetryWindow is how long the runc shim keeps trying an event it
// could not forward: it requeues it after 1, 2, 3, 4 and 5 s and drops it
// after the fifth retry (containerd's pkg/shim/publisher.go, maxRequeue 5;
// containerd issue 6771). A TaskExit whose containerd is back within this
// window reaches it; one that waited longer is an upstream loss.
const upstreamRetryWindow = 15 * time.Second

// outageEventWait bounds the wait for a kept TaskExit once containerd's
// events endpoint is back. This shim retries at least every 2 s; the runc
// shim retries at most 5 s apart within its window.
const outageEventWait = 15 * time.Second

// TestEventsAcrossContainerdOutage (finding 11): containerd is SIGKILLed
// while a pod's containers run, the containers exit during the outage,
// and containerd is started again after 5 s, 30 s and 2 min. Then every
// TaskExit the shim kept reaches containerd's event stream, once, with
// the container's pid and exit status, in the order of the exits; and
// every exit code reaches the client, through Wait and Delete, or through
// the TaskDelete event where containerd deleted the task itself on its
// way back (2.2 and 2.4.2 do, see checkExitCode). The old queue of this
// shim dropped the kept events after about 1.5 s; the runc shim drops
// them after about 15 s, so for it the losses are listed known
// differences, while this shim is held to every event.
//
// Wall time is mostly the outages themselves. The 5 s outage runs on
// every daemon (each CI lane, 10-40 s); the 30 s and 2 min ones only on
// 2.4.2 (2 of the 6 lanes, 3-4 min each, measured): the shim's side of an
// outage (keeping, retrying, redialing the same ttrpc events service) is
// the same on every daemon, and what differs per daemon (how it finds the
// shims again after a SIGKILL) the 5 s outage covers. All outages run in
// one sequence on one daemon and one pod, whose containers are all
// created first, so the later groups also live through the earlier
// outages and a lane pays one daemon start. About 8 min of CI time in
// all, for a run that must stay well under 45.
func TestEventsAcrossContainerdOutage(t *testing.T) {
	requireRoot(t)
	v := defaultDaemonVersion(t)
	outages := []time.Duration{5 * time.Second}
	if v.name == "2.4.2" {
		outages = append(outages, 30*time.Second, 2*time.Minute)
	}
	// A containerd of its own: the test kills it and moves its events
	// socket, which no other test should see.
	e := newPrivateEnv(t, v, 15*time.Minute)
	o := &outageRig{e: e, shimEvents: e.d.ttrpcAddress}
	t.Cleanup(func() { o.ensureUp(t) })

	groups := make([][]*exiter, len(outages))
	for i := range outages {
		for j := range 2 {
			x := &exiter{code: uint32(7 + 2*i + j)}
			// sh runs the trap once `wait` is interrupted by the TERM the
			// test sends from the host during the outage.
			x.r = e.run(ctrSpec{id: fmt.Sprintf("outage%d-%d", i, j), pod: "outagepod", args: []string{"sh", "-c",
				fmt.Sprintf(`trap "exit %d" TERM; echo ready; sleep 1000 & wait`, x.code)}})
			x.r.waitOutput(t, "ready\n", time.Minute)
			x.pid = int(x.r.task.Pid())
			groups[i] = append(groups[i], x)
		}
	}
	for i, outage := range outages {
		t.Run(outage.String(), func(t *testing.T) { o.run(t, outage, groups[i]) })
	}
}

// exiter is a container that exits with code when the test sends it
// SIGTERM.
type exiter struct {
	r        *running
	code     uint32
	pid      int
	exitedAt time.Time // when its init was reaped, during the outage
}

// outageRig kills and restarts one private containerd. The shims keep the
// events address they were started with (shimEvents); each restart puts
// containerd's events socket at a new path, and shimEvents becomes a
// symlink to it only once the test is subscribed. containerd's event
// stream keeps no history, and a subscription is registered
// asynchronously: without this, a shim could deliver its kept events in
// the moment between containerd serving again and the test's
// subscription, and the test would fail for nothing. From the shims' side
// the outage simply lasts until the symlink appears.
type outageRig struct {
	e          *env
	shimEvents string // TTRPC_ADDRESS of the shims
	restarts   int
}

// run is one outage: kill containerd, let the group exit, wait out the
// outage, start containerd again, then check events and exit codes.
func (o *outageRig) run(t *testing.T, outage time.Duration, group []*exiter) {
	o.ensureUp(t)
	e := o.e.sub(t)
	down := time.Now()
	if err := e.d.kill(); err != nil {
		t.Fatalf("SIGKILL containerd: %v", err)
	}
	for _, x := range group {
		if err := syscall.Kill(x.pid, syscall.SIGTERM); err != nil {
			t.Fatalf("%s: SIGTERM to init %d: %v", x.r.id, x.pid, err)
		}
		// Reaped means the shim has the exit; its TaskExit cannot reach
		// containerd now.
		if !pollUntil(30*time.Second, func() bool { return gone(x.pid) }) {
			t.Fatalf("%s: init %d not reaped within 30s of SIGTERM", x.r.id, x.pid)
		}
		x.exitedAt = time.Now()
	}
	// The outage itself, which is what is tested; nothing to poll for.
	time.Sleep(time.Until(down.Add(outage)))

	l := o.restart(t)
	back := time.Now()
	t.Logf("containerd %s back after %v; the exits were %v old", e.d.version.name,
		back.Sub(down).Round(time.Millisecond), back.Sub(group[0].exitedAt).Round(time.Millisecond))

	exitOf := func(id string) *taskEvent {
		for _, ev := range l.of(id, "") {
			if ev.topic == "/tasks/exit" {
				return &ev
			}
		}
		return nil
	}
	pollUntil(outageEventWait, func() bool {
		for _, x := range group {
			if exitOf(x.r.id) == nil {
				return false
			}
		}
		return true
	})
	for _, x := range group {
		ev := exitOf(x.r.id)
		switch {
		case ev == nil && !isSandboxRuntime() &&
			// Beyond its retry window as expected; within it too with
			// containerd 2.2's runc shim (seen here every time with the
			// 5 s outage).
			knownDifference(t, e.d.version.name, "taskexit-dropped-in-outage", "the runc shim dropped the TaskExit of %s (exited %v before containerd's events endpoint came back; it retries for about %v)",
				x.r.id, back.Sub(x.exitedAt).Round(time.Millisecond), upstreamRetryWindow):
		case ev == nil:
			t.Errorf("%s: no TaskExit on containerd's event stream within %v of it coming back (exited %v before)",
				x.r.id, outageEventWait, back.Sub(x.exitedAt).Round(time.Millisecond))
		case ev.pid != uint32(x.pid) || ev.exitStatus != x.code:
			t.Errorf("%s: TaskExit pid %d status %d, want pid %d status %d", x.r.id, ev.pid, ev.exitStatus, x.pid, x.code)
		}
	}
	if isSandboxRuntime() {
		var got, want []string
		l.mu.Lock()
		for _, ev := range l.events {
			if ev.topic == "/tasks/exit" {
				got = append(got, ev.containerID)
			}
		}
		l.mu.Unlock()
		for _, x := range group {
			want = append(want, x.r.id)
		}
		if !slices.Equal(got, want) {
			t.Errorf("TaskExits on containerd's event stream: got %v, want %v (each once, in the order of the exits)", got, want)
		}
	}

	// One wait for the whole group's TaskDeletes, where containerd
	// deleted the tasks itself.
	deadline := time.Now().Add(outageEventWait)
	for _, x := range group {
		o.checkExitCode(t, x, l, deadline)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		t.Errorf("event stream: %v", err)
	}
}

// restart starts containerd again with its events socket at a new path,
// subscribes, and only then lets the shims reach that socket.
func (o *outageRig) restart(t *testing.T) *eventLog {
	t.Helper()
	e := o.e.sub(t)
	o.restarts++
	at := filepath.Join(e.d.dir, fmt.Sprintf("events-%d.sock", o.restarts))
	if err := e.d.relaunchWithEvents(at); err != nil {
		t.Fatalf("start containerd %s again: %v\n%s", e.d.version.name, err, e.d.logTail(0, 16<<10))
	}
	l := subscribeConfirmed(t, e)
	if err := relink(o.shimEvents, at); err != nil {
		t.Fatalf("point the shims' events address at %s: %v", at, err)
	}
	return l
}

// ensureUp starts containerd again if a failed outage left it down.
func (o *outageRig) ensureUp(t *testing.T) {
	select {
	case <-o.e.d.exited:
		o.restart(t)
	default:
	}
}

// checkExitCode: the exit code reaches the client after the outage. Wait
// and Delete return it; or, where containerd deleted the task itself when
// it came back, the TaskDelete the shim published for that delete carries
// it. containerd 2.4.2 does that to a task whose processes have all
// exited: Pids is empty, so it takes the shim for one whose task was
// never created ("cleaning leaked shim process", containerd issue 6860),
// and deletes it; the runc shim's tasks the same.
func (o *outageRig) checkExitCode(t *testing.T, x *exiter, l *eventLog, deadline time.Time) {
	t.Helper()
	ctx, cancel := contextWithTimeout(o.e, time.Minute)
	defer cancel()
	defer func() {
		if err := x.r.container.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			t.Errorf("%s: delete container: %v", x.r.id, err)
		}
	}()
	exitC, err := x.r.task.Wait(ctx)
	if err != nil {
		t.Errorf("%s: wait after the outage: %v", x.r.id, err)
		return
	}
	var code uint32
	select {
	case st := <-exitC:
		code, _, err = st.Result()
	case <-ctx.Done():
		t.Errorf("%s: Wait after the outage did not return: %v", x.r.id, ctx.Err())
		return
	}
	if errdefs.IsNotFound(errgrpc.ToNative(err)) {
		var del *taskEvent
		pollUntil(time.Until(deadline), func() bool {
			for _, ev := range l.of(x.r.id, "") {
				if ev.topic == "/tasks/delete" {
					del = &ev
					return true
				}
			}
			return false
		})
		switch {
		case del == nil && !isSandboxRuntime() &&
			knownDifference(t, o.e.d.version.name, "taskdelete-lost-after-outage", "containerd %s deleted %s when it came back (Wait: %v) and the runc shim's TaskDelete did not reach the event stream: the exit code reached no client",
				o.e.d.version.name, x.r.id, err):
		case del == nil:
			t.Errorf("%s: containerd %s deleted the task when it came back (Wait: %v), and no TaskDelete reached the event stream within %v",
				x.r.id, o.e.d.version.name, err, outageEventWait)
		case del.exitStatus != x.code:
			t.Errorf("%s: TaskDelete status %d, want %d", x.r.id, del.exitStatus, x.code)
		default:
			t.Logf("%s: containerd %s deleted the task itself when it came back (Wait: %v); its exit code reached the client in TaskDelete",
				x.r.id, o.e.d.version.name, err)
		}
		// This shim kept both, in the order it decided them.
		if got, want := topics(l.of(x.r.id, "")), []string{"/tasks/exit", "/tasks/delete"}; isSandboxRuntime() && !slices.Equal(got, want) {
			t.Errorf("%s: events after the outage %v, want %v", x.r.id, got, want)
		}
		return
	}
	if err != nil || code != x.code {
		t.Errorf("%s: Wait after the outage: code %d (%v), want %d", x.r.id, code, err, x.code)
	}
	st, err := x.r.task.Delete(ctx)
	if err != nil {
		t.Errorf("%s: delete after the outage: %v", x.r.id, err)
		return
	}
	if st.ExitCode() != x.code {
		t.Errorf("%s: Delete after the outage: code %d, want %d", x.r.id, st.ExitCode(), x.code)
	}
}

// probeTopic is published by subscribeConfirmed; no shim uses it.
const probeTopic = "/shimtest/probe"

// subscribeConfirmed subscribes to e's task events and returns once
// containerd is known to deliver to the subscription: it registers a
// subscriber asynchronously, so the test publishes a probe event until
// the subscription has seen one.
func subscribeConfirmed(t *testing.T, e *env) *eventLog {
	t.Helper()
	l := subscribeFiltered(t, e,
		fmt.Sprintf(`namespace==%q,topic~="^/tasks/"`, e.ns),
		fmt.Sprintf(`namespace==%q,topic==%q`, e.ns, probeTopic))
	seen := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, ev := range l.events {
			if ev.topic == probeTopic {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(30 * time.Second)
	for !seen() {
		if time.Now().After(deadline) {
			t.Fatalf("subscription saw no probe event within 30s")
		}
		if err := e.c.EventService().Publish(e.ctx, probeTopic, &apievents.TaskOOM{ContainerID: "probe"}); err != nil {
			t.Fatalf("publish probe event: %v", err)
		}
		pollUntil(200*time.Millisecond, seen)
	}
	return l
}

// relink makes path a symlink to target, atomically: a process dialing
// path reaches target from this moment on, never earlier.
func relink(path, target string) error {
	tmp := path + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// gone reports whether pid no longer exists: it exited and was reaped.
func gone(pid int) bool {
	_, err := readProc(pid)
	return err != nil
}

// newPrivateEnv is newEnv on a containerd of the test's own, for a test
// that kills or reconfigures it. The daemon is torn down after the test;
// whatever its teardown had to clean up fails the test.
func newPrivateEnv(t *testing.T, v daemonVersion, timeout time.Duration) *env {
	t.Helper()
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	d, err := startDaemon(v, shimUnderTest(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range d.teardown() {
			t.Errorf("LEAK: %s", p)
		}
	})
	return newEnvOn(t, d, timeout)
}

// kill SIGKILLs containerd, as a crash or the OOM killer ends it: no
// shutdown, its sockets left behind.
func (d *daemon) kill() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return errors.New("containerd not started")
	}
	if err := d.cmd.Process.Kill(); err != nil {
		return err
	}
	<-d.exited
	return nil
}

// relaunchWithEvents starts containerd again on the same root, state and
// gRPC socket, with its ttrpc (events) socket at path.
func (d *daemon) relaunchWithEvents(path string) error {
	d.ttrpcAddress = path
	cfg, err := daemonConfig(d.version.configVersion, d.daemonPaths)
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.configPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	return d.launch()
}
