package service

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// cgroupForkEngine is a forkEngine whose containers' cgroups are the fake
// tree at paths.
type cgroupForkEngine struct {
	*forkEngine
	paths map[string]string
}

func (e *cgroupForkEngine) CgroupPaths(string, int) (map[string]string, error) { return e.paths, nil }

// newStatsTask is newTestTask over a cgroupForkEngine.
func newStatsTask(t *testing.T, paths map[string]string) *Task {
	t.Helper()
	fork := &forkEngine{args: []string{"/bin/busybox", "sleep", "60"}}
	eng := &cgroupForkEngine{forkEngine: fork, paths: paths}
	m := sandbox.NewManager(context.Background(), sandbox.Config{
		Namespace: "testns",
		Publisher: nopPublisher{},
		Reaper:    reaper.NewReaper(),
		NewEngine: func(ociruntime.Options, string) ociruntime.Runtime { return eng },
	})
	t.Cleanup(func() {
		fork.cleanup()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Close(ctx); err != nil {
			t.Errorf("Manager.Close: %v", err)
		}
	})
	return NewTask(m, ociruntime.Options{})
}

// v1Cgroup writes a fake v1 memory and pids cgroup and returns runc's
// cgroup_paths for it.
func v1Cgroup(t *testing.T, usage string) map[string]string {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"memory/c/memory.usage_in_bytes": usage,
		"pids/c/pids.current":            "2\n",
		"pids/c/pids.max":                "max\n",
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]string{"memory": root + "/memory/c", "pids": root + "/pids/c", "": root + "/unified/c"}
}

// TestTaskStats: the Any is what containerd's typeurl decodes, under the
// name containerd-shim-runc-v2 gives it.
func TestTaskStats(t *testing.T) {
	ctx := context.Background()
	tk := newStatsTask(t, v1Cgroup(t, "12345\n"))
	if _, err := tk.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: newBundle(t)}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	for _, step := range []string{"created", "running"} {
		if step == "running" {
			if _, err := tk.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err != nil {
				t.Fatalf("Start: %v", err)
			}
		}
		resp, err := tk.methods()["Stats"](ctx, unmarshalFrom(&taskapi.StatsRequest{ID: "c1"}))
		if err != nil {
			t.Fatalf("Stats %s: %v", step, err)
		}
		a := resp.(*taskapi.StatsResponse).GetStats()
		if got, want := a.GetTypeUrl(), "io.containerd.cgroups.v1.Metrics"; got != want {
			t.Errorf("Stats %s: type URL got %q, want %q", step, got, want)
		}
		v, err := typeurl.UnmarshalAny(a)
		if err != nil {
			t.Fatalf("Stats %s: typeurl.UnmarshalAny: %v", step, err)
		}
		want := &v1.Metrics{
			CPU:              &v1.CPUStat{Usage: &v1.CPUUsage{}, Throttling: &v1.Throttle{}},
			Memory:           &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 12345}, Swap: &v1.MemoryEntry{}, Kernel: &v1.MemoryEntry{}, KernelTCP: &v1.MemoryEntry{}},
			MemoryOomControl: &v1.MemoryOomControl{},
			Pids:             &v1.PidsStat{Current: 2},
		}
		if m, ok := v.(proto.Message); !ok || !proto.Equal(m, want) {
			t.Errorf("Stats %s: got %T %v, want %v", step, v, v, want)
		}
	}
}

// TestTaskStatsErrors: the class of each way Stats can fail, as the
// client sees it.
func TestTaskStatsErrors(t *testing.T) {
	ctx := context.Background()
	stats := func(tk *Task, id string) codes.Code {
		_, err := tk.methods()["Stats"](ctx, unmarshalFrom(&taskapi.StatsRequest{ID: id}))
		return status.Code(err)
	}
	create := func(t *testing.T, tk *Task) {
		t.Helper()
		if _, err := tk.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: newBundle(t)}); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	t.Run("stopped and deleted", func(t *testing.T) {
		tk := newStatsTask(t, v1Cgroup(t, "1\n"))
		create(t, tk)
		if _, err := tk.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9}); err != nil {
			t.Fatalf("Kill: %v", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := tk.Wait(wctx, &taskapi.WaitRequest{ID: "c1"}); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		// Its cgroups are there until the delete, and containerd 2.x's
		// CRI reads the OOM counter from them at exit: answered, as the
		// runc shim answers it.
		if got := stats(tk, "c1"); got != codes.OK {
			t.Errorf("Stats of a stopped container: got %v, want OK", got)
		}
		if _, err := tk.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if got := stats(tk, "c1"); got != codes.NotFound {
			t.Errorf("Stats of a deleted container: got %v, want NotFound", got)
		}
	})
	tests := []struct {
		name  string
		paths func(*testing.T) map[string]string
		want  codes.Code
	}{
		{"cgroup removed", func(t *testing.T) map[string]string {
			return map[string]string{"memory": filepath.Join(t.TempDir(), "gone")}
		}, codes.NotFound},
		{"no cgroup", func(*testing.T) map[string]string { return map[string]string{} }, codes.NotFound},
		{"garbage in a cgroup file", func(t *testing.T) map[string]string { return v1Cgroup(t, "lots\n") }, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := newStatsTask(t, tt.paths(t))
			create(t, tk)
			if got := stats(tk, "c1"); got != tt.want {
				t.Errorf("Stats: got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("runtime that knows no cgroups", func(t *testing.T) {
		tk, _ := newTestTask(t)
		create(t, tk)
		if got := stats(tk, "c1"); got != codes.NotFound {
			t.Errorf("Stats: got %v, want NotFound", got)
		}
	})
}
