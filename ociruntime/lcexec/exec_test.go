package lcexec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// pipeFD returns the read end of a pipe holding data (written, then
// closed, from a goroutine the test joins), as a bare fd that the code
// under test owns and must close.
func pipeFD(t *testing.T, data []byte) int {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		w.Close()
		done <- err
	}()
	t.Cleanup(func() {
		if err := <-done; err != nil && !errors.Is(err, unix.EPIPE) {
			t.Errorf("write the test's spec: %v", err)
		}
	})
	fd, err := unix.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return fd
}

// TestReadProcess: the spec is read from the fd up to EOF, however large,
// and the fd is closed; nothing, a closed fd or invalid JSON is an error
// that names the fd.
func TestReadProcess(t *testing.T) {
	spec := specs.Process{Args: []string{"/bin/true"}, Env: []string{"BIG=" + strings.Repeat("x", 256<<10)}}
	valid, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fd   func(t *testing.T) int
		err  string // "" for success
	}{
		{name: "spec over the pipe buffer", fd: func(t *testing.T) int { return pipeFD(t, valid) }},
		{name: "no fd", fd: func(*testing.T) int { return -1 }, err: "--process-fd is required"},
		{name: "empty", fd: func(t *testing.T) int { return pipeFD(t, nil) }, err: "empty"},
		{name: "invalid JSON", fd: func(t *testing.T) int { return pipeFD(t, []byte(`{"args": [`)) }, err: "process spec on fd"},
		{name: "trailing data", fd: func(t *testing.T) int { return pipeFD(t, append(valid, "{}"...)) }, err: "process spec on fd"},
		{name: "fd not open for reading", fd: func(t *testing.T) int {
			// A pipe's write end: open, so its number cannot be reused
			// meanwhile, as a closed one could.
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			fd, err := unix.Dup(int(w.Fd()))
			if err != nil {
				t.Fatal(err)
			}
			return fd
		}, err: "read process spec from fd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := tt.fd(t)
			got, err := readProcess(fd)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("readProcess = %v, want an error saying %q", err, tt.err)
				}
				if fd >= 0 && !strings.Contains(err.Error(), "fd "+strconv.Itoa(fd)) {
					t.Errorf("readProcess = %v, want it to name fd %d", err, fd)
				}
				return
			}
			if err != nil {
				t.Fatalf("readProcess: %v", err)
			}
			if !slices.Equal(got.Args, spec.Args) || !slices.Equal(got.Env, spec.Env) {
				t.Errorf("readProcess: args %q, %d env entries; want %q, %d", got.Args, len(got.Env), spec.Args, len(spec.Env))
			}
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
				t.Errorf("fd %d after readProcess: F_GETFD = %v, want EBADF (closed)", fd, err)
			}
		})
	}
}

// TestMainBadSpec: a helper given no spec, or a bad one, exits 1 and
// logs why as runc logs an error, where the shim reads a failed exec's
// words; it never reaches the container.
func TestMainBadSpec(t *testing.T) {
	tests := []struct {
		name string
		fd   func(t *testing.T) int
		want string
	}{
		{name: "no --process-fd", fd: func(*testing.T) int { return -1 }, want: "--process-fd is required"},
		{name: "nothing on the fd", fd: func(t *testing.T) int { return pipeFD(t, nil) }, want: "empty"},
		{name: "invalid JSON", fd: func(t *testing.T) int { return pipeFD(t, []byte("not json")) }, want: "invalid character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Main points logrus, a global, at its log file.
			t.Cleanup(func() { logrus.SetOutput(os.Stderr) })
			logPath := filepath.Join(t.TempDir(), "log.json")
			args := []string{"--root", t.TempDir(), "--log", logPath}
			if fd := tt.fd(t); fd >= 0 {
				args = append(args, "--process-fd", strconv.Itoa(fd))
			}
			if got := Main(append(args, "c1")); got != 1 {
				t.Errorf("Main = %d, want 1", got)
			}
			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			var line struct {
				Level string `json:"level"`
				Msg   string `json:"msg"`
			}
			if err := json.Unmarshal(data, &line); err != nil {
				t.Fatalf("log %q: %v", data, err)
			}
			if line.Level != "error" || !strings.Contains(line.Msg, tt.want) {
				t.Errorf("log = %+v, want level error and a msg saying %q", line, tt.want)
			}
		})
	}
}
