package process

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
// is in its working directory. `ps` prints an empty pid list.
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

// TestRuncEngineRunsInBundle: every runtime command for a container runs
// with the container's bundle as its working directory.
func TestRuncEngineRunsInBundle(t *testing.T) {
	binary, calls := cwdRuntime(t, true)
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := NewRuncEngine(RuntimeOptions{BinaryName: binary, Root: t.TempDir()}, "ns", bundle)
	ctx := context.Background()
	verbs := []struct {
		name string
		call func() error
	}{
		{"create", func() error { return e.Create(ctx, "c1", bundle, &runc.CreateOpts{}) }},
		{"start", func() error { return e.Start(ctx, "c1") }},
		{"exec", func() error {
			return e.Exec(ctx, "c1", specs.Process{Args: []string{"true"}, Cwd: "/"}, &runc.ExecOpts{Detach: true})
		}},
		{"kill", func() error { return e.Kill(ctx, "c1", 15, nil) }},
		{"ps", func() error { _, err := e.Ps(ctx, "c1"); return err }},
		{"update", func() error { return e.Update(ctx, "c1", &specs.LinuxResources{}) }},
		{"pause", func() error { return e.Pause(ctx, "c1") }},
		{"resume", func() error { return e.Resume(ctx, "c1") }},
		{"delete", func() error { return e.Delete(ctx, "c1", &runc.DeleteOpts{Force: true}) }},
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

// TestCleanupBundleGone: containerd may have removed the bundle by the
// time the delete action runs; the runtime then runs in "/" and the
// container is still deleted.
func TestCleanupBundleGone(t *testing.T) {
	binary, calls := cwdRuntime(t, false)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "c1")
	e := NewRuncEngine(RuntimeOptions{BinaryName: binary, Root: root}, "ns", bundle)
	if _, err := Cleanup(context.Background(), e, "c1", bundle); err != nil {
		t.Fatalf("Cleanup with the bundle gone: %v", err)
	}
	if got, want := readCalls(t, calls), []string{"/ delete"}; !slices.Equal(got, want) {
		t.Errorf("runtime calls (cwd verb): got %q, want %q", got, want)
	}
}
