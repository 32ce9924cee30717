package lcexec

import (
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestProcess: every field of an exec's process spec that `runc exec`
// reads reaches libcontainer's Process.
func TestProcess(t *testing.T) {
	caps := &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_CHOWN"},
		Inheritable: []string{"CAP_FOWNER"}, Permitted: []string{"CAP_KILL", "CAP_CHOWN"}, Ambient: []string{"CAP_NET_RAW"}}
	nnp := true
	tests := []struct {
		name string
		in   specs.Process
		want libcontainer.Process
		err  string
	}{
		{name: "args, env, cwd, user", in: specs.Process{Args: []string{"/bin/sh", "-c", "id"}, Env: []string{"PATH=/bin", "A=1"},
			Cwd: "/tmp", User: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{5, 7}}},
			want: libcontainer.Process{Args: []string{"/bin/sh", "-c", "id"}, Env: []string{"PATH=/bin", "A=1"}, Cwd: "/tmp",
				UID: 1000, GID: 1001, AdditionalGroups: []int{5, 7}, NoNewPrivileges: new(bool)}},
		{name: "hardening", in: specs.Process{Args: []string{"x"}, Capabilities: caps, NoNewPrivileges: true,
			ApparmorProfile: "cri-containerd.apparmor.d", SelinuxLabel: "system_u:system_r:container_t:s0:c1,c2"},
			want: libcontainer.Process{Args: []string{"x"}, NoNewPrivileges: &nnp, AppArmorProfile: "cri-containerd.apparmor.d",
				Label:        "system_u:system_r:container_t:s0:c1,c2",
				Capabilities: &configs.Capabilities{Bounding: caps.Bounding, Effective: caps.Effective, Inheritable: caps.Inheritable, Permitted: caps.Permitted, Ambient: caps.Ambient}}},
		{name: "rlimits and console size", in: specs.Process{Args: []string{"x"}, Terminal: true, ConsoleSize: &specs.Box{Height: 40, Width: 120},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512}, {Type: "RLIMIT_NPROC", Hard: 10, Soft: 10}}},
			want: libcontainer.Process{Args: []string{"x"}, NoNewPrivileges: new(bool), ConsoleWidth: 120, ConsoleHeight: 40,
				Rlimits: []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: 1024, Soft: 512}, {Type: unix.RLIMIT_NPROC, Hard: 10, Soft: 10}}}},
		{name: "io priority and scheduler", in: specs.Process{Args: []string{"x"},
			IOPriority: &specs.LinuxIOPriority{Class: specs.IOPRIO_CLASS_BE, Priority: 3}, Scheduler: &specs.Scheduler{Policy: specs.SchedBatch}},
			want: libcontainer.Process{Args: []string{"x"}, NoNewPrivileges: new(bool),
				IOPriority: &specs.LinuxIOPriority{Class: specs.IOPRIO_CLASS_BE, Priority: 3}, Scheduler: &specs.Scheduler{Policy: specs.SchedBatch}}},
		{name: "no args", in: specs.Process{Cwd: "/"}, err: "no args"},
		{name: "unknown rlimit", in: specs.Process{Args: []string{"x"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}}, err: `unknown rlimit "RLIMIT_BOGUS"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Process(&tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Process = %v, want error %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Process:\n got %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

// TestRlimitNames: every OCI rlimit name maps to a distinct resource.
func TestRlimitNames(t *testing.T) {
	seen := map[int]string{}
	for name, n := range rlimits {
		if prev, dup := seen[n]; dup {
			t.Errorf("%s and %s both map to %d", name, prev, n)
		}
		seen[n] = name
	}
	if got, want := len(rlimits), 16; got != want {
		t.Errorf("%d rlimit names, want %d", got, want)
	}
}
