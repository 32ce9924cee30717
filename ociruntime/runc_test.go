package ociruntime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cwdRuntime writes a script that stands in for the runtime: it appends
// "<cwd> <verb>" to calls and, like wrappers such as containerd's
// failpoint runtime, with needConfig refuses to run unless ./config.json
// is in its working directory. `ps` prints an empty pid list; --version
// (the probe, run from anywhere) says runc 1.1.5 and is not recorded.
func cwdRuntime(t *testing.T, needConfig bool) (binary, calls string) {
	t.Helper()
	dir := t.TempDir()
	binary = filepath.Join(dir, "runtime")
	calls = filepath.Join(dir, "calls")
	need := ""
	if needConfig {
		need = "1"
	}
	script := `#!/bin/sh
[ "$1" = --version ] && { echo "runc version 1.1.5"; exit 0; }
need_config=` + need + `
verb=
for a in "$@"; do
	case "$a" in create|start|exec|kill|delete|ps|update|pause|resume) verb=$a; break ;; esac
done
echo "$(pwd) $verb" >>` + calls + `
[ -n "$need_config" ] && ! [ -f ./config.json ] && { echo "no ./config.json in $(pwd)" >&2; exit 1; }
[ "$verb" = ps ] && echo '[]'
exit 0
`
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binary, calls
}

func readCalls(t *testing.T, calls string) []string {
	t.Helper()
	data, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// TestRuncRunsInBundle: every runtime command for a container runs
// with the container's bundle as its working directory.
func TestRuncRunsInBundle(t *testing.T) {
	binary, calls := cwdRuntime(t, true)
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// A state directory, or Delete knows there is nothing to delete.
	if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	e := New(Options{BinaryName: binary, Root: root}, "ns", bundle)
	ctx := context.Background()
	verbs := []struct {
		name string
		call func() error
	}{
		{"create", func() error { return e.Create(ctx, "c1", bundle, &runc.CreateOpts{}) }},
		{"start", func() error { return e.Start(ctx, "c1", -1) }},
		{"exec", func() error {
			return e.Exec(ctx, "c1", specs.Process{Args: []string{"true"}, Cwd: "/"}, &runc.ExecOpts{Detach: true})
		}},
		{"kill", func() error { return e.Kill(ctx, "c1", 15, false) }},
		{"ps", func() error { _, err := e.Ps(ctx, "c1"); return err }},
		{"update", func() error { return e.Update(ctx, "c1", &specs.LinuxResources{}) }},
		{"pause", func() error { return e.Pause(ctx, "c1") }},
		{"resume", func() error { return e.Resume(ctx, "c1") }},
		{"delete", func() error { return e.Delete(ctx, "c1", false) }},
	}
	var want []string
	for _, v := range verbs {
		if err := v.call(); err != nil {
			t.Errorf("%s: %v", v.name, err)
		}
		want = append(want, bundle+" "+v.name)
	}
	if got := readCalls(t, calls); !slices.Equal(got, want) {
		t.Errorf("runtime calls (cwd verb):\n got %q\nwant %q", got, want)
	}
}

// TestRuncBundleGone: containerd may have removed the bundle by the time
// its delete action runs; the runtime then runs in "/" and the container
// is still deleted.
func TestRuncBundleGone(t *testing.T) {
	binary, calls := cwdRuntime(t, false)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "c1")
	e := New(Options{BinaryName: binary, Root: root}, "ns", bundle)
	if err := e.Delete(context.Background(), "c1", false); err != nil {
		t.Fatalf("Delete with the bundle gone: %v", err)
	}
	if got, want := readCalls(t, calls), []string{"/ delete"}; !slices.Equal(got, want) {
		t.Errorf("runtime calls (cwd verb): got %q, want %q", got, want)
	}
}

// TestRuncDeleteGone: a container the runtime says does not exist is
// deleted; any other failure is an error; a container with no state
// directory is not asked about at all.
func TestRuncDeleteGone(t *testing.T) {
	tests := []struct {
		name      string
		stderr    string
		noState   bool
		wantErr   bool
		wantAsked bool
	}{
		{name: "does not exist", stderr: "container does not exist", wantAsked: true},
		{name: "busy", stderr: "unable to remove cgroup: device or resource busy", wantErr: true, wantAsked: true},
		{name: "no state directory", noState: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			binary, asked := filepath.Join(dir, "runtime"), filepath.Join(dir, "asked")
			script := "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'runc version 1.1.5'; exit 0; }\necho x >>" + asked + "\necho '" + tt.stderr + "' >&2\nexit 1\n"
			if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			if !tt.noState {
				if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			err := New(Options{BinaryName: binary, Root: root}, "ns", t.TempDir()).Delete(context.Background(), "c1", false)
			if (err != nil) != tt.wantErr {
				t.Errorf("Delete = %v, want error %v", err, tt.wantErr)
			}
			if _, statErr := os.Stat(asked); (statErr == nil) != tt.wantAsked {
				t.Errorf("binary asked = %v, want %v", statErr == nil, tt.wantAsked)
			}
		})
	}
}
