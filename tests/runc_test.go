package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/proto"
)

// runcEnv names the OCI runtime binary every container of the suite uses,
// under both shims: run-tests.sh's runc matrix sets it to each runc built
// by install-deps.sh. Unset, the suite uses the runc on PATH and passes no
// BinaryName, as a user with the default configuration does.
const runcEnv = "SHIM_TEST_RUNC"

// runcChoice is the runc of this run, resolved once by resolveRunc.
var runcChoice struct {
	once     sync.Once
	selected bool   // SHIM_TEST_RUNC is set: containers name it as BinaryName
	path     string // absolute
	version  string // the first line of its --version, e.g. "runc version 1.1.5"
	err      error
}

// resolveRunc finds the runc of this run, $SHIM_TEST_RUNC or else the
// runc on PATH, and asks it its version. It is the only reader of
// SHIM_TEST_RUNC.
func resolveRunc() (selected bool, path, version string, err error) {
	runcChoice.once.Do(func() {
		p := os.Getenv(runcEnv)
		runcChoice.selected = p != ""
		if p == "" {
			var err error
			if p, err = exec.LookPath("runc"); err != nil {
				runcChoice.err = fmt.Errorf("runc not on PATH (%s unset): %w", runcEnv, err)
				return
			}
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			runcChoice.err = fmt.Errorf("%s=%s: %w", runcEnv, p, err)
			return
		}
		out, err := exec.Command(abs, "--version").Output()
		if err != nil {
			runcChoice.err = fmt.Errorf("%s --version: %w", abs, err)
			return
		}
		line, _, _ := strings.Cut(string(out), "\n")
		if !strings.HasPrefix(line, "runc version ") {
			runcChoice.err = fmt.Errorf("%s --version: first line %q, want runc version ...", abs, line)
			return
		}
		runcChoice.path, runcChoice.version = abs, line
	})
	return runcChoice.selected, runcChoice.path, runcChoice.version, runcChoice.err
}

// runcUnderTest returns the absolute path of the runc every container of
// the run uses; wrapper runtimes exec it. It fails t when that runc
// cannot be run.
func runcUnderTest(t testing.TB) string {
	t.Helper()
	_, p, _, err := resolveRunc()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// describeRunc is the line TestMain prints so that every run's output
// says which runc ran its containers.
func describeRunc() string {
	selected, p, v, err := resolveRunc()
	if err != nil {
		return "runc under test: " + err.Error()
	}
	how := "the runc on PATH, containers name no BinaryName"
	if selected {
		how = runcEnv + ", every container's BinaryName"
	}
	return fmt.Sprintf("runc under test: %s (%s; %s)", p, v, how)
}

// runcRuntimeOptions returns the runtime options a container of the suite is
// created with, before the engine (engine_test.go): opts, with BinaryName naming $SHIM_TEST_RUNC when that is
// set and opts names no runtime of its own (a test's wrapper or crun is
// kept: the wrappers exec runcUnderTest themselves). Unset, opts is
// returned as it is, nil included.
func runcRuntimeOptions(opts any) (any, error) {
	selected, bin, _, err := resolveRunc()
	if err != nil {
		return nil, err
	}
	if !selected {
		return opts, nil
	}
	switch o := opts.(type) {
	case nil:
		return &options.Options{BinaryName: bin}, nil
	case *options.Options:
		if o == nil {
			return &options.Options{BinaryName: bin}, nil
		}
		if o.BinaryName != "" {
			return o, nil
		}
		c := proto.Clone(o).(*options.Options)
		c.BinaryName = bin
		return c, nil
	}
	return nil, fmt.Errorf("runtime options of type %T: cannot give them %s=%s as BinaryName", opts, runcEnv, bin)
}

// runtimeOptionsFor is runtimeOptions, failing t on error.
func runtimeOptionsFor(t testing.TB, opts any) any {
	t.Helper()
	o, err := runtimeOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// ctrRuntimeArgs are the `ctr run` flags that select the runtime under
// test and, when $SHIM_TEST_RUNC is set, its runc. ctr passes
// --runc-binary only to io.containerd.runc.v2 (it refuses the flag for
// any other runtime name); for this shim the binary goes in a runtime
// config file (--runtime-config-path: runtimeoptions.v1.Options with
// ConfigPath, whose TOML the shim reads as CRI's options) in t's
// temporary directory.
func ctrRuntimeArgs(t testing.TB) []string {
	t.Helper()
	args := []string{"--runtime", runtimeUnderTest()}
	selected, bin, _, err := resolveRunc()
	if err != nil {
		t.Fatal(err)
	}
	engine := engineLine(t)
	if !selected && engine == "" {
		return args
	}
	if !isSandboxRuntime() {
		return append(args, "--runc-binary", bin)
	}
	var toml string
	if selected {
		toml = fmt.Sprintf("BinaryName = %q\n", bin)
	}
	cfg := filepath.Join(t.TempDir(), "runtime-options.toml")
	if err := os.WriteFile(cfg, []byte(toml+engine), 0o644); err != nil {
		t.Fatal(err)
	}
	return append(args, "--runtime-config-path", cfg)
}
