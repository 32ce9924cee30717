package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shimSourceDirs returns the directories of the project's packages the
// shim binary is built from, as go list says, so that a new package
// cannot be forgotten.
func shimSourceDirs(repo string) ([]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.Dir}}", "./cmd/containerd-shim-sandbox-v2")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list the shim's packages: %w", err)
	}
	var dirs []string
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, repo+string(filepath.Separator)) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) == 0 {
		return nil, fmt.Errorf("go list named no package of %s", repo)
	}
	return dirs, nil
}

// shimUnderTest returns the shim binary to install as
// containerd-shim-sandbox-v2, or "" when the runtime under test is not
// this project's shim. In order: $SHIM_TEST_SHIM; bin/containerd-shim-sandbox-v2
// (what `make` builds) when it is newer than every source file; else a
// fresh `CGO_ENABLED=0 go build` into a temp dir, once per run.
func shimUnderTest(t *testing.T) string {
	t.Helper()
	if !isSandboxRuntime() {
		return ""
	}
	suite.shimOnce.Do(func() { suite.shim, suite.shimErr = findOrBuildShim() })
	if suite.shimErr != nil {
		t.Fatal(suite.shimErr)
	}
	return suite.shim
}

func findOrBuildShim() (string, error) {
	if p := os.Getenv("SHIM_TEST_SHIM"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("SHIM_TEST_SHIM: %w", err)
		}
		return abs, nil
	}
	// go test runs in the package directory: the module root is its parent.
	repo, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	name := shimBinaryName(sandboxRuntime)
	made := filepath.Join(repo, "bin", name)
	if fi, err := os.Stat(made); err == nil {
		newest, err := newestSource(repo)
		if err != nil {
			return "", err
		}
		if !newest.After(fi.ModTime()) {
			return made, nil
		}
	}
	dir, err := os.MkdirTemp("", "shimtest-build-")
	if err != nil {
		return "", err
	}
	suite.buildDir = dir
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the shim (%s): %w\n%s", strings.Join(cmd.Args, " "), err, msg)
	}
	// The libcontainer engine's helper beside it, as the Makefile builds
	// it (cgo, static, libseccomp).
	cmd = exec.Command("go", "build", "-tags", "seccomp netgo osusergo",
		"-ldflags", "-s -w -linkmode external -extldflags -static",
		"-o", filepath.Join(dir, execHelperName), "./cmd/"+execHelperName)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the exec helper (%s): %w\n%s", strings.Join(cmd.Args, " "), err, msg)
	}
	return out, nil
}

// newestSource returns the latest modification time among go.mod, go.sum
// and the non-test Go files of the shim's packages.
func newestSource(repo string) (time.Time, error) {
	var newest time.Time
	note := func(path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := note(filepath.Join(repo, f)); err != nil {
			return newest, err
		}
	}
	dirs, err := shimSourceDirs(repo)
	if err != nil {
		return newest, err
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return newest, err
		}
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			if err := note(filepath.Join(dir, name)); err != nil {
				return newest, err
			}
		}
	}
	return newest, nil
}
