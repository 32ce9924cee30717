package cgroups

import (
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestProcPaths(t *testing.T) {
	const hybrid = "12:pids:/default/c1\n11:name=systemd:/default/c1\n4:cpu,cpuacct:/default/c1\n3:memory:/default/c1\n0::/default/c1\n"
	tests := []struct {
		name    string
		files   []string // in the fake cgroup root
		data    string
		want    func(root string) map[string]string
		wantErr error
	}{
		{
			name:  "hybrid",
			files: []string{"unified/cgroup.procs"},
			data:  hybrid,
			want: func(r string) map[string]string {
				return map[string]string{
					"pids": r + "/pids/default/c1", "name=systemd": r + "/systemd/default/c1",
					"cpu": r + "/cpu,cpuacct/default/c1", "cpuacct": r + "/cpu,cpuacct/default/c1",
					"memory": r + "/memory/default/c1", "": r + "/unified/default/c1",
				}
			},
		},
		{
			name:  "v1 without unified",
			files: []string{"memory/cgroup.procs"},
			data:  "3:memory:/c1\n0::/\n",
			want:  func(r string) map[string]string { return map[string]string{"memory": r + "/memory/c1"} },
		},
		{
			name:  "v2",
			files: []string{"cgroup.controllers"},
			data:  "0::/system.slice/c1.scope\n",
			want:  func(r string) map[string]string { return map[string]string{"": r + "/system.slice/c1.scope"} },
		},
		{
			name:  "v2 ignores v1 lines",
			files: []string{"cgroup.controllers"},
			data:  "1:name=systemd:/x\n0::/c1\n",
			want:  func(r string) map[string]string { return map[string]string{"": r + "/c1"} },
		},
		{name: "no colons", data: "garbage\n", wantErr: errdefs.ErrInternal},
		{name: "relative path", data: "3:memory:c1\n", wantErr: errdefs.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tt.files {
				writeFiles(t, root, map[string]string{f: ""})
			}
			got, err := procPaths(root, tt.data)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("procPaths: got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("procPaths: %v", err)
			}
			if want := tt.want(root); !maps.Equal(got, want) {
				t.Errorf("procPaths:\ngot  %v\nwant %v", got, want)
			}
		})
	}
}

// TestProcPathsOfSelf reads this process's own /proc/<pid>/cgroup and
// maps it under a fake root.
func TestProcPathsOfSelf(t *testing.T) {
	root := t.TempDir()
	got, err := ProcPaths(root, os.Getpid())
	if err != nil {
		t.Fatalf("ProcPaths: %v", err)
	}
	for k, v := range got {
		if !strings.HasPrefix(v, root+"/") {
			t.Errorf("ProcPaths: %q -> %q, want under %s", k, v, root)
		}
	}
	if _, err := ProcPaths(root, 0x3fffffff); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("ProcPaths of no process: got %v, want NotFound", err)
	}
}
