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
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"google.golang.org/protobuf/proto"
)

// fakeEngine is the OCI runtime below ociruntime.Runtime: it records calls
// and runs the hook set for a verb.
type fakeEngine struct {
	mu    sync.Mutex
	calls []string

	create func(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	start  func(ctx context.Context, id string, pidfd int) error
	exec   func(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	kill   func(ctx context.Context, id string, sig int, all bool) error
	delete func(ctx context.Context, id string, stopped bool) error
	ps     func(ctx context.Context, id string) ([]int, error)
	update func(ctx context.Context, id string, resources *specs.LinuxResources) error
	pause  func(ctx context.Context, id string) error
	resume func(ctx context.Context, id string) error
}

var _ ociruntime.Runtime = (*fakeEngine)(nil)

func (e *fakeEngine) record(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, fmt.Sprintf(format, args...))
}

func (e *fakeEngine) Calls() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.calls...)
}

func (e *fakeEngine) Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
	e.record("create %s", id)
	if e.create != nil {
		return e.create(ctx, id, bundle, opts)
	}
	return errors.New("fake engine: no create hook")
}

func (e *fakeEngine) Update(ctx context.Context, id string, resources *specs.LinuxResources) error {
	e.record("update %s", id)
	if e.update != nil {
		return e.update(ctx, id, resources)
	}
	return nil
}

func (e *fakeEngine) Pause(ctx context.Context, id string) error {
	e.record("pause %s", id)
	if e.pause != nil {
		return e.pause(ctx, id)
	}
	return nil
}

func (e *fakeEngine) Resume(ctx context.Context, id string) error {
	e.record("resume %s", id)
	if e.resume != nil {
		return e.resume(ctx, id)
	}
	return nil
}

func (e *fakeEngine) Start(ctx context.Context, id string, pidfd int) error {
	e.record("start %s", id)
	if e.start != nil {
		return e.start(ctx, id, pidfd)
	}
	return nil
}

func (e *fakeEngine) Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error {
	e.record("exec %s", id)
	if e.exec != nil {
		return e.exec(ctx, id, spec, opts)
	}
	return nil
}

func (e *fakeEngine) Kill(ctx context.Context, id string, sig int, all bool) error {
	e.record("kill %s %d all=%v", id, sig, all)
	if e.kill != nil {
		return e.kill(ctx, id, sig, all)
	}
	return nil
}

func (e *fakeEngine) Delete(ctx context.Context, id string, stopped bool) error {
	e.record("delete %s stopped=%v", id, stopped)
	if e.delete != nil {
		return e.delete(ctx, id, stopped)
	}
	return nil
}

// CgroupPaths answers that the fake keeps no cgroups.
func (e *fakeEngine) CgroupPaths(id string, _ int) (map[string]string, error) {
	return nil, fmt.Errorf("fake engine: no cgroups for %s: %w", id, errdefs.ErrNotFound)
}

func (e *fakeEngine) Ps(ctx context.Context, id string) ([]int, error) {
	e.record("ps %s", id)
	if e.ps != nil {
		return e.ps(ctx, id)
	}
	return nil, nil
}

// writePid is a create hook that writes pid to the pid file, as
// `runc create --pid-file` does.
func writePid(pid int) func(context.Context, string, string, *runc.CreateOpts) error {
	return func(_ context.Context, _, _ string, opts *runc.CreateOpts) error {
		return os.WriteFile(opts.PidFile, []byte(fmt.Sprint(pid)), 0o600)
	}
}

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
	engines map[string]*fakeEngine // by bundle; guarded by mu
}

func newPod(t *testing.T) *pod {
	t.Helper()
	p := &pod{pub: &fakePublisher{}, engines: map[string]*fakeEngine{}}
	p.m = NewManager(context.Background(), Config{
		Namespace: "testns",
		Publisher: p.pub,
		NewEngine: func(_ ociruntime.Options, bundle string) ociruntime.Runtime {
			p.mu.Lock()
			defer p.mu.Unlock()
			e, ok := p.engines[bundle]
			if !ok {
				e = &fakeEngine{}
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
func (p *pod) engineFor(bundle string) *fakeEngine {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.engines[bundle]
	if !ok {
		e = &fakeEngine{}
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
func (p *pod) createContainer(t *testing.T, id string) (int, *fakeEngine) {
	t.Helper()
	bundle := newBundle(t, nil)
	child := testutil.StartSleeper(t)
	e := p.engineFor(bundle)
	e.create = writePid(child.Process.Pid)
	pid, err := p.m.Create(context.Background(), CreateRequest{ID: id, Bundle: bundle})
	if err != nil {
		t.Fatalf("Create %s: %v", id, err)
	}
	if pid != child.Process.Pid {
		t.Fatalf("Create %s pid: got %d, want %d", id, pid, child.Process.Pid)
	}
	return pid, e
}
