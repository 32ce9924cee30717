package sandbox

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// realPod is a Manager whose exits come from a real reaper; each fake
// runtime create forks a real child of the test process.
type realPod struct {
	m   *Manager
	pub *fakePublisher

	mu   sync.Mutex
	args map[string][]string // by bundle: the child a create forks
	cmds []*exec.Cmd
}

func newRealPod(t *testing.T) *realPod {
	t.Helper()
	p := &realPod{pub: &fakePublisher{}, args: map[string][]string{}}
	p.m = NewManager(context.Background(), Config{
		Namespace: "testns",
		Publisher: p.pub,
		Reaper:    reaper.NewReaper(),
		NewEngine: func(_ ociruntime.Options, bundle string) ociruntime.Runtime {
			return &fakeruntime.Runtime{OnCreate: func(ctx context.Context, id, b string, opts *runc.CreateOpts) error {
				p.mu.Lock()
				args := p.args[bundle]
				p.mu.Unlock()
				cmd := exec.Command(args[0], args[1:]...)
				if err := cmd.Start(); err != nil {
					return err
				}
				p.mu.Lock()
				p.cmds = append(p.cmds, cmd)
				p.mu.Unlock()
				return fakeruntime.WritePid(cmd.Process.Pid)(ctx, id, b, opts)
			}}
		},
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.cmds {
			_ = c.Process.Kill()
			// The reaper reaped it; only the pidfd is left to release.
			_ = c.Process.Release()
		}
	})
	return p
}

func (p *realPod) bundle(t *testing.T, args ...string) string {
	b := newBundle(t, nil)
	p.mu.Lock()
	p.args[b] = args
	p.mu.Unlock()
	return b
}

// TestManagerRealReaperFastExits: processes that exit at once, maybe
// before their create has returned, are reported once with their status,
// after TaskCreate.
func TestManagerRealReaperFastExits(t *testing.T) {
	ctx := context.Background()
	p := newRealPod(t)
	const n = 20
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i)
		b := p.bundle(t, "/bin/sh", "-c", fmt.Sprintf("exit %d", i+1))
		if _, err := p.m.Create(ctx, CreateRequest{ID: id, Bundle: b}); err != nil {
			t.Fatalf("Create %s: %v", id, err)
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := p.m.Wait(wctx, id)
		cancel()
		if err != nil || st.ExitStatus != i+1 {
			t.Errorf("Wait %s: got (%d, %v), want (%d, nil)", id, st.ExitStatus, err, i+1)
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i)
		if _, err := p.m.Delete(ctx, id); err != nil {
			t.Errorf("Delete %s: %v", id, err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "all events", func() bool { return len(p.pub.all()) >= 3*n })
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i)
		if got, want := p.pub.topicsOf(id), []string{TopicTaskCreate, TopicTaskExit, TopicTaskDelete}; !slices.Equal(got, want) {
			t.Errorf("%s topics: got %q, want %q", id, got, want)
		}
	}
}

// TestManagerRealReaperKill: Kill reaches the process, the reaper brings
// its exit, TaskExit follows TaskStart.
func TestManagerRealReaperKill(t *testing.T) {
	ctx := context.Background()
	p := newRealPod(t)
	b := p.bundle(t, "/bin/busybox", "sleep", "60")
	if _, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: b}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := p.m.Kill(ctx, "c1", int(unix.SIGTERM), false); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := p.m.Wait(wctx, "c1")
	if err != nil || st.ExitStatus != 128+int(unix.SIGTERM) {
		t.Fatalf("Wait: got (%d, %v), want (%d, nil)", st.ExitStatus, err, 128+int(unix.SIGTERM))
	}
	if _, err := p.m.Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "all events", func() bool { return len(p.pub.all()) >= 4 })
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, lifecycleTopics) {
		t.Errorf("topics: got %q, want %q", got, lifecycleTopics)
	}
}
