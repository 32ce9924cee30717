package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// TestWatchOOMv2: on a (fake) unified cgroup, each rise of memory.events'
// oom_kill calls back once; other changes of the file do not; Close
// joins the goroutine. cgroup v2 cannot be booted on the test machine:
// this is its only test. v1's eventfd needs a real memory cgroup and is
// covered end to end (TestCRIOOMKilled).
func TestWatchOOMv2(t *testing.T) {
	dir := t.TempDir()
	events := filepath.Join(dir, "memory.events")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(events, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
	var kills atomic.Int32
	w, err := WatchOOM(map[string]string{"": dir}, func(uint64) { kills.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	waitKills := func(want int32) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("kills = %d", want), func() bool { return kills.Load() >= want })
	}
	write("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
	waitKills(1)
	write("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n") // no new kill
	write("low 0\nhigh 0\nmax 4\noom 3\noom_kill 3\n")
	waitKills(3)
	w.Close()
	w.Close() // idempotent
	if got := kills.Load(); got != 3 {
		t.Errorf("kills = %d, want 3", got)
	}
}

func TestWatchOOMMissing(t *testing.T) {
	for name, paths := range map[string]map[string]string{
		"no memory cgroup": {"cpu": "/sys/fs/cgroup/cpu/x"},
		"v1 gone":          {"memory": filepath.Join(t.TempDir(), "gone")},
		"v2 gone":          {"": filepath.Join(t.TempDir(), "gone")},
	} {
		t.Run(name, func(t *testing.T) {
			if w, err := WatchOOM(paths, func(uint64) {}); err == nil {
				w.Close()
				t.Fatal("WatchOOM = nil, want an error")
			}
		})
	}
}
