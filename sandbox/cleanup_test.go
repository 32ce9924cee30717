package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// fakeRuntime writes a shell script that stands in for runc: it appends
// its arguments to calls and prints stderr, exiting with code.
func fakeRuntime(t *testing.T, stderr string, code int) (binary, calls string) {
	t.Helper()
	dir := t.TempDir()
	binary = filepath.Join(dir, "runtime")
	calls = filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\n"
	if stderr != "" {
		script += "echo '" + stderr + "' >&2\n"
	}
	script += "exit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binary, calls
}

func TestCleanup(t *testing.T) {
	tests := []struct {
		name    string
		stderr  string
		code    int
		wantErr string // "" for success
	}{
		{name: "runtime deletes", code: 0},
		{name: "container already gone", stderr: "container does not exist", code: 1},
		{name: "runtime fails", stderr: "permission denied", code: 1, wantErr: "permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			binary, calls := fakeRuntime(t, tt.stderr, tt.code)
			bundle := newBundle(t, nil)
			root := t.TempDir()
			// The runtime's record of c1, which makes the runtime worth asking.
			if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := writeBundleState(bundle, bundleState{Options: ociruntime.Options{BinaryName: binary, Root: root}}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bundle, "init.pid"), []byte("4242"), 0o600); err != nil {
				t.Fatal(err)
			}
			for attempt := 1; attempt <= 2; attempt++ {
				before := time.Now()
				res, err := Cleanup(context.Background(), "ns", "c1", bundle)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("Cleanup: got %v, want an error containing %q", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Cleanup attempt %d: %v", attempt, err)
				}
				if res.Pid != 4242 || res.ExitStatus != process.KilledStatus || res.ExitedAt.Before(before) {
					t.Errorf("Cleanup attempt %d: got %+v, want pid 4242, status %d, a fresh time", attempt, res, process.KilledStatus)
				}
			}
			data, err := os.ReadFile(calls)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) != 2 {
				t.Fatalf("runtime calls: got %q, want 2", lines)
			}
			for _, l := range lines {
				if !strings.Contains(l, "--root "+filepath.Join(root, "ns")) || !strings.HasSuffix(l, "delete --force c1") {
					t.Errorf("runtime call %q: want --root %s ... delete --force c1", l, filepath.Join(root, "ns"))
				}
			}
		})
	}
}

// TestCleanupForgotten: containerd runs the delete action after every
// shim exit; when the runtime has no record of the container left, the
// runtime is not run, and the action still succeeds and unmounts.
func TestCleanupForgotten(t *testing.T) {
	binary, calls := fakeRuntime(t, "", 0)
	bundle := newBundle(t, nil)
	if err := writeBundleState(bundle, bundleState{Options: ociruntime.Options{BinaryName: binary, Root: t.TempDir()}}); err != nil {
		t.Fatal(err)
	}
	res, err := Cleanup(context.Background(), "ns", "c1", bundle)
	if err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if res.ExitStatus != process.KilledStatus {
		t.Errorf("Cleanup: got %+v, want status %d", res, process.KilledStatus)
	}
	if data, err := os.ReadFile(calls); err == nil {
		t.Errorf("runtime called for a container it has no record of: %q", data)
	}
}

