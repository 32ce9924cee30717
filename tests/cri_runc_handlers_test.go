package tests

// The CRI daemon's runtime handlers for the runcs of the runc matrix: on
// 2.x, criConfig adds a clone of the shipped runtime table per runc of
// 1.2 and later (install-deps.sh builds them), its BinaryName naming
// that runc, so that pods can use what the shipped handler's runc (the
// one on PATH, Debian's 1.1.5) lacks: user namespaces with idmapped
// mounts (cri_userns_test.go).

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// matrixRunc is a runc that install-deps.sh built for the runc matrix,
// 1.2 or later: the first series with idmapped mounts (runc features
// reports mountExtensions.idmap.enabled).
type matrixRunc struct {
	version string // "1.5.3"
	path    string // $SHIMTEST_ROOT/runc-v1.5.3/runc
}

// matrixRuncs returns the executables $SHIMTEST_ROOT/runc-v*/runc whose
// version (from the directory name, which install-deps.sh checked
// against `runc --version`) is 1.2 or later, oldest first.
func matrixRuncs() []matrixRunc {
	paths, _ := filepath.Glob(filepath.Join(shimtestRoot(), "runc-v*", "runc"))
	var out []matrixRunc
	for _, p := range paths {
		v := strings.TrimPrefix(filepath.Base(filepath.Dir(p)), "runc-v")
		n, ok := parseVersion(v)
		if !ok || versionLess(n, [3]int{1, 2, 0}) {
			continue
		}
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			continue
		}
		out = append(out, matrixRunc{version: v, path: p})
	}
	slices.SortFunc(out, func(a, b matrixRunc) int {
		x, _ := parseVersion(a.version)
		y, _ := parseVersion(b.version)
		return slices.Compare(x[:], y[:])
	})
	return out
}

// parseVersion parses "1.2.8" (or "1.1.5+ds1") into its three numbers.
func parseVersion(s string) ([3]int, bool) {
	var n [3]int
	s, _, _ = strings.Cut(s, "+")
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return n, false
	}
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return n, false
		}
		n[i] = v
	}
	return n, true
}

func versionLess(a, b [3]int) bool { return slices.Compare(a[:], b[:]) < 0 }

// runcHandlerName is the CRI handler of the table base cloned for runc
// version: a RuntimeClass handler is a DNS label, so no dots.
func runcHandlerName(base, version string) string {
	return base + "-runc-" + strings.ReplaceAll(version, ".", "-")
}

var (
	// runtimeTableHeader matches the header lines of a runtime table and
	// of its options table; group 2 is the handler.
	runtimeTableHeader = regexp.MustCompile(`(?m)^(\s*\[.*\.runtimes\.)([A-Za-z0-9_-]+)((?:\.options)?\])`)
	// binaryNameLine matches the BinaryName option; group 1 is its indent.
	binaryNameLine = regexp.MustCompile(`(?m)^(\s*)BinaryName\s*=.*$`)
	// commentLine matches a whole-line comment: the shipped one names its
	// handler, which a clone's would not be.
	commentLine = regexp.MustCompile(`(?m)^\s*#.*\n`)
)

// runcHandlerTables returns, for each runc of runcs, a copy of snippet (a
// runtime table as criConfig renders it) whose handler is renamed by
// runcHandlerName and whose BinaryName names that runc; everything else
// (runtime_type, the other options) stays as rendered, but comments.
func runcHandlerTables(snippet string, runcs []matrixRunc) (string, error) {
	headers := runtimeTableHeader.FindAllStringSubmatch(snippet, -1)
	if len(headers) == 0 {
		return "", errors.New("no [...runtimes.<handler>] table to clone for the runc handlers")
	}
	base := headers[0][2]
	for _, h := range headers {
		if h[2] != base {
			return "", fmt.Errorf("runtime tables of handlers %q and %q: want one handler to clone", base, h[2])
		}
	}
	if n := len(binaryNameLine.FindAllString(snippet, -1)); n != 1 {
		return "", fmt.Errorf("%d BinaryName lines in the %q table, want exactly one", n, base)
	}
	var b strings.Builder
	for _, r := range runcs {
		name := runcHandlerName(base, r.version)
		table := runtimeTableHeader.ReplaceAllStringFunc(commentLine.ReplaceAllString(snippet, ""), func(h string) string {
			m := runtimeTableHeader.FindStringSubmatch(h)
			return m[1] + name + m[3]
		})
		table = binaryNameLine.ReplaceAllStringFunc(table, func(l string) string {
			indent := binaryNameLine.FindStringSubmatch(l)[1]
			return fmt.Sprintf("%sBinaryName = %q", indent, r.path)
		})
		fmt.Fprintf(&b, "\n# ---- handler %s: the %s table with runc %s (cri_userns_test.go) ----\n", name, base, r.version)
		b.WriteString(table)
	}
	return b.String(), nil
}

