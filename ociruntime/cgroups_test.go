package ociruntime

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCgroupPaths: runc's record names the cgroups; without a record
// (crun) or with one that names none, the init's /proc/<pid>/cgroup does.
func TestCgroupPaths(t *testing.T) {
	root := t.TempDir()
	hybrid := map[string]string{"": "/sys/fs/cgroup/unified/default/c1", "memory": "/sys/fs/cgroup/memory/default/c1"}
	fakeRuncState(t, root, "c1", stateJSON(hybrid, nil), false)
	fakeRuncState(t, root, "nopaths", stateJSON(nil, nil), false)
	if err := os.MkdirAll(filepath.Join(root, "bad"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bad", "state.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	cgroupRoot := t.TempDir()
	e := testRunc(root, 1)
	e.cgroupRoot = cgroupRoot

	got, err := e.CgroupPaths("c1", 1)
	if err != nil || !maps.Equal(got, hybrid) {
		t.Errorf("CgroupPaths(c1): got %v, %v; want %v", got, err, hybrid)
	}
	for _, id := range []string{"nopaths", "crun"} {
		got, err := e.CgroupPaths(id, os.Getpid())
		if err != nil || len(got) == 0 {
			t.Fatalf("CgroupPaths(%s): got %v, %v; want this process's cgroups", id, got, err)
		}
		for k, v := range got {
			if !strings.HasPrefix(v, cgroupRoot+"/") {
				t.Errorf("CgroupPaths(%s): %q -> %q, want under %s", id, k, v, cgroupRoot)
			}
		}
	}
	if _, err := e.CgroupPaths("bad", 1); err == nil {
		t.Errorf("CgroupPaths(bad): got no error for a broken state.json")
	}
}