// TestCleanupBrokenState: a shim that died before writing its state
// falls back to the default runtime and root; with no pid file the pid
// is 0.
func TestCleanupBrokenState(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the default runtime root is under /run")
	}
	// A namespace of this test's own under the default root.
	ns := "unit-" + strconv.Itoa(os.Getpid())
	state := filepath.Join(ociruntime.DefaultRoot, ns, "c1")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(ociruntime.DefaultRoot, ns)) })
	bundle := newBundle(t, nil)
	if err := os.WriteFile(filepath.Join(bundle, optionsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	binary, calls := fakeRuntime(t, "", 0)
	// The default runtime is looked up in PATH; put the fake there as runc.
	dir := filepath.Dir(binary)
	if err := os.Rename(binary, filepath.Join(dir, "runc")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	res, err := Cleanup(context.Background(), ns, "c1", bundle)
	if err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if res.Pid != 0 || res.ExitStatus != process.KilledStatus {
		t.Errorf("Cleanup: got %+v, want pid 0, status %d", res, process.KilledStatus)
	}
	data, _ := os.ReadFile(calls)
	if want := "--root " + filepath.Join(ociruntime.DefaultRoot, ns); !strings.Contains(string(data), want) {
		t.Errorf("runtime call %q: want the default root (%s)", data, want)
	}
}

// TestCleanupMissingRuntime: when the runtime binary is not installed,
// nothing was deleted and the delete action must say so rather than take
// exec's "executable file not found" for "the container does not exist".
func TestCleanupMissingRuntime(t *testing.T) {
	bundle := newBundle(t, nil)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := writeBundleState(bundle, bundleState{Options: ociruntime.Options{BinaryName: "no-such-runtime-binary", Root: root}}); err != nil {
		t.Fatal(err)
	}
	res, err := Cleanup(context.Background(), "ns", "c1", bundle)
	if err == nil {
		t.Errorf("Cleanup with a missing runtime binary: got %+v, nil; want an error", res)
	}
}

// TestCleanupRuncShimBundle: the delete action on a bundle the runc shim
// wrote (after an operator put this binary in its place, containerd runs
// it for the runc shim's dead tasks): the runtime is the one its runtime
// file names, under the root its options.json names, and the init exit it
// recorded (containerd 2.4's runc shim) is reported; without a record,
// 137 and the init's pid, as the runc shim's delete answers.
func TestCleanupRuncShimBundle(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		exitRecord string
		want       CleanupResult
	}{
		{name: "exit recorded", exitRecord: `{"Timestamp":"2026-12-01T10:00:00Z","Pid":4242,"Status":3}`, want: CleanupResult{Pid: 4242, ExitStatus: 3, ExitedAt: at}},
		{name: "no exit recorded", want: CleanupResult{Pid: 4242, ExitStatus: process.KilledStatus}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			binary, calls := fakeRuntime(t, "", 0)
			bundle := newBundle(t, nil)
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "k8s.io", "c1"), 0o700); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{
				"options.json": fmt.Sprintf(`{"binary_name":%q,"root":%q}`, binary, root),
				"runtime":      binary,
				"init.pid":     "4242",
			}
			if tt.exitRecord != "" {
				files["exit.json"] = tt.exitRecord
			}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(bundle, name), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := time.Now()
			got, err := Cleanup(context.Background(), "k8s.io", "c1", bundle)
			if err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if got.Pid != tt.want.Pid || got.ExitStatus != tt.want.ExitStatus {
				t.Errorf("Cleanup: got %+v, want %+v", got, tt.want)
			}
			if tt.want.ExitedAt.IsZero() && got.ExitedAt.Before(before) || !tt.want.ExitedAt.IsZero() && !got.ExitedAt.Equal(tt.want.ExitedAt) {
				t.Errorf("Cleanup: exited at %v, want %v", got.ExitedAt, tt.want.ExitedAt)
			}
			data, err := os.ReadFile(calls)
			if err != nil {
				t.Fatalf("the runtime the runtime file names was not run: %v", err)
			}
			if l := strings.TrimSpace(string(data)); !strings.Contains(l, "--root "+filepath.Join(root, "k8s.io")) || !strings.HasSuffix(l, "delete --force c1") {
				t.Errorf("runtime call %q: want --root %s ... delete --force c1", l, filepath.Join(root, "k8s.io"))
			}
		})
	}
}

// TestRemoveDeadSocket: the socket a killed pod shim left (nothing
// listens: connect is refused) is removed; a socket a live shim serves
// stays; a bundle without an address file, or naming a socket that is
// gone, is no error.
func TestRemoveDeadSocket(t *testing.T) {
	bundle, sockDir := t.TempDir(), t.TempDir()
	path := filepath.Join(sockDir, "s")
	writeAddress := func() {
		if err := os.WriteFile(filepath.Join(bundle, "address"), []byte("unix://"+path), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeDeadSocket(bundle); err != nil {
		t.Fatalf("no address file: %v", err)
	}
	writeAddress()
	if err := removeDeadSocket(bundle); err != nil {
		t.Fatalf("no socket: %v", err)
	}

	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := removeDeadSocket(bundle); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a live shim's socket was removed: %v", err)
	}
	// A listener closed without unlinking: what a SIGKILLed shim leaves.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if err := removeDeadSocket(bundle); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the dead shim's socket is still there: %v", err)
	}
}
