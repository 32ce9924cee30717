package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
)

// cgroupEngine is a fakeruntime.Runtime whose paths answers
// CgroupPaths, which it counts.
type cgroupEngine struct {
	*fakeruntime.Runtime
	paths func(id string, pid int) (map[string]string, error)

	mu    sync.Mutex
	asked int
}

func (e *cgroupEngine) CgroupPaths(id string, pid int) (map[string]string, error) {
	e.mu.Lock()
	e.asked++
	e.mu.Unlock()
	return e.paths(id, pid)
}

// v2Cgroup makes a fake v2 cgroup directory with a memory usage and two
// pids, and returns runc's cgroup_paths for it.
func v2Cgroup(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{"memory.stat": "anon 4096\n", "memory.current": "4096\n", "pids.current": "2\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{"": dir}
}

func setState(p *Init, st State) {
	p.mu.Lock()
	p.state = st
	p.mu.Unlock()
}

// TestInitStatsStates: every state of the container, with the class of
// error each one gives.
func TestInitStatsStates(t *testing.T) {
	tests := []struct {
		state   State
		wantErr error
	}{
		{Created, nil},
		{Starting, nil},
		{Running, nil},
		{Pausing, nil},
		{Paused, nil},
		{Resuming, nil},
		{Stopped, errdefs.ErrNotFound},
		{Deleting, errdefs.ErrNotFound},
		{Deleted, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			paths := v2Cgroup(t)
			eng := &cgroupEngine{Runtime: &fakeruntime.Runtime{}, paths: func(string, int) (map[string]string, error) { return paths, nil }}
			p, _ := createdInit(t, eng.Runtime)
			p.runtime = eng
			setState(p, tt.state)
			m, err := p.Stats(context.Background())
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.state.String()) {
					t.Fatalf("Stats: got %v, want %v naming %s", err, tt.wantErr, tt.state)
				}
				return
			}
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			s, ok := m.(*v2.Metrics)
			if !ok || s.GetMemory().GetUsage() != 4096 || s.GetPids().GetCurrent() != 2 {
				t.Errorf("Stats: got %T %v, want v2 metrics with usage 4096 and 2 pids", m, m)
			}
		})
	}
}

func TestInitStatsErrors(t *testing.T) {
	tests := []struct {
		name    string
		paths   func(*testing.T) func(string, int) (map[string]string, error)
		wantErr error
	}{
		{
			name: "engine fails",
			paths: func(*testing.T) func(string, int) (map[string]string, error) {
				return func(string, int) (map[string]string, error) { return nil, errors.New("state.json: bad") }
			},
		},
		{
			name: "no cgroups recorded",
			paths: func(*testing.T) func(string, int) (map[string]string, error) {
				return func(string, int) (map[string]string, error) { return map[string]string{}, nil }
			},
			wantErr: errdefs.ErrNotFound,
		},
		{
			name: "cgroup removed",
			paths: func(t *testing.T) func(string, int) (map[string]string, error) {
				gone := map[string]string{"memory": filepath.Join(t.TempDir(), "gone")}
				return func(string, int) (map[string]string, error) { return gone, nil }
			},
			wantErr: errdefs.ErrNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &cgroupEngine{Runtime: &fakeruntime.Runtime{}, paths: tt.paths(t)}
			p, _ := createdInit(t, eng.Runtime)
			p.runtime = eng
			_, err := p.Stats(context.Background())
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), `"c1"`) {
				t.Errorf("Stats: got %v, want an error naming c1 (class %v)", err, tt.wantErr)
			}
		})
	}
	t.Run("init died while the paths were read", func(t *testing.T) {
		eng := &cgroupEngine{Runtime: &fakeruntime.Runtime{}}
		p, child := createdInit(t, eng.Runtime)
		eng.paths = func(string, int) (map[string]string, error) {
			_ = child.Process.Kill()
			_ = child.Wait() // reaped: the pid is free for reuse
			return v2Cgroup(t), nil
		}
		p.runtime = eng
		if _, err := p.Stats(context.Background()); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Stats: got %v, want NotFound", err)
		}
	})
}

// TestInitStatsAsksOnce: the cgroups of a container do not move, so the
// engine (a state.json parse) is asked once, not on every scrape.
func TestInitStatsAsksOnce(t *testing.T) {
	paths := v2Cgroup(t)
	eng := &cgroupEngine{Runtime: &fakeruntime.Runtime{}, paths: func(string, int) (map[string]string, error) { return paths, nil }}
	p, _ := createdInit(t, eng.Runtime)
	p.runtime = eng
	for i := 0; i < 3; i++ {
		if _, err := p.Stats(context.Background()); err != nil {
			t.Fatalf("Stats %d: %v", i, err)
		}
	}
	if eng.asked != 1 {
		t.Errorf("CgroupPaths calls: got %d, want 1", eng.asked)
	}
}

// TestInitStatsV1: a v1 record gives v1 metrics.
func TestInitStatsV1(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "memory.usage_in_bytes"), []byte("8192\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eng := &cgroupEngine{Runtime: &fakeruntime.Runtime{}, paths: func(string, int) (map[string]string, error) {
		return map[string]string{"memory": dir}, nil
	}}
	p, _ := createdInit(t, eng.Runtime)
	p.runtime = eng
	m, err := p.Stats(context.Background())
	if s, ok := m.(*v1.Metrics); err != nil || !ok || s.GetMemory().GetUsage().GetUsage() != 8192 {
		t.Errorf("Stats: got %T %v, %v; want v1 metrics with usage 8192", m, m, err)
	}
}
