package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The suite's parameters, all from the environment so that `go test
// ./tests/...` works with no flags:
//
//	SHIM_TEST_RUNTIME     runtime under test (default io.containerd.sandbox.v2;
//	                      io.containerd.runc.v2 validates the suite itself)
//	SHIM_TEST_CONTAINERD  daemon for the tests that run against one daemon:
//	                      2.4.2 (default), 2.2 (or 2.2.x, 2.2.9), 1.6
//	SHIM_TEST_SHIM        shim binary to test; default bin/containerd-shim-sandbox-v2
//	                      when it is newer than the sources, else built by the suite
//	SHIM_TEST_DROPIN      the CRI suite installs this shim in the runc shim's place:
//	                      runtime_path or PATH (dropIn); unset: under its own type
//	SHIMTEST_ROOT         where install-deps.sh put containerd (default /opt/shimtest)
const (
	sandboxRuntime = "io.containerd.sandbox.v2"
	runcRuntime    = "io.containerd.runc.v2"

	// podAnnotation groups containers into one shim (what the CRI plugin
	// sets on every container of a pod).
	podAnnotation = "io.kubernetes.cri.sandbox-id"

	imageRef    = "docker.io/library/busybox:shimtest"
	snapshotter = "overlayfs"
)

// runtimeUnderTest returns the runtime name containers are created with.
func runtimeUnderTest() string {
	if r := os.Getenv("SHIM_TEST_RUNTIME"); r != "" {
		return r
	}
	return sandboxRuntime
}

// isSandboxRuntime reports whether the runtime under test is this project's
// shim (as opposed to the upstream runc shim used to validate the suite).
func isSandboxRuntime() bool { return runtimeUnderTest() == sandboxRuntime }

// dropIn is how the CRI suite installs this shim in place of the runc
// shim, as README "Drop-in for an existing node" tells an operator to:
// SHIM_TEST_DROPIN.
type dropIn string

const (
	// noDropIn: the shim serves its own runtime type,
	// io.containerd.sandbox.v2 (tests/cri/containerd-{2.x,1.6}.toml).
	noDropIn dropIn = ""
	// dropInRuntimePath: the default handler's table (runc) has
	// runtime_type io.containerd.runc.v2 and runtime_path naming this
	// shim (tests/cri/containerd-{2.x,1.6}-dropin.toml).
	dropInRuntimePath dropIn = "runtime_path"
	// dropInPATH: this shim is containerd-shim-runc-v2 in the bin
	// directory first on containerd's PATH, where the runc shim is not;
	// the table is the drop-in one without its runtime_path line.
	dropInPATH dropIn = "PATH"
)

// dropInMode returns SHIM_TEST_DROPIN, which applies to this shim only.
func dropInMode() (dropIn, error) {
	m := dropIn(os.Getenv("SHIM_TEST_DROPIN"))
	switch m {
	case noDropIn:
		return m, nil
	case dropInRuntimePath, dropInPATH:
		if !isSandboxRuntime() {
			return m, fmt.Errorf("SHIM_TEST_DROPIN=%s: installs %s in the runc shim's place; SHIM_TEST_RUNTIME is %s", m, sandboxRuntime, runtimeUnderTest())
		}
		return m, nil
	}
	return m, fmt.Errorf("SHIM_TEST_DROPIN=%q: want %q, %q or unset", m, dropInRuntimePath, dropInPATH)
}

// shimBinaryName is the binary containerd looks up for a runtime name, by
// containerd's rule: io.containerd.NAME.VERSION -> containerd-shim-NAME-VERSION.
func shimBinaryName(runtime string) string {
	parts := strings.Split(runtime, ".")
	if len(parts) < 2 {
		return "containerd-shim-" + runtime
	}
	return "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
}

// daemonVersion is one containerd generation the suite runs against.
type daemonVersion struct {
	name          string // "2.4.2", "2.2", "1.6": what tests and env vars call it
	dir           string // holds containerd, ctr and containerd-shim-runc-v2
	configVersion int    // config.toml schema: 2 for 1.6, 3 for 2.x
}

func (v daemonVersion) containerd() string { return filepath.Join(v.dir, "containerd") }
func (v daemonVersion) ctr() string        { return filepath.Join(v.dir, "ctr") }
func (v daemonVersion) runcShim() string   { return filepath.Join(v.dir, "containerd-shim-runc-v2") }

// legacy reports whether the daemon predates containerd 2.0.
func (v daemonVersion) legacy() bool { return v.configVersion < 3 }

// missing returns why the version cannot run here, or "".
func (v daemonVersion) missing() string {
	for _, p := range []string{v.containerd(), v.ctr(), v.runcShim()} {
		if _, err := os.Stat(p); err != nil {
			return "containerd " + v.name + " not installed (" + p + " missing; run tests/install-deps.sh)"
		}
	}
	return ""
}

func shimtestRoot() string {
	if r := os.Getenv("SHIMTEST_ROOT"); r != "" {
		return r
	}
	return "/opt/shimtest"
}

// daemonVersions lists the generations the lifecycle test covers, newest
// first. The 2.2 entry is the newest containerd-v2.2.N install-deps.sh made.
func daemonVersions() []daemonVersion {
	root := shimtestRoot()
	return []daemonVersion{
		{name: "2.4.2", dir: filepath.Join(root, "containerd-v2.4.2"), configVersion: 3},
		{name: "2.2", dir: newestPatch(root, "containerd-v2.2."), configVersion: 3},
		{name: "1.6", dir: "/usr/bin", configVersion: 2},
	}
}

// newestPatch returns the directory root/prefixN with the highest N, or
// root/prefix"x" (which does not exist) when there is none.
func newestPatch(root, prefix string) string {
	matches, _ := filepath.Glob(filepath.Join(root, prefix+"*"))
	patch := func(p string) int {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), prefix))
		if err != nil {
			return -1
		}
		return n
	}
	sort.Slice(matches, func(i, j int) bool { return patch(matches[i]) > patch(matches[j]) })
	if len(matches) == 0 || patch(matches[0]) < 0 {
		return filepath.Join(root, prefix+"x")
	}
	return matches[0]
}

// defaultDaemonVersion is the daemon for tests that run against one:
// SHIM_TEST_CONTAINERD, matched on its major.minor, default 2.4.2.
func defaultDaemonVersion(t *testing.T) daemonVersion {
	t.Helper()
	want := os.Getenv("SHIM_TEST_CONTAINERD")
	if want == "" {
		want = "2.4.2"
	}
	for _, v := range daemonVersions() {
		if majorMinor(v.name) == majorMinor(strings.TrimPrefix(want, "v")) {
			return v
		}
	}
	t.Fatalf("SHIM_TEST_CONTAINERD=%q: want one of 2.4.2, 2.2.x, 1.6", want)
	return daemonVersion{}
}

func majorMinor(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	return parts[0] + "." + parts[1]
}
