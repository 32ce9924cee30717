package tests

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
)

// eventLog records the task events of one namespace, in arrival order.
type eventLog struct {
	mu     sync.Mutex
	events []taskEvent // guarded by mu
	errs   []error     // guarded by mu
}

// taskEvent is one decoded /tasks/* event.
type taskEvent struct {
	topic       string
	containerID string
	execID      string // exec events and TaskExit of an exec
	pid         uint32
	exitStatus  uint32
}

// subscribe records /tasks/* events of e's namespace until the test ends.
// Events published before it returns are not seen.
func subscribe(t *testing.T, e *env) *eventLog {
	t.Helper()
	return subscribeFiltered(t, e, fmt.Sprintf(`namespace==%q,topic~="^/tasks/"`, e.ns))
}

// subscribeFiltered records the events that match any of filters until
// the test ends.
func subscribeFiltered(t *testing.T, e *env, filters ...string) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	l := &eventLog{}
	evC, errC := e.c.Subscribe(ctx, filters...)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case env := <-evC:
				v, err := typeurl.UnmarshalAny(env.Event)
				l.mu.Lock()
				if err != nil {
					l.errs = append(l.errs, fmt.Errorf("decode %s: %w", env.Topic, err))
				} else {
					l.events = append(l.events, decodeTaskEvent(env.Topic, v))
				}
				l.mu.Unlock()
			case err := <-errC:
				if err != nil && ctx.Err() == nil {
					l.mu.Lock()
					l.errs = append(l.errs, err)
					l.mu.Unlock()
				}
				return
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return l
}

func decodeTaskEvent(topic string, v any) taskEvent {
	ev := taskEvent{topic: topic}
	switch e := v.(type) {
	case *apievents.TaskCreate:
		ev.containerID, ev.pid = e.ContainerID, e.Pid
	case *apievents.TaskStart:
		ev.containerID, ev.pid = e.ContainerID, e.Pid
	case *apievents.TaskExit:
		ev.containerID, ev.pid, ev.exitStatus = e.ContainerID, e.Pid, e.ExitStatus
		if e.ID != e.ContainerID {
			ev.execID = e.ID
		}
	case *apievents.TaskDelete:
		ev.containerID, ev.pid, ev.exitStatus = e.ContainerID, e.Pid, e.ExitStatus
		if e.ID != e.ContainerID {
			ev.execID = e.ID
		}
	case *apievents.TaskExecAdded:
		ev.containerID, ev.execID = e.ContainerID, e.ExecID
	case *apievents.TaskExecStarted:
		ev.containerID, ev.execID, ev.pid = e.ContainerID, e.ExecID, e.Pid
	case *apievents.TaskOOM:
		ev.containerID = e.ContainerID
	}
	return ev
}

// of returns the events of one process (execID "" for the init process).
func (l *eventLog) of(containerID, execID string) []taskEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []taskEvent
	for _, ev := range l.events {
		if ev.containerID == containerID && ev.execID == execID {
			out = append(out, ev)
		}
	}
	return out
}

// all returns every event recorded so far, in arrival order.
func (l *eventLog) all() []taskEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// exits returns the TaskExit events of container id (its init's and its
// execs'), in arrival order.
func (l *eventLog) exits(id string) []taskEvent {
	var out []taskEvent
	for _, ev := range l.all() {
		if ev.topic == "/tasks/exit" && ev.containerID == id {
			out = append(out, ev)
		}
	}
	return out
}

// streamErrors fails t for every error the event stream reported.
func (l *eventLog) streamErrors(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		t.Errorf("event stream: %v", err)
	}
}

func topics(evs []taskEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.topic
	}
	return out
}

// TestEventOrder: in a pod of containers that exit at once (`true` often
// exits before Start returns), each container's events arrive exactly
// once and in containerd's order: create, start, exit, delete. TaskExit
// before TaskStart, a lost or a doubled exit all fail. The exit carries
// the pid TaskStart reported and the right status.
func TestEventOrder(t *testing.T) {
	e := newDefaultEnv(t)
	l := subscribe(t, e)
	const n = 8
	var rs []*running
	for i := range n {
		code := i % 3 // exits 0, 1, 2
		rs = append(rs, e.create(ctrSpec{id: fmt.Sprintf("fast%d", i), pod: "eventpod",
			args: []string{"sh", "-c", fmt.Sprintf("exit %d", code)}}))
	}
	for _, r := range rs {
		r.start()
	}
	for i, r := range rs {
		if got, want := r.wait(time.Minute), uint32(i%3); got != want {
			t.Errorf("%s: exit code = %d, want %d", r.id, got, want)
		}
		r.delete()
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	for i, r := range rs {
		var evs []taskEvent
		if !pollUntil(20*time.Second, func() bool {
			evs = l.of(r.id, "")
			return len(evs) >= len(want)
		}) {
			// The upstream runc shim exits on the Shutdown that follows the
			// pod's last delete without flushing its event queue, so that
			// container's TaskDelete is sometimes lost (seen with 2.2). This
			// shim flushes before it exits and is held to the full list.
			if !isSandboxRuntime() && i == n-1 && slices.Equal(topics(evs), want[:3]) {
				t.Logf("%s: upstream runc shim lost the last TaskDelete (known upstream behaviour): %v", r.id, topics(evs))
				continue
			}
			t.Errorf("%s: events %v after 20s, want %v", r.id, topics(evs), want)
			continue
		}
		if got := topics(evs); !slices.Equal(got, want) {
			t.Errorf("%s: events %v, want %v", r.id, got, want)
			continue
		}
		start, exit := evs[1], evs[2]
		if exit.pid != start.pid || exit.exitStatus != uint32(i%3) {
			t.Errorf("%s: TaskExit pid %d status %d, want pid %d (TaskStart's) status %d", r.id, exit.pid, exit.exitStatus, start.pid, i%3)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		t.Errorf("event stream: %v", err)
	}
}

// TestExecEventOrder: exec processes that exit at once publish exec-added,
// exec-started, then exit, each once.
func TestExecEventOrder(t *testing.T) {
	e := newDefaultEnv(t)
	l := subscribe(t, e)
	r := e.run(ctrSpec{id: "host", pod: "execevents", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)
	// This shim publishes TaskDelete for an exec too (issue 4 asks for
	// added, started, exit, delete per exec); the runc shim does not.
	want := []string{"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/delete"}
	if !isSandboxRuntime() {
		want = want[:3]
	}
	for i := range 5 {
		id := fmt.Sprintf("fast-exec%d", i)
		x := r.exec(t, id, []string{"true"}, nil)
		if code := x.finish(t, e); code != 0 {
			t.Errorf("%s: exit code = %d, want 0", id, code)
		}
		var evs []taskEvent
		if !pollUntil(20*time.Second, func() bool {
			evs = l.of(r.id, id)
			return len(evs) >= len(want)
		}) {
			t.Errorf("%s: events %v after 20s, want %v", id, topics(evs), want)
			continue
		}
		if got := topics(evs); !slices.Equal(got, want) {
			t.Errorf("%s: events %v, want %v", id, got, want)
		}
	}
}
