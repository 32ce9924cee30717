package sandbox

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// TestPauseResume: pause and resume reach the runtime, move the state,
// publish TaskPaused and TaskResumed in order after TaskStart, refuse a
// paused container's delete and exec, and a failed pause leaves it
// running with no event.
func TestPauseResume(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle, _ := runningContainer(t, p)
	eng := p.engineFor(bundle)

	if err := p.m.Pause(ctx, "c1"); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if st, _ := p.m.State(ctx, "c1"); st.State != process.Paused {
		t.Errorf("state after pause = %s, want paused", st.State)
	}
	if _, err := p.m.Delete(ctx, "c1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Delete paused = %v, want FailedPrecondition", err)
	}
	err := p.m.Exec(ctx, ExecRequest{ContainerID: "c1", ExecID: "e1", Spec: trueSpec})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Exec in a paused container = %v, want FailedPrecondition", err)
	}
	if err := p.m.Pause(ctx, "c1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Pause twice = %v, want FailedPrecondition", err)
	}
	if err := p.m.Resume(ctx, "c1"); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st, _ := p.m.State(ctx, "c1"); st.State != process.Running {
		t.Errorf("state after resume = %s, want running", st.State)
	}
	if err := p.m.Resume(ctx, "c1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Resume running = %v, want FailedPrecondition", err)
	}

	eng.OnPause = func(context.Context, string) error { return errors.New("freezer: device or resource busy") }
	if err := p.m.Pause(ctx, "c1"); err == nil {
		t.Error("Pause with a failing runtime = nil, want an error")
	}
	if st, _ := p.m.State(ctx, "c1"); st.State != process.Running {
		t.Errorf("state after a failed pause = %s, want running", st.State)
	}
	if err := p.m.Pause(ctx, "nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Pause unknown = %v, want NotFound", err)
	}

	want := []string{TopicTaskCreate, TopicTaskStart, TopicTaskPaused, TopicTaskResumed}
	testutil.WaitFor(t, 5*time.Second, "the pause events", func() bool { return len(pauseTopics(p)) >= len(want) })
	if got := pauseTopics(p); !slices.Equal(got, want) {
		t.Errorf("events of c1 = %q, want %q", got, want)
	}
	if calls := eng.Calls(); !slices.Contains(calls, "pause c1") || !slices.Contains(calls, "resume c1") {
		t.Errorf("runtime calls %q lack pause and resume", calls)
	}
}

func pauseTopics(p *pod) []string {
	var out []string
	for _, e := range p.pub.all() {
		switch ev := e.event.(type) {
		case *eventstypes.TaskCreate, *eventstypes.TaskStart:
			out = append(out, e.topic)
		case *eventstypes.TaskPaused:
			if ev.ContainerID == "c1" {
				out = append(out, e.topic)
			}
		case *eventstypes.TaskResumed:
			if ev.ContainerID == "c1" {
				out = append(out, e.topic)
			}
		}
	}
	return out
}
