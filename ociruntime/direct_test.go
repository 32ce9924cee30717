package ociruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// fakeRuncState writes a runc state directory for id under root, as runc
// leaves it after create: state.json (from st) and, when created, the
// exec fifo.
func fakeRuncState(t *testing.T, root, id string, st map[string]any, created bool) string {
	t.Helper()
	dir := filepath.Join(root, id)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if created {
		if err := unix.Mkfifo(filepath.Join(dir, execFifo), 0o622); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// stateJSON is runc 1.1's state.json, trimmed to what matters, for a
// container with its own PID namespace and no hooks; edit adjusts it.
func stateJSON(cgroups map[string]string, edit func(config map[string]any)) map[string]any {
	hooks := map[string]any{}
	for _, h := range []string{"createContainer", "createRuntime", "poststart", "poststop", "prestart", "startContainer"} {
		hooks[h] = nil
	}
	config := map[string]any{
		"namespaces": []map[string]string{{"type": "NEWPID", "path": ""}, {"type": "NEWNS", "path": ""}},
		"Hooks":      hooks,
		"cgroups":    map[string]any{"Systemd": false, "Rootless": false},
	}
	if edit != nil {
		edit(config)
	}
	return map[string]any{"init_process_pid": 1, "config": config, "rootless": false, "cgroup_paths": cgroups, "intel_rdt_path": ""}
}

func withHook(name string) func(map[string]any) {
	return func(c map[string]any) {
		c["Hooks"].(map[string]any)[name] = []map[string]string{{"path": "/bin/true"}}
	}
}

// startInit starts a stand-in for runc init and returns a pidfd for it;
// the test kills and reaps it at the end.
func startInit(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(pidfd)
		cmd.Process.Kill()
		cmd.Wait()
	})
	return pidfd
}

// testRunc is a Runc for the runc state under root whose binary said it
// is runc 1.<minor>.
func testRunc(root string, minor int) *Runc {
	r := &Runc{client: &runc.Runc{Root: root}, direct: true}
	r.probeOnce.Do(func() {
		r.probe = &probe{done: make(chan struct{}), major: 1, minor: minor}
		close(r.probe.done)
	})
	return r
}

func TestStartCreated(t *testing.T) {
	tests := []struct {
		name     string
		init     string // the init stand-in; FIFO is replaced by the fifo's path
		edit     func(map[string]any)
		minor    int // runc 1.<minor>; 1 when unset
		notify   bool
		noFifo   bool
		timeout  time.Duration
		wantDone bool
		wantErr  error // with wantDone
	}{
		{name: "releases the init", init: `printf 0 >FIFO; exec sleep 100`, wantDone: true},
		{name: "init wrote and exited", init: `printf 0 >FIFO`, wantDone: true},
		{name: "init died first", init: `exit 0`, wantDone: true, wantErr: errdefs.ErrFailedPrecondition},
		{name: "init never opens", init: `exec sleep 100`, timeout: 200 * time.Millisecond, wantDone: true, wantErr: context.DeadlineExceeded},
		{name: "poststart hook", init: `exec sleep 100`, edit: withHook("poststart")},
		{name: "no exec fifo", init: `exec sleep 100`, noFifo: true},
		{name: "no hook table from runc 1.3", minor: 3, init: `exec sleep 100`, edit: func(c map[string]any) { delete(c, "Hooks") }},
		// runc 1.4 writes no Hooks key for a container without hooks.
		{name: "no hook table from runc 1.4", minor: 4, init: `printf 0 >FIFO; exec sleep 100`, edit: func(c map[string]any) { delete(c, "Hooks") }, wantDone: true},
		{name: "poststart hook from runc 1.4", minor: 4, init: `exec sleep 100`, edit: withHook("poststart")},
		// go-runc never hands NOTIFY_SOCKET to runc: nothing to relay.
		{name: "NOTIFY_SOCKET set", init: `printf 0 >FIFO; exec sleep 100`, notify: true, wantDone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckNoLeaks(t)
			if tt.notify {
				t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			if tt.minor == 0 {
				tt.minor = 1
			}
			root := t.TempDir()
			dir := fakeRuncState(t, root, "c1", stateJSON(map[string]string{"cpu": "/sys/fs/cgroup/cpu/c1"}, tt.edit), !tt.noFifo)
			fifo := filepath.Join(dir, execFifo)
			pidfd := startInit(t, strings.ReplaceAll(tt.init, "FIFO", fifo))
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			done, err := testRunc(root, tt.minor).startCreated(ctx, "c1", pidfd)
			if done != tt.wantDone {
				t.Fatalf("StartCreated done = %v (err %v), want %v", done, err, tt.wantDone)
			}
			if !done {
				if err != nil {
					t.Errorf("declined with an error: %v", err)
				}
				if _, err := os.Lstat(fifo); !tt.noFifo && err != nil {
					t.Errorf("declined, but the exec fifo is gone: %v", err)
				}
				return
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("StartCreated = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("StartCreated: %v", err)
			}
			if _, err := os.Lstat(fifo); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("exec fifo after start: %v, want it removed (runc's mark of a started container)", err)
			}
		})
	}
}

