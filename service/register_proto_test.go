package service

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// apiModule is the containerd module whose task protos the shim serves.
const apiModule = "github.com/containerd/containerd/api"

// The lines in which runtime/task/v2/shim.proto and v3/shim.proto may
// differ: the protobuf package (which is the ttrpc service name) and the
// Go package.
var (
	protoPackageLine   = regexp.MustCompile(`^package containerd\.task\.v[0-9]+;$`)
	protoGoPackageLine = regexp.MustCompile(`^option go_package = "github\.com/containerd/containerd/api/runtime/task/v[0-9]+;task";$`)
)

// taskProtoDiff compares two task shim.proto files with their package and
// go_package lines normalised and returns the lines that differ, as
// "line N: v2 ... / v3 ...", or none when the protocols are one.
func taskProtoDiff(v2, v3 []byte) []string {
	norm := func(data []byte) []string {
		lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
		for i, l := range lines {
			switch {
			case protoPackageLine.MatchString(l):
				lines[i] = "package containerd.task.vN;"
			case protoGoPackageLine.MatchString(l):
				lines[i] = `option go_package = "github.com/containerd/containerd/api/runtime/task/vN;task";`
			}
		}
		return lines
	}
	a, b := norm(v2), norm(v3)
	var diff []string
	for i := 0; i < max(len(a), len(b)); i++ {
		var la, lb string
		if i < len(a) {
			la = a[i]
		}
		if i < len(b) {
			lb = b[i]
		}
		if la != lb || (i >= len(a)) != (i >= len(b)) {
			diff = append(diff, fmt.Sprintf("line %d: v2 %q / v3 %q", i+1, la, lb))
		}
	}
	return diff
}

// apiModuleDir returns where the module cache holds the version of
// containerd's api module that go.mod selects.
func apiModuleDir(t *testing.T) string {
	t.Helper()
	// go test puts its own GOROOT/bin first on the test binary's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to find %s in the module cache: %v", apiModule, err)
	}
	cmd := exec.Command(goBin, "list", "-m", "-f", "{{.Version}} {{.Dir}}", apiModule)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v: %s", apiModule, err, stderr.String())
	}
	version, dir, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if dir == "" {
		t.Fatalf("%s %s is not in the module cache: run `go mod download` (part of the test setup)", apiModule, version)
	}
	return dir
}

// TestTaskV3ProtoIsV2: the shim serves containerd.task.v3 with the v2
// message types and handlers (register.go), which is right only while
// containerd's task v3 shim.proto is v2's under another package name. When
// a containerd api release changes v3 (a field, a message, an RPC), this
// fails, and v3 needs its own types.
func TestTaskV3ProtoIsV2(t *testing.T) {
	dir := apiModuleDir(t)
	read := func(v string) []byte {
		path := filepath.Join(dir, "runtime", "task", v, "shim.proto")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read containerd's task %s proto: %v (run `go mod download`, part of the test setup)", v, err)
		}
		return data
	}
	v2, v3 := read("v2"), read("v3")
	if diff := taskProtoDiff(v2, v3); len(diff) > 0 {
		const show = 20 // a line added shifts every line after it
		more := ""
		if len(diff) > show {
			more = fmt.Sprintf("\n... and %d more", len(diff)-show)
			diff = diff[:show]
		}
		t.Errorf("%s: runtime/task/v3/shim.proto differs from v2 beyond its package lines; task v3 can no longer be served with the v2 types:\n%s%s",
			dir, strings.Join(diff, "\n"), more)
	}
	// The two package lines are what the normalising hides; each file
	// must have them, or the comparison is not of the files it means.
	for v, data := range map[string][]byte{"v2": v2, "v3": v3} {
		want := "package containerd.task." + v + ";"
		if !bytes.Contains(data, []byte("\n"+want+"\n")) {
			t.Errorf("task %s proto has no line %q", v, want)
		}
	}
}

// TestTaskProtoDiff: the tripwire's comparison fails on a changed message
// body, an added RPC or line, and passes on the package lines alone.
func TestTaskProtoDiff(t *testing.T) {
	v2, err := os.ReadFile(filepath.Join(apiModuleDir(t), "runtime", "task", "v2", "shim.proto"))
	if err != nil {
		t.Fatalf("read containerd's task v2 proto: %v (run `go mod download`, part of the test setup)", err)
	}
	asV3 := func(s string) string {
		s = strings.Replace(s, "package containerd.task.v2;", "package containerd.task.v3;", 1)
		return strings.Replace(s, "api/runtime/task/v2;task", "api/runtime/task/v3;task", 1)
	}
	mutate := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("v2 proto has no %q to change", old)
			}
			return strings.Replace(asV3(s), old, new, 1)
		}
	}
	tests := []struct {
		name     string
		v3       func(string) string
		wantDiff bool
	}{
		{"identical", func(s string) string { return s }, false},
		{"package lines only", asV3, false},
		{"a field renamed", mutate("message KillRequest {\n  string id = 1;", "message KillRequest {\n  string container_id = 1;"), true},
		{"a field added", mutate("message KillRequest {\n", "message KillRequest {\n  bool force = 99;\n"), true},
		{"a field renumbered", mutate("message KillRequest {\n  string id = 1;", "message KillRequest {\n  string id = 9;"), true},
		{"an RPC added", mutate("service Task {\n", "service Task {\n  rpc Freeze(KillRequest) returns (google.protobuf.Empty);\n"), true},
		{"a line appended", func(s string) string { return asV3(s) + "message Extra {}\n" }, true},
		{"another package", func(s string) string {
			return strings.Replace(asV3(s), "package containerd.task.v3;", "package containerd.sandbox.v3;", 1)
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diff := taskProtoDiff(v2, []byte(tt.v3(string(v2))))
			if got := len(diff) > 0; got != tt.wantDiff {
				t.Errorf("taskProtoDiff found a difference = %v (%v), want %v", got, diff, tt.wantDiff)
			}
		})
	}
}
