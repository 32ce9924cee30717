package cgroups

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
)

// TestStatsPicksVersion: v1 metrics whenever runc recorded a v1
// subsystem (a v1 or hybrid host, where the runc shim reads v1 too), v2
// when it recorded only the unified directory. The type names are the
// type URLs containerd decodes the Any by.
func TestStatsPicksVersion(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"unified/c/memory.current": "1\n",
		"memory/c/memory.stat":     "rss 1\n",
	})
	tests := []struct {
		name     string
		paths    map[string]string
		wantType string
		wantErr  error
	}{
		{"hybrid", map[string]string{"": root + "/unified/c", "memory": root + "/memory/c"}, "io.containerd.cgroups.v1.Metrics", nil},
		{"v1 only", map[string]string{"memory": root + "/memory/c"}, "io.containerd.cgroups.v1.Metrics", nil},
		{"v1 without stats subsystems", map[string]string{"name=systemd": root + "/systemd/c"}, "io.containerd.cgroups.v1.Metrics", nil},
		{"v2", map[string]string{"": root + "/unified/c"}, "io.containerd.cgroups.v2.Metrics", nil},
		{"v2 with empty v1 entries", map[string]string{"": root + "/unified/c", "memory": ""}, "io.containerd.cgroups.v2.Metrics", nil},
		{"none", map[string]string{}, "", errdefs.ErrNotFound},
		{"nil", nil, "", errdefs.ErrNotFound},
		{"v2 gone", map[string]string{"": filepath.Join(root, "gone")}, "", errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Stats(tt.paths)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Stats: got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if got := string(m.ProtoReflect().Descriptor().FullName()); got != tt.wantType {
				t.Errorf("Stats: got %s, want %s", got, tt.wantType)
			}
		})
	}
}
