package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// tree builds a fake cgroupfs under a temp dir: every dir in dirs is
// created with an empty cgroup.procs (a regular file standing in for the
// kernel's), every file in files is created empty.
func tree(t *testing.T, dirs, files []string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range dirs {
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "cgroup.procs"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func procs(t *testing.T, root, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, dir, "cgroup.procs"))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(data)
}

func TestPlaceProcess(t *testing.T) {
	tests := []struct {
		name  string
		dirs  []string
		files []string
		path  string
		// want maps a cgroup dir to its cgroup.procs content afterwards.
		want    map[string]string
		wantErr error
	}{
		{
			name:  "v2",
			dirs:  []string{"", "shim.slice", "other"},
			files: []string{"cgroup.controllers"},
			path:  "/shim.slice",
			want:  map[string]string{"shim.slice": "4242", "": "", "other": ""},
		},
		{
			name:  "v2 relative path",
			dirs:  []string{"", "a/b"},
			files: []string{"cgroup.controllers"},
			path:  "a/b",
			want:  map[string]string{"a/b": "4242", "": ""},
		},
		{
			name:  "v2 path cannot climb out",
			dirs:  []string{"", "x"},
			files: []string{"cgroup.controllers"},
			path:  "../../x",
			want:  map[string]string{"x": "4242"},
		},
		{
			name:    "v2 missing path",
			dirs:    []string{""},
			files:   []string{"cgroup.controllers"},
			path:    "/missing",
			wantErr: os.ErrNotExist,
		},
		{
			name: "v1 every hierarchy that has the path",
			dirs: []string{"cpu", "cpu/shim", "memory", "memory/shim", "pids"},
			path: "/shim",
			want: map[string]string{"cpu/shim": "4242", "memory/shim": "4242", "cpu": "", "memory": "", "pids": ""},
		},
		{
			name: "hybrid with unified",
			dirs: []string{"cpu", "cpu/shim", "unified", "unified/shim"},
			path: "shim",
			want: map[string]string{"cpu/shim": "4242", "unified/shim": "4242"},
		},
		{
			name:    "v1 path missing everywhere",
			dirs:    []string{"cpu", "memory", "pids"},
			path:    "/missing",
			wantErr: os.ErrNotExist,
		},
		{
			name:    "v1 empty root",
			dirs:    nil,
			path:    "/shim",
			wantErr: os.ErrNotExist,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tree(t, tt.dirs, tt.files)
			err := PlaceProcess(root, tt.path, 4242)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("PlaceProcess: got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("PlaceProcess: %v", err)
			}
			for dir, want := range tt.want {
				if got := procs(t, root, dir); got != want {
					t.Errorf("%s/cgroup.procs: got %q, want %q", dir, got, want)
				}
			}
		})
	}
}

func TestPlaceProcessMissingRoot(t *testing.T) {
	err := PlaceProcess(filepath.Join(t.TempDir(), "nope"), "/shim", 1)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PlaceProcess with a missing root: got %v, want ErrNotExist", err)
	}
}