// TestCRIRuncHandlerTables (no root needed): each runc gets a clone of
// the shipped table under its own handler, with its BinaryName, and the
// same runtime_type and other options; the result parses with the
// shipped table.
func TestCRIRuncHandlerTables(t *testing.T) {
	snippet, err := runtimeSnippet(filepath.Join(criConfigDir, "containerd-2.x.toml"), runtimeUnderTest())
	if err != nil {
		t.Fatal(err)
	}
	runcs := []matrixRunc{{"1.2.8", "/opt/x/runc-v1.2.8/runc"}, {"1.5.3", "/opt/x/runc-v1.5.3/runc"}}
	extra, err := runcHandlerTables(snippet, runcs)
	if err != nil {
		t.Fatal(err)
	}
	rts := parseRuntimeTables(t, snippet+extra)
	base := rts["sandbox"]
	if base.Options["BinaryName"] != "runc" {
		t.Fatalf("the shipped handler sandbox: options %v, want BinaryName runc", base.Options)
	}
	want := map[string]string{
		"sandbox":            "runc",
		"sandbox-runc-1-2-8": "/opt/x/runc-v1.2.8/runc",
		"sandbox-runc-1-5-3": "/opt/x/runc-v1.5.3/runc",
	}
	if len(rts) != len(want) {
		t.Errorf("handlers %v, want %v", slices.Sorted(maps.Keys(rts)), slices.Sorted(maps.Keys(want)))
	}
	for name, bin := range want {
		rt, ok := rts[name]
		if !ok {
			t.Errorf("no handler %s in\n%s", name, snippet+extra)
			continue
		}
		// The clone is the shipped table but for BinaryName.
		wantOpts := maps.Clone(base.Options)
		wantOpts["BinaryName"] = bin
		if rt.RuntimeType != base.RuntimeType || rt.RuntimePath != base.RuntimePath || !maps.Equal(rt.Options, wantOpts) {
			t.Errorf("handler %s: runtime_type %q runtime_path %q options %v; want %q, %q, %v",
				name, rt.RuntimeType, rt.RuntimePath, rt.Options, base.RuntimeType, base.RuntimePath, wantOpts)
		}
	}
	if got, err := runcHandlerTables(snippet, nil); err != nil || got != "" {
		t.Errorf("no runcs: %q, %v; want no tables", got, err)
	}
	two := snippet + strings.ReplaceAll(snippet, "runtimes.sandbox", "runtimes.other")
	if _, err := runcHandlerTables(two, runcs); err == nil {
		t.Errorf("two handlers to clone: no error")
	}
}

// pathRunc returns the version of the runc on PATH, the shipped
// handler's (BinaryName "runc"), and whether it predates idmapped mounts
// (1.1 or older).
func pathRunc(t *testing.T) (string, bool) {
	t.Helper()
	out, err := exec.Command("runc", "--version").Output()
	if err != nil {
		t.Fatalf("runc --version: %v", err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimPrefix(line, "runc version ")
	n, ok := parseVersion(v)
	if !ok {
		t.Fatalf("runc --version: first line %q, want runc version X.Y.Z", line)
	}
	return v, versionLess(n, [3]int{1, 2, 0})
}

// parseRuntimeTables parses a config's CRI runtime tables (2.x schema).
func parseRuntimeTables(t *testing.T, config string) map[string]runtimeTable {
	t.Helper()
	var cfg struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]runtimeTable `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("parse: %v\n%s", err, config)
	}
	return cfg.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes
}

// runtimeTable is one CRI runtime table.
type runtimeTable struct {
	RuntimeType string         `toml:"runtime_type"`
	RuntimePath string         `toml:"runtime_path"`
	Options     map[string]any `toml:"options"`
}
