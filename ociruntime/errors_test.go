package ociruntime

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runc "github.com/containerd/go-runc"
)

func TestIsRuntimeNotFound(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "runc does not exist", err: errors.New("runc did not terminate successfully: exit status 1: container does not exist"), want: true},
		{name: "runc 1.0 not found", err: errors.New("exit status 1: container not found"), want: true},
		{name: "crun state missing", err: errors.New("exit status 1: error opening file `/run/crun/c1/status`: No such file or directory"), want: true},
		{name: "runc kill stopped", err: errors.New("exit status 1: container not running"), want: true},
		{name: "process already finished", err: errors.New("os: process already finished"), want: true},
		{name: "wrapped", err: errors.New("kill \"c1\": exit status 1: container does not exist"), want: true},
		{name: "permission denied", err: errors.New("exit status 1: permission denied"), want: false},
		{name: "deadline", err: context.DeadlineExceeded, want: false},
		{name: "cgroup busy", err: errors.New("exit status 1: unable to destroy container: device or resource busy"), want: false},
		{name: "signal not permitted", err: errors.New("exit status 1: unable to signal init: operation not permitted"), want: false},
		{name: "plain exit status", err: errors.New("exit status 1"), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isRuntimeNotFound(tt.err); got != tt.want {
				t.Errorf("isRuntimeNotFound(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestIsRuntimeNotFoundRealRunc asks the installed runc about a container
// it has never seen, so the strings matched are runc's own.
func TestIsRuntimeNotFoundRealRunc(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("runc needs root")
	}
	dir := t.TempDir()
	r := &runc.Runc{Command: "runc", Root: filepath.Join(dir, "root"), Log: filepath.Join(dir, "log.json"), LogFormat: runc.JSON}
	ctx := context.Background()
	_, psErr := r.Ps(ctx, "nosuch")
	tests := []struct {
		name string
		err  error
	}{
		{name: "kill", err: r.Kill(ctx, "nosuch", 9, nil)},
		{name: "kill all", err: r.Kill(ctx, "nosuch", 9, &runc.KillOpts{All: true})},
		{name: "delete", err: r.Delete(ctx, "nosuch", nil)},
		{name: "start", err: r.Start(ctx, "nosuch")},
		{name: "ps", err: psErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatalf("runc %s of a missing container: got nil error", tt.name)
			}
			if !isRuntimeNotFound(tt.err) {
				t.Errorf("isRuntimeNotFound(%q) = false, want true", tt.err)
			}
		})
	}
	if err := r.Delete(ctx, "nosuch", &runc.DeleteOpts{Force: true}); err != nil {
		t.Errorf("runc delete --force of a missing container: got %v, want nil", err)
	}
}

func TestLastLogError(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		log  string // "" with missing: no file
		want string
	}{
		{name: "empty", log: "", want: ""},
		{name: "info only", log: `{"level":"info","msg":"hello","time":"2024-01-01T00:00:00Z"}` + "\n", want: ""},
		{
			name: "last error wins",
			log: `{"level":"error","msg":"first","time":"t"}` + "\n" +
				`{"level":"info","msg":"between"}` + "\n" +
				`{"level":"error","msg":"container_linux.go:380: starting container process caused: exec: \"nope\": executable file not found in $PATH"}` + "\n" +
				`{"level":"warning","msg":"after"}` + "\n",
			want: `container_linux.go:380: starting container process caused: exec: "nope": executable file not found in $PATH`,
		},
		{name: "fatal counts", log: `{"level":"error","msg":"e"}` + "\n" + `{"level":"fatal","msg":"f"}` + "\n", want: "f"},
		{
			name: "non-JSON lines ignored",
			log:  `{"level":"error","msg":"real"}` + "\n" + "panic: something\n" + `level=error msg="text format"` + "\n{broken\n",
			want: "real",
		},
		{name: "no trailing newline", log: `{"level":"error","msg":"tail"}`, want: "tail"},
		{name: "long line", log: `{"level":"error","msg":"` + strings.Repeat("x", 100<<10) + `"}` + "\n", want: strings.Repeat("x", 100<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".json")
			if err := os.WriteFile(path, []byte(tt.log), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := lastLogError(path); got != tt.want {
				t.Errorf("lastLogError: got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if got := lastLogError(filepath.Join(dir, "missing.json")); got != "" {
			t.Errorf("lastLogError of a missing file: got %q, want \"\"", got)
		}
	})
}

// TestFail: a failed call carries runc's own last error, wraps the
// original, and is NotFound exactly when runc says the container is gone.
func TestFail(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "log.json")
	if err := os.WriteFile(logPath, []byte(`{"level":"error","msg":"runc says why"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		cause        error
		logPath      string
		want         string
		wantNotFound bool
	}{
		{name: "with log", cause: errors.New("exit status 1"), logPath: logPath, want: `start "c1": runc says why: exit status 1`},
		{name: "without log", cause: errors.New("exit status 1"), logPath: filepath.Join(dir, "missing"), want: `start "c1": exit status 1`},
		{name: "gone", cause: errors.New("exit status 1: container does not exist"), logPath: filepath.Join(dir, "missing"),
			want: `start "c1": exit status 1: container does not exist: not found`, wantNotFound: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := failLog("start", "c1", tt.logPath, tt.cause)
			if err.Error() != tt.want {
				t.Errorf("got %q, want %q", err, tt.want)
			}
			if !errors.Is(err, tt.cause) {
				t.Errorf("fail does not wrap the original error")
			}
			if IsNotFound(err) != tt.wantNotFound {
				t.Errorf("IsNotFound = %v, want %v", IsNotFound(err), tt.wantNotFound)
			}
		})
	}
	if err := failLog("start", "c1", logPath, nil); err != nil {
		t.Errorf("fail(nil) = %v, want nil", err)
	}
}

// TestIsRuntimeNotFoundMissingBinary: a runtime binary that is not
// installed is not a container that is gone. Matching it as "not found"
// makes Delete, Kill --all and the delete action report success for a
// container nobody touched.
func TestIsRuntimeNotFoundMissingBinary(t *testing.T) {
	r := &runc.Runc{Command: "no-such-runtime-binary"}
	realErr := r.Kill(context.Background(), "c1", 9, nil)
	tests := []struct {
		name string
		err  error
	}{
		{name: "go-runc with a binary not in PATH", err: realErr},
		{name: "exec.ErrNotFound text", err: errors.New(`exec: "crun": executable file not found in $PATH`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("expected an error from a missing runtime binary")
			}
			if isRuntimeNotFound(tt.err) {
				t.Errorf("isRuntimeNotFound(%q) = true, want false", tt.err)
			}
		})
	}
}