func TestDeleteStopped(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(map[string]any)
		systemd  bool
		created  bool   // the exec fifo is still there: never started
		outside  bool   // one cgroup path is outside the cgroup root
		nested   string // a cgroup the container made under its own
		minor    int    // runc 1.<minor>; 1 when unset
		wantDone bool
	}{
		{name: "removes cgroups and state", wantDone: true},
		{name: "poststop hook", edit: withHook("poststop")},
		{name: "shared pid namespace", edit: func(c map[string]any) {
			c["namespaces"] = []map[string]string{{"type": "NEWPID", "path": "/proc/1/ns/pid"}}
		}},
		{name: "no pid namespace", edit: func(c map[string]any) { c["namespaces"] = []map[string]string{{"type": "NEWNS"}} }},
		{name: "systemd cgroups", systemd: true},
		{name: "rootless", edit: func(c map[string]any) { c["cgroups"] = map[string]any{"Rootless": true} }},
		{name: "never started", created: true},
		{name: "cgroup outside the root", outside: true},
		{name: "nested cgroup", nested: "cpu", wantDone: false},
		{name: "no hook table from runc 1.4", minor: 4, edit: func(c map[string]any) { delete(c, "Hooks") }, wantDone: true},
		{name: "no hook table from runc 1.3", minor: 3, edit: func(c map[string]any) { delete(c, "Hooks") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cgroupRoot, root := t.TempDir(), t.TempDir()
			cgroups := map[string]string{}
			for _, sub := range []string{"cpu", "memory", "unified"} {
				p := filepath.Join(cgroupRoot, sub, "ns", "c1")
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				key := sub
				if sub == "unified" {
					key = ""
				}
				cgroups[key] = p
			}
			cgroups["cpuacct"] = cgroups["cpu"] // joint mounts name one directory twice
			if tt.outside {
				cgroups["pids"] = filepath.Join(t.TempDir(), "c1")
			}
			if tt.nested != "" {
				if err := os.Mkdir(filepath.Join(cgroups[tt.nested], "child"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			dir := fakeRuncState(t, root, "c1", stateJSON(cgroups, tt.edit), tt.created)
			if tt.minor == 0 {
				tt.minor = 1
			}
			e := testRunc(root, tt.minor)
			e.client.SystemdCgroup, e.cgroupRoot = tt.systemd, cgroupRoot
			done, err := e.deleteStopped(context.Background(), "c1")
			if err != nil {
				t.Fatalf("DeleteStopped: %v", err)
			}
			if done != tt.wantDone {
				t.Fatalf("DeleteStopped done = %v, want %v", done, tt.wantDone)
			}
			_, stateErr := os.Stat(dir)
			if !done {
				if stateErr != nil {
					t.Errorf("declined, but the runc state is gone: %v", stateErr)
				}
				return
			}
			if !errors.Is(stateErr, os.ErrNotExist) {
				t.Errorf("runc state after delete: %v, want removed", stateErr)
			}
			for key, p := range cgroups {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("cgroup %q %s after delete: %v, want removed", key, p, err)
				}
				if _, err := os.Stat(filepath.Dir(p)); err != nil {
					t.Errorf("the parent of cgroup %s went too: %v", p, err)
				}
			}
		})
	}
}

func TestForgotten(t *testing.T) {
	root := t.TempDir()
	e := testRunc(root, 1)
	if !e.forgotten("c1") {
		t.Errorf("forgotten(c1) with no state = false, want true")
	}
	fakeRuncState(t, root, "c1", stateJSON(nil, nil), false)
	if e.forgotten("c1") {
		t.Errorf("forgotten(c1) with state = true, want false")
	}
}
