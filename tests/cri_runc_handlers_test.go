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

// runcHandlerName is the CRI handler criConfig adds for runc version:
// a RuntimeClass handler is a DNS label, so no dots and no build suffix;
// Debian's "1.1.5+ds1" is named by its release, "runc-1-1-5".
func runcHandlerName(version string) string {
	release, _, _ := strings.Cut(version, "+")
	return "runc-" + strings.ReplaceAll(release, ".", "-")
}

// criRuntimesKey is where a config of v's schema keeps the CRI runtime
// tables, below [plugins].
func criRuntimesKey(v daemonVersion) string {
	if v.legacy() {
		return "io.containerd.grpc.v1.cri"
	}
	return "io.containerd.cri.v1.runtime"
}

// addRuncHandlers parses snippet (the shipped runtime table as rendered
// for v's schema: exactly one CRI runtime table) and returns a clone of
// that table per runc of runcs, to append to the config: named by
// runcHandlerName, its BinaryName naming that runc. The clone of this
// shim's own table (its runtime_type io.containerd.sandbox.v2) takes
// the drop-in form instead: runtime_type io.containerd.runc.v2 and
// runtime_path naming shimPath. That is the form in which containerd can
// run a user namespace's containers on it: CRI hands the container's IO
// to the mapped root through runc options (client.WithUIDOwner), which
// it can build only for io.containerd.runc.v2; for any other type with
// an options table, StartContainer fails before the shim is asked (see
// TestCRIUsernsShippedHandler).
//
// The values are marshalled by go-toml, table by table under headers
// written here, so that the shipped table above them stays verbatim in
// the config (TestCRIConfigFiles).
func addRuncHandlers(snippet string, v daemonVersion, runcs []matrixRunc, shimPath string) (string, error) {
	var doc map[string]any
	if err := toml.Unmarshal([]byte(snippet), &doc); err != nil {
		return "", fmt.Errorf("parse the shipped runtime table: %w", err)
	}
	key := criRuntimesKey(v)
	runtimes, ok := tomlTable(doc, "plugins", key, "containerd", "runtimes")
	if !ok || len(runtimes) != 1 {
		return "", fmt.Errorf("CRI runtime tables %v: want exactly one (the shipped one) to clone", slices.Sorted(maps.Keys(runtimes)))
	}
	var base map[string]any
	for _, t := range runtimes {
		if base, ok = t.(map[string]any); !ok {
			return "", errors.New("the shipped CRI runtime entry is not a table")
		}
	}
	opts, ok := base["options"].(map[string]any)
	if !ok {
		return "", errors.New("the shipped CRI runtime table has no options table to set BinaryName in")
	}
	var b strings.Builder
	for _, r := range runcs {
		name := runcHandlerName(r.version)
		if _, dup := runtimes[name]; dup {
			return "", fmt.Errorf("handler %s: already configured", name)
		}
		table := maps.Clone(base)
		delete(table, "options")
		if table["runtime_type"] == sandboxRuntime {
			table["runtime_type"] = runcRuntime
			table["runtime_path"] = shimPath
		}
		options := maps.Clone(opts)
		options["BinaryName"] = r.path
		header := fmt.Sprintf("plugins.%q.containerd.runtimes.%s", key, name)
		fmt.Fprintf(&b, "\n# ---- handler %s: the shipped table with runc %s (cri_userns_test.go) ----\n", name, r.version)
		for _, part := range []struct {
			header string
			values map[string]any
		}{{header, table}, {header + ".options", options}} {
			body, err := flatTOML(part.values)
			if err != nil {
				return "", fmt.Errorf("handler %s: %w", name, err)
			}
			fmt.Fprintf(&b, "[%s]\n%s", part.header, body)
		}
	}
	return b.String(), nil
}

// flatTOML marshals a table of plain values; a nested table would be
// marshalled under a header of its own, relative to nothing, so it is
// refused.
func flatTOML(values map[string]any) (string, error) {
	for k, v := range values {
		if _, nested := v.(map[string]any); nested {
			return "", fmt.Errorf("key %s is a table: only plain values are cloned", k)
		}
	}
	out, err := toml.Marshal(values)
	return string(out), err
}

// withoutOptions returns the CRI runtime tables in snippet (a config of
// v's schema) with their options tables left out.
func withoutOptions(snippet string, v daemonVersion) (string, error) {
	var doc map[string]any
	if err := toml.Unmarshal([]byte(snippet), &doc); err != nil {
		return "", fmt.Errorf("parse a shipped runtime table: %w", err)
	}
	key := criRuntimesKey(v)
	runtimes, ok := tomlTable(doc, "plugins", key, "containerd", "runtimes")
	if !ok || len(runtimes) == 0 {
		return "", errors.New("the shipped snippet has no CRI runtime table")
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(runtimes)) {
		t, ok := runtimes[name].(map[string]any)
		if !ok {
			return "", fmt.Errorf("CRI runtime %s is not a table", name)
		}
		t = maps.Clone(t)
		delete(t, "options")
		body, err := flatTOML(t)
		if err != nil {
			return "", fmt.Errorf("CRI runtime %s: %w", name, err)
		}
		fmt.Fprintf(&b, "[plugins.%q.containerd.runtimes.%s]\n%s", key, name, body)
	}
	return b.String(), nil
}

// tomlTable walks doc down keys, each a table.
func tomlTable(doc map[string]any, keys ...string) (map[string]any, bool) {
	t := doc
	for _, k := range keys {
		next, ok := t[k].(map[string]any)
		if !ok {
			return nil, false
		}
		t = next
	}
	return t, true
}

