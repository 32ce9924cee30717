package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
)

// engineEnv chooses the runtime engine of this shim's containers: unset
// or "runc" for the runc binary (the shim's default), "libcontainer" for
// the exec helper (ociruntime/engine.go). The engine goes in the TOML
// runtime options (`engine = "..."`), which the shim reads from
// runtimeoptions.v1.Options as it reads CRI's; the runc shim is never
// given it.
const engineEnv = "SHIM_TEST_ENGINE"

// execHelperName is the libcontainer engine's helper, installed beside
// the shim (ociruntime.ExecHelperName).
const execHelperName = "containerd-shim-sandbox-v2-exec"

// testEngine returns $SHIM_TEST_ENGINE, checked.
func testEngine() (string, error) {
	switch e := os.Getenv(engineEnv); e {
	case "", "runc", "libcontainer":
		return e, nil
	default:
		return "", fmt.Errorf("%s=%q: want runc, libcontainer or unset", engineEnv, e)
	}
}

// engineLine is the TOML line choosing $SHIM_TEST_ENGINE for this shim,
// or "" when it is unset or the runtime under test is the runc shim.
func engineLine(t testing.TB) string {
	t.Helper()
	e, err := testEngine()
	if err != nil {
		t.Fatal(err)
	}
	if e == "" || !isSandboxRuntime() {
		return ""
	}
	return fmt.Sprintf("engine = %q\n", e)
}

// runtimeOptions returns the runtime options a container of the suite is
// created with: runcRuntimeOptions, and with $SHIM_TEST_ENGINE set (this
// shim only) the same options as TOML with the engine's line.
func runtimeOptions(opts any) (any, error) {
	if _, ok := opts.(*runtimeoptions.Options); ok {
		// A test's own TOML options (TestExecEngines): as they are.
		return opts, nil
	}
	o, err := runcRuntimeOptions(opts)
	if err != nil {
		return nil, err
	}
	e, err := testEngine()
	if err != nil || e == "" || !isSandboxRuntime() {
		return o, err
	}
	return withEngine(o, e)
}

// withEngine returns opts (nil or runc's options) as TOML runtime options
// that also choose engine.
func withEngine(opts any, engine string) (any, error) {
	var o *options.Options
	switch v := opts.(type) {
	case nil:
	case *options.Options:
		o = v
	default:
		return nil, fmt.Errorf("runtime options of type %T: cannot add %s=%s", opts, engineEnv, engine)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "engine = %q\n", engine)
	if o != nil {
		for _, kv := range []struct {
			key string
			val string
		}{{"BinaryName", o.BinaryName}, {"Root", o.Root}, {"ShimCgroup", o.ShimCgroup},
			{"CriuImagePath", o.CriuImagePath}, {"CriuWorkPath", o.CriuWorkPath}} {
			if kv.val != "" {
				fmt.Fprintf(&b, "%s = %q\n", kv.key, kv.val)
			}
		}
		for _, kv := range []struct {
			key string
			val bool
		}{{"SystemdCgroup", o.SystemdCgroup}, {"NoPivotRoot", o.NoPivotRoot}, {"NoNewKeyring", o.NoNewKeyring}} {
			if kv.val {
				fmt.Fprintf(&b, "%s = true\n", kv.key)
			}
		}
		if o.IoUid != 0 {
			fmt.Fprintf(&b, "IoUid = %d\n", o.IoUid)
		}
		if o.IoGid != 0 {
			fmt.Fprintf(&b, "IoGid = %d\n", o.IoGid)
		}
	}
	return &runtimeoptions.Options{ConfigBody: []byte(b.String())}, nil
}

// installExecHelper puts the exec helper built beside shim (make build
// makes bin/containerd-shim-sandbox-v2-exec) into bin, where the shim
// looks for it, behind a wrapper that counts its runs in calls and execs
// it (so libcontainer's init is still a sealed copy of the helper, which
// is then /proc/self/exe). Without a built helper nothing is installed,
// and only the libcontainer engine's tests fail, saying so.
func installExecHelper(shim, bin string) error {
	src := filepath.Join(filepath.Dir(shim), execHelperName)
	if _, err := os.Stat(src); err != nil {
		return nil
	}
	real := filepath.Join(bin, execHelperName+".real")
	if err := copyExecutable(src, real); err != nil {
		return err
	}
	wrapper := fmt.Sprintf("#!/bin/sh\necho x >>%s\nexec %s \"$@\"\n", helperCalls(bin), real)
	return os.WriteFile(filepath.Join(bin, execHelperName), []byte(wrapper), 0o755)
}

// helperCalls is the file that counts the helper's runs under bin.
func helperCalls(bin string) string { return filepath.Join(filepath.Dir(bin), "exec-helper.calls") }

// helperRuns returns how many times the daemon's shims ran the helper.
func helperRuns(t testing.TB, d *daemon) int {
	t.Helper()
	if _, err := os.Stat(filepath.Join(d.bin, execHelperName)); err != nil {
		t.Fatalf("no exec helper installed beside the shim in %s: build it (make build makes bin/%s)", d.bin, execHelperName)
	}
	data, err := os.ReadFile(helperCalls(d.bin))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("x\n"))
}

// withEngineOption adds $SHIM_TEST_ENGINE's line to the options section
// of a shipped 2.x runtime table for this shim (read from path), after
// its SystemdCgroup line: containerd 2.x passes the section to the shim
// as TOML. containerd 1.6 and the drop-in tables (runc's options
// protobuf) cannot carry the key; their CRI lanes run the runc engine.
func withEngineOption(path, table string) (string, error) {
	e, err := testEngine()
	if err != nil || e == "" {
		return table, err
	}
	const anchor = "    SystemdCgroup = false\n"
	if n := strings.Count(table, anchor); n != 1 {
		return "", fmt.Errorf("%s: %d times %q, want exactly one", path, n, anchor)
	}
	return strings.Replace(table, anchor, anchor+fmt.Sprintf("    engine = %q\n", e), 1), nil
}

// helperRunsIfEngine returns the helper's runs in e's daemon when the CRI
// lane carries $SHIM_TEST_ENGINE=libcontainer (this shim's own 2.x
// table, withEngineOption), else -1.
func helperRunsIfEngine(t *testing.T, e *criEnv) int {
	t.Helper()
	eng, err := testEngine()
	if err != nil {
		t.Fatal(err)
	}
	mode, err := dropInMode()
	if err != nil {
		t.Fatal(err)
	}
	if eng != "libcontainer" || e.d.runtimeType != sandboxRuntime || mode != noDropIn || defaultDaemonVersion(t).legacy() {
		return -1
	}
	return helperRuns(t, e.d.daemon)
}
