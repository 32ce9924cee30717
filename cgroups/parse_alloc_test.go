//go:build !race

package cgroups

import (
	"path/filepath"
	"runtime"
	"testing"
)

// TestStatsV1Allocs bounds what one v1 Stats allocates. containerd 2.4's
// CRI plugin asks every container's metrics once a second, so this is
// garbage a shim makes all its life (see bufs). With os.ReadFile per
// file and a map per keyed file it was 44 KiB per Stats on a real cgroup
// and 53 KiB on this fake tree (every v1 controller, blkio with devices,
// two huge page sizes); read in place, 18 KiB.
func TestStatsV1Allocs(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, v1Tree)
	paths, proc := v1Paths(root), filepath.Join(root, "proc")
	if _, err := stats(paths, proc); err != nil {
		t.Fatal(err)
	}
	const runs = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := stats(paths, proc); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated per Stats", perCall)
	if perCall > 24<<10 {
		t.Errorf("one v1 Stats allocated %d bytes, want at most 24 KiB", perCall)
	}
}