// TestCRIRuncHandlerTables (no root needed): each runc gets a clone of
// the shipped table under its own handler, with its BinaryName and the
// shipped table's other options; the runc shim's clones keep its
// runtime_type, this shim's take the drop-in form; the drop-in table's
// clones keep its runtime_type and runtime_path.
func TestCRIRuncHandlerTables(t *testing.T) {
	runcs := []matrixRunc{{"1.1.5", "/usr/sbin/runc"}, {"1.5.3", "/opt/x/runc-v1.5.3/runc"}}
	const shim = "/d/bin/containerd-shim-sandbox-v2"
	for _, tc := range []struct {
		name, file, runtime    string
		base                   string
		wantType, wantPath     string
		wantBaseType, basePath string
	}{
		{"this shim", "containerd-2.x.toml", sandboxRuntime, "sandbox", runcRuntime, shim, sandboxRuntime, ""},
		{"runc shim", "containerd-2.x.toml", runcRuntime, "sandbox", runcRuntime, "", runcRuntime, ""},
		{"drop-in", "containerd-2.x-dropin.toml", runcRuntime, "runc", runcRuntime, "/usr/local/bin/containerd-shim-sandbox-v2", runcRuntime, "/usr/local/bin/containerd-shim-sandbox-v2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snippet, err := os.ReadFile(filepath.Join(criConfigDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			table := strings.Replace(string(snippet), shippedRuntimeType, fmt.Sprintf("runtime_type = %q", tc.runtime), 1)
			extra, err := addRuncHandlers(table, daemonVersion{name: "2.4.2", configVersion: 3}, runcs, shim)
			if err != nil {
				t.Fatal(err)
			}
			// As criConfig renders it: other CRI settings, the shipped
			// table verbatim, then the clones.
			out := "version = 3\n[plugins]\n  [plugins.\"io.containerd.cri.v1.runtime\"]\n    restrict_oom_score_adj = true\n" + table + extra
			rts := parseRuntimeTables(t, out)
			base, ok := rts[tc.base]
			if !ok || base.RuntimeType != tc.wantBaseType || base.RuntimePath != tc.basePath || base.Options["BinaryName"] != "runc" {
				t.Fatalf("the shipped handler %s after the clones: %+v", tc.base, base)
			}
			if len(rts) != 1+len(runcs) {
				t.Errorf("handlers %v, want %s and one per runc", slices.Sorted(maps.Keys(rts)), tc.base)
			}
			for _, r := range runcs {
				rt, ok := rts[runcHandlerName(r.version)]
				if !ok {
					t.Errorf("no handler %s in\n%s", runcHandlerName(r.version), out)
					continue
				}
				wantOpts := maps.Clone(base.Options)
				wantOpts["BinaryName"] = r.path
				if rt.RuntimeType != tc.wantType || rt.RuntimePath != tc.wantPath || !maps.Equal(rt.Options, wantOpts) {
					t.Errorf("handler %s: runtime_type %q runtime_path %q options %v; want %q, %q, %v",
						runcHandlerName(r.version), rt.RuntimeType, rt.RuntimePath, rt.Options, tc.wantType, tc.wantPath, wantOpts)
				}
			}
		})
	}
	if _, err := addRuncHandlers("", daemonVersion{configVersion: 3}, runcs, shim); err == nil {
		t.Error("no runtime table to clone: no error")
	}
}

// pathRunc returns the version of the runc on PATH, the shipped
// handler's (BinaryName "runc"), and whether it predates idmapped mounts
// (1.1 or older).
func pathRunc(t *testing.T) (string, bool) {
	t.Helper()
	r, err := lookPathRunc()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := parseVersion(r.version)
	return r.version, versionLess(n, [3]int{1, 2, 0})
}

// lookPathRunc finds the runc on PATH and its version.
func lookPathRunc() (matrixRunc, error) {
	path, err := exec.LookPath("runc")
	if err != nil {
		return matrixRunc{}, err
	}
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return matrixRunc{}, fmt.Errorf("%s --version: %w", path, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimPrefix(line, "runc version ")
	if _, ok := parseVersion(v); !ok {
		return matrixRunc{}, fmt.Errorf("%s --version: first line %q, want runc version X.Y.Z", path, line)
	}
	return matrixRunc{version: v, path: path}, nil
}

// handlerRuncs are the runcs criConfig gives a handler each: the matrix's
// (1.2 and later) and, when it is older, the one on PATH, so that a user
// namespace pod on a runc without idmapped mounts is tried in the form
// containerd can run it in (TestCRIUsernsOldRunc).
func handlerRuncs() []matrixRunc {
	runcs := matrixRuncs()
	if r, err := lookPathRunc(); err == nil {
		if n, _ := parseVersion(r.version); versionLess(n, [3]int{1, 2, 0}) {
			runcs = append([]matrixRunc{r}, runcs...)
		}
	}
	return runcs
}

// parseRuntimeTables parses a config's CRI runtime tables (2.x schema).
func parseRuntimeTables(t *testing.T, config string) map[string]criRuntimeTable {
	t.Helper()
	var cfg struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]criRuntimeTable `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("parse: %v\n%s", err, config)
	}
	return cfg.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes
}

// criRuntimeTable is one CRI runtime table.
type criRuntimeTable struct {
	RuntimeType string         `toml:"runtime_type"`
	RuntimePath string         `toml:"runtime_path"`
	Options     map[string]any `toml:"options"`
}
