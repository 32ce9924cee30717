package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// runcWrapper writes a runtime binary that logs the verb of every call
// (the first argument after runc's global flags) and runs runc.
func runcWrapper(t *testing.T, dir string) (wrapper, calls string) {
	t.Helper()
	runc := runcUnderTest(t)
	calls = filepath.Join(dir, "calls.log")
	wrapper = filepath.Join(dir, "runc-wrapper")
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	case "$a" in create|start|delete|kill|exec|ps|state) echo "$a" >>%s; break ;; esac
done
exec %s "$@"
`, calls, runc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, calls
}

// runcRecord is what the test reads of runc's state.json.
type runcRecord struct {
	CgroupPaths map[string]string `json:"cgroup_paths"`
}

func readRuncRecord(t *testing.T, dir string) runcRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatalf("runc state: %v", err)
	}
	var r runcRecord
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.CgroupPaths) == 0 {
		t.Fatalf("runc state in %s names no cgroups", dir)
	}
	return r
}

// withHooks adds poststart and poststop hooks that append their names to
// file on the host.
func withHooks(file string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		hook := func(name string) specs.Hook {
			return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo " + name + " >>" + file}}
		}
		s.Hooks = &specs.Hooks{Poststart: []specs.Hook{hook("poststart")}, Poststop: []specs.Hook{hook("poststop")}}
		return nil
	}
}

// withPidNamespaceOf makes the container join the PID namespace of pid.
func withPidNamespaceOf(pid int) oci.SpecOpts {
	return oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", pid)})
}

// TestDirectStartDelete: this shim starts a created container and deletes
// a stopped one itself, without running the runtime, only where that is
// all runc would do; everywhere else it runs the runtime. Either way,
// after the delete runc's state directory and every cgroup of the
// container are gone, hooks have run, and nothing of the container lives.
func TestDirectStartDelete(t *testing.T) {
	e := newDefaultEnv(t)
	dir := filepath.Join(e.d.dir, "direct", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	wrapper, calls := runcWrapper(t, dir)
	runtimeOpts := &options.Options{BinaryName: wrapper}
	stateDir := func(id string) string { return filepath.Join("/run/containerd/runc", e.ns, id) }

	// run starts the container, lets it exit, deletes it and checks
	// what the runtime was asked and what is left.
	run := func(t *testing.T, id string, args []string, opts []oci.SpecOpts, wantCalls []string) {
		t.Helper()
		os.Remove(calls)
		r := e.sub(t).create(ctrSpec{id: id, args: args, runtimeOpts: runtimeOpts, opts: opts})
		rec := readRuncRecord(t, stateDir(id))
		r.start()
		if code := r.wait(time.Minute); code != 0 {
			t.Errorf("exit code = %d, want 0 (stderr %q)", code, r.stderr.Bytes())
		}
		r.delete()
		data, _ := os.ReadFile(calls)
		got := strings.Fields(string(data))
		if isSandboxRuntime() && !slices.Equal(got, wantCalls) {
			t.Errorf("runtime calls = %q, want %q", got, wantCalls)
		}
		if !isSandboxRuntime() {
			t.Logf("runtime calls of the runc shim: %q", got)
		}
		if _, err := os.Stat(stateDir(id)); !os.IsNotExist(err) {
			t.Errorf("runc state %s still there after delete (%v)", stateDir(id), err)
		}
		for sub, p := range rec.CgroupPaths {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("cgroup %q %s still there after delete (%v)", sub, p, err)
			}
		}
	}

	t.Run("plain", func(t *testing.T) {
		run(t, "direct-plain", []string{"sh", "-c", "echo hi"}, nil, []string{"create"})
	})
	t.Run("hooks", func(t *testing.T) {
		ran := filepath.Join(dir, "hooks.log")
		run(t, "direct-hooks", []string{"true"}, []oci.SpecOpts{withHooks(ran)}, []string{"create", "start", "delete"})
		data, err := os.ReadFile(ran)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Fields(string(data)), []string{"poststart", "poststop"}; !slices.Equal(got, want) {
			t.Errorf("hooks that ran = %q, want %q", got, want)
		}
	})
	t.Run("shared pid namespace", func(t *testing.T) {
		se := e.sub(t)
		host := se.run(ctrSpec{id: "direct-pidhost", args: []string{"sh", "-c", "echo up; exec sleep 600"}})
		host.waitOutput(t, "up\n", 30*time.Second)
		pid := int(host.task.Pid())
		// The guest's init leaves a process behind in the shared PID
		// namespace: its exit makes the shim kill the rest (runc kill
		// --all, as the runc shim does), and the delete goes through the
		// runtime.
		const leftover = "sleep\x00987654"
		run(t, "direct-guest", []string{"sh", "-c", "sleep 987654 & exit 0"},
			[]oci.SpecOpts{withPidNamespaceOf(pid)}, []string{"create", "kill", "delete"})
		if pids := pidsWithCmdline(leftover); len(pids) > 0 {
			t.Errorf("the guest's leftover %v still runs after its delete", pids)
		}
		host.kill(syscall.SIGKILL)
		host.wait(30 * time.Second)
		host.delete()
	})
}

// pidsWithCmdline lists the processes whose NUL-separated command line,
// without its final NUL, is cmdline.
func pidsWithCmdline(cmdline string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		var pid int
		if _, err := fmt.Sscanf(ent.Name(), "%d", &pid); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.TrimSuffix(string(data), "\x00") == cmdline {
			pids = append(pids, pid)
		}
	}
	return pids
}
