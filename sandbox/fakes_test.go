package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// published is one event as the publisher got it.
type published struct {
	topic string
	event proto.Message
}

// fakePublisher records events in the order they arrive. fail makes the
// next calls fail as an unreachable containerd does; rejectTopic makes
// every call for that topic fail as containerd refusing the event does;
// block, when set, holds every call until it is closed or ctx is done.
type fakePublisher struct {
	mu          sync.Mutex
	events      []published
	attempts    int
	fail        int
	rejectTopic string
	block       chan struct{}
}

func (p *fakePublisher) Publish(ctx context.Context, topic string, event proto.Message) error {
	p.mu.Lock()
	p.attempts++
	block := p.block
	if p.fail > 0 {
		p.fail--
		p.mu.Unlock()
		return errors.New("fake publisher: containerd unreachable")
	}
	if topic == p.rejectTopic {
		p.mu.Unlock()
		return fmt.Errorf("fake publisher: %w", ErrEventRejected)
	}
	p.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, published{topic: topic, event: event})
	return nil
}

func (p *fakePublisher) all() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.events...)
}

// topicsOf returns the topics published for container id, in order.
func (p *fakePublisher) topicsOf(id string) []string {
	var out []string
	for _, e := range p.all() {
		if eventContainer(e.event) == id {
			out = append(out, e.topic)
		}
	}
	return out
}

func eventContainer(m proto.Message) string {
	switch e := m.(type) {
	case *eventstypes.TaskCreate:
		return e.ContainerID
	case *eventstypes.TaskStart:
		return e.ContainerID
	case *eventstypes.TaskExit:
		return e.ContainerID
	case *eventstypes.TaskDelete:
		return e.ContainerID
	}
	return ""
}

// pod is a Manager over fake engines (one per bundle) and a fake
// publisher, with no reaper: tests deliver exits with handleExit.
type pod struct {
	m   *Manager
	pub *fakePublisher

	mu      sync.Mutex
	engines map[string]*fakeruntime.Runtime // by bundle; guarded by mu
}

func newPod(t *testing.T) *pod {
	t.Helper()
	p := &pod{pub: &fakePublisher{}, engines: map[string]*fakeruntime.Runtime{}}
	p.m = NewManager(context.Background(), Config{
		Namespace: "testns",
		Publisher: p.pub,
		NewEngine: func(_ ociruntime.Options, bundle string) ociruntime.Runtime {
			p.mu.Lock()
			defer p.mu.Unlock()
			e, ok := p.engines[bundle]
			if !ok {
				e = &fakeruntime.Runtime{}
				p.engines[bundle] = e
			}
			return e
		},
	})
	t.Cleanup(func() { p.close(t) })
	return p
}

var closedPods sync.Map

// close flushes events and stops the Manager; safe to call twice.
func (p *pod) close(t *testing.T) {
	t.Helper()
	if _, done := closedPods.LoadOrStore(p, true); done {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.m.Close(ctx); err != nil {
		t.Errorf("Manager.Close: %v", err)
	}
}

// engineFor returns the fake engine used for bundle, creating it.
func (p *pod) engineFor(bundle string) *fakeruntime.Runtime {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.engines[bundle]
	if !ok {
		e = &fakeruntime.Runtime{}
		p.engines[bundle] = e
	}
	return e
}

// newBundle makes a bundle directory with a minimal config.json.
func newBundle(t *testing.T, annotations map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeConfig(t, dir, annotations)
	return dir
}

func writeConfig(t *testing.T, dir string, annotations map[string]string) {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{
		"ociVersion":  "1.0.2",
		"root":        map[string]string{"path": "rootfs"},
		"annotations": annotations,
		// A PID namespace of its own, as CRI and ctr give a container.
		"linux": map[string]any{"namespaces": []map[string]string{{"type": "pid"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}

// createContainer creates id in a new bundle whose fake runtime reports a
// live child's pid, and returns the pid and the engine.
func (p *pod) createContainer(t *testing.T, id string) (int, *fakeruntime.Runtime) {
	t.Helper()
	bundle := newBundle(t, nil)
	child := testutil.StartSleeper(t)
	e := p.engineFor(bundle)
	e.OnCreate = fakeruntime.WritePid(child.Process.Pid)
	pid, err := p.m.Create(context.Background(), CreateRequest{ID: id, Bundle: bundle})
	if err != nil {
		t.Fatalf("Create %s: %v", id, err)
	}
	if pid != child.Process.Pid {
		t.Fatalf("Create %s pid: got %d, want %d", id, pid, child.Process.Pid)
	}
	return pid, e
}
