package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestRuntimeRunsInBundle: the OCI runtime runs with the container's
// bundle as its working directory, as under the runc shim (which inherits
// it from containerd). Runtime wrappers rely on it: containerd's own
// failpoint runtime reads ./config.json. The wrapper here refuses every
// container command unless ./config.json is in its working directory,
// records where it ran, and execs runc; a container's whole lifecycle
// with an exec must work through it.
func TestRuntimeRunsInBundle(t *testing.T) {
	e := newDefaultEnv(t)
	runc := runcUnderTest(t)
	dir := filepath.Join(e.d.dir, "workdir", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	calls := filepath.Join(dir, "calls.log")
	wrapper := filepath.Join(dir, "runc-needs-bundle")
	// Commands that are not about a container (features, --version) may
	// run anywhere.
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	case "$a" in
	create|start|exec|kill|delete|ps|update|pause|resume|state|events)
		echo "$a $(pwd)" >>%[1]s
		if [ ! -f ./config.json ]; then
			echo "runc-needs-bundle: no ./config.json in $(pwd) for $a" >&2
			echo "$a REFUSED" >>%[1]s
			exit 1
		fi
		break ;;
	esac
done
exec %[2]s "$@"
`, calls, runc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	var ropts any = &options.Options{BinaryName: wrapper}
	if isSandboxRuntime() {
		// The wrapper records the binary's calls, exec's included:
		// whatever $SHIM_TEST_ENGINE says, this container's execs run it.
		var err error
		if ropts, err = withEngine(ropts, "runc"); err != nil {
			t.Fatal(err)
		}
	}
	r := e.run(ctrSpec{id: "cwd", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}, runtimeOpts: ropts})
	r.waitOutput(t, "ready\n", time.Minute)

	x := r.exec(t, "cwd-exec", []string{"sh", "-c", "echo exec-out; exit 3"}, nil)
	if code := x.finish(t, e); code != 3 {
		t.Errorf("exec exit code = %d, want 3", code)
	}
	if got, want := string(x.stdout.Bytes()), "exec-out\n"; got != want {
		t.Errorf("exec stdout = %q, want %q", got, want)
	}
	if _, err := r.task.Pids(e.ctx); err != nil {
		t.Errorf("pids: %v", err)
	}
	if err := r.task.Pause(e.ctx); err != nil {
		t.Errorf("pause: %v", err)
	} else if err := r.task.Resume(e.ctx); err != nil {
		t.Errorf("resume: %v", err)
	}
	limit := int64(64 << 20)
	if err := r.task.Update(e.ctx, client.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Errorf("update: %v", err)
	}
	r.kill(syscall.SIGKILL)
	if code := r.wait(time.Minute); code != 137 {
		t.Errorf("exit code = %d, want 137", code)
	}
	r.delete()

	data, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	bundle := e.bundleDir(r.id)
	var verbs []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		verb, cwd, _ := strings.Cut(line, " ")
		verbs = append(verbs, verb)
		if cwd != bundle {
			t.Errorf("runtime %s ran in %q, want the bundle %s", verb, cwd, bundle)
		}
	}
	t.Logf("runtime calls: %q", verbs)
	// This shim starts, signals and deletes a plain container without the
	// runtime where it can (TestDirectStartDelete); creating it and
	// running an exec are always the runtime's.
	for _, want := range []string{"create", "exec"} {
		if !slices.Contains(verbs, want) {
			t.Errorf("runtime calls %q: no %s", verbs, want)
		}
	}
}
