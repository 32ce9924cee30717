package ociruntime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
)

func TestParseMinor(t *testing.T) {
	tests := []struct {
		in           string
		major, minor int
		wantErr      bool
	}{
		{in: "1.1.5", major: 1, minor: 1},
		{in: "1.1.5+ds1", major: 1, minor: 1}, // Debian 12
		{in: "1.4.4", major: 1, minor: 4},
		{in: "1.5.0-rc.1", major: 1, minor: 5},
		{in: "", wantErr: true}, // go-runc's answer for "crun version 1.8.1"
		{in: "unknown", wantErr: true},
	}
	for _, tt := range tests {
		major, minor, err := parseMinor(tt.in)
		if (err != nil) != tt.wantErr || major != tt.major || minor != tt.minor {
			t.Errorf("parseMinor(%q) = %d, %d, %v; want %d, %d, error %v", tt.in, major, minor, err, tt.major, tt.minor, tt.wantErr)
		}
	}
}

// versionBinary writes a runtime that answers --version with out (and
// counts how often it was asked in <dir>/asked) and exits 1 when fail.
func versionBinary(t *testing.T, out string, fail bool) (binary, asked string) {
	t.Helper()
	dir := t.TempDir()
	binary, asked = filepath.Join(dir, "runtime"), filepath.Join(dir, "asked")
	code := "0"
	if fail {
		code = "1"
	}
	script := "#!/bin/sh\necho x >>" + asked + "\nprintf '" + out + "\\n'\nexit " + code + "\n"
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binary, asked
}

func timesAsked(t *testing.T, asked string) int {
	t.Helper()
	data, err := os.ReadFile(asked)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(data), "x")
}

func waitProbe(t *testing.T, p *probe) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("probe did not finish")
	}
}

// TestProbe: which binaries get the direct paths, and that a binary is
// asked once while it is the same file.
func TestProbe(t *testing.T) {
	tests := []struct {
		name       string
		out        string
		fail       bool
		wantDirect bool
		wantOmit   bool
		wantAsked  int // after two probes
	}{
		{name: "runc 1.1.5", out: "runc version 1.1.5+ds1\\ncommit: \\nspec: 1.0.2-dev", wantDirect: true, wantAsked: 1},
		{name: "runc 1.4.4", out: "runc version 1.4.4\\ncommit: v1.4.4-0\\nspec: 1.3.0", wantDirect: true, wantOmit: true, wantAsked: 1},
		{name: "runc 1.5.3", out: "runc version 1.5.3", wantDirect: true, wantOmit: true, wantAsked: 1},
		{name: "runc outside the matrix", out: "runc version 1.6.0", wantOmit: true, wantAsked: 1},
		{name: "runc 2", out: "runc version 2.0.0", wantAsked: 1},
		{name: "crun", out: "crun version 1.8.1\\ncommit: abc\\nspec: 1.0.0", wantAsked: 1},
		// A binary that fails to answer is asked again next time.
		{name: "failing", out: "runc version 1.1.5", fail: true, wantAsked: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			binary, asked := versionBinary(t, tt.out, tt.fail)
			client := &runc.Runc{Command: binary}
			p := probeBinary(client)
			waitProbe(t, p)
			if p.direct() != tt.wantDirect {
				t.Errorf("direct = %v (version %q, err %v), want %v", p.direct(), p.version.Runc, p.err, tt.wantDirect)
			}
			if p.hooksOmitted() != tt.wantOmit {
				t.Errorf("hooksOmitted = %v, want %v", p.hooksOmitted(), tt.wantOmit)
			}
			waitProbe(t, probeBinary(client))
			if got := timesAsked(t, asked); got != tt.wantAsked {
				t.Errorf("binary asked %d times, want %d", got, tt.wantAsked)
			}
		})
	}
}

// TestProbeBinaryReplaced: a binary replaced on the node (an upgrade) is
// asked again.
func TestProbeBinaryReplaced(t *testing.T) {
	binary, asked := versionBinary(t, "runc version 1.1.5", false)
	client := &runc.Runc{Command: binary}
	waitProbe(t, probeBinary(client))
	script := "#!/bin/sh\necho x >>" + asked + "\necho 'runc version 1.6.0 (a newer build)'\n"
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	p := probeBinary(client)
	waitProbe(t, p)
	if p.direct() || timesAsked(t, asked) != 2 {
		t.Errorf("after replacing the binary: direct %v, asked %d times; want false, 2", p.direct(), timesAsked(t, asked))
	}
}

// TestStartOutsideMatrixRunsBinary: a created container of a runc the
// matrix does not cover is started by the binary even though its record
// would allow the direct start.
func TestStartOutsideMatrixRunsBinary(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	binary := filepath.Join(dir, "runtime")
	script := `#!/bin/sh
[ "$1" = --version ] && { echo "runc version 1.6.0"; exit 0; }
for a in "$@"; do case "$a" in start) echo start >>` + calls + `;; esac; done
exit 0
`
	if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	fakeRuncState(t, filepath.Join(root, "ns"), "c1", stateJSON(map[string]string{"cpu": "/sys/fs/cgroup/cpu/c1"}, nil), true)
	pidfd := startInit(t, "exec sleep 100")
	r := New(Options{BinaryName: binary, Root: root}, "ns", t.TempDir())
	if err := r.Start(context.Background(), "c1", pidfd); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if data, _ := os.ReadFile(calls); string(data) != "start\n" {
		t.Errorf("binary calls = %q, want one start", data)
	}
	if _, err := os.Lstat(filepath.Join(root, "ns", "c1", execFifo)); err != nil {
		t.Errorf("exec fifo: %v; the direct start must not have read it", err)
	}
}
