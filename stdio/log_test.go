package stdio

import (
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// logReaper runs a real Reaper for the test, as the shim does, to start
// and reap logging binaries.
func logReaper(t *testing.T) *reaper.Reaper {
	t.Helper()
	r := reaper.NewReaper()
	done, returned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(returned)
		r.Run(done, func(reaper.Exit) {})
	}()
	t.Cleanup(func() {
		close(done)
		<-returned
	})
	return r
}

// runReapedChild is runChild for a test that runs a Reaper: the child
// must be started through it, or the reaper takes its exit.
func runReapedChild(t *testing.T, r *reaper.Reaper, pio *IO, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	pio.Set(cmd)
	ch, err := r.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := pio.CloseAfterStart(); err != nil {
		t.Fatal(err)
	}
	if status, err := r.Wait(cmd, ch); err != nil || status != 0 {
		t.Fatalf("%v: exit %d, %v", args, status, err)
	}
}

// logURI is a log URI as containerd's cio.LogURIGenerator writes it.
func logURI(scheme, path string, q url.Values) string {
	return (&url.URL{Scheme: scheme, Path: path, RawQuery: q.Encode()}).String()
}

// writeLogger writes a binary:// logging driver as a shell script. It
// finds its directory as the value of the query key "dir"; body runs
// after it has recorded its arguments and environment there. It has no
// PATH (the shim gives a logger none), hence the absolute paths.
func writeLogger(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "logger.sh")
	script := `#!/bin/sh
while [ $# -ge 2 ]; do
	case "$1" in dir) DIR=$2 ;; esac
	shift 2
done
/usr/bin/env >"$DIR/env"
` + body
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// copyBody is a logger that says it is ready (v1: closing fd 5), copies
// both streams to files and, ignoring the SIGTERM the shim sends at close,
// exits once both reached EOF.
const copyBody = `trap '' TERM
exec 5>&-
/bin/cat <&3 >"$DIR/out" &
/bin/cat <&4 >"$DIR/err" &
wait
`

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestLoggerCopiesStreams: binary:// and binary-v2:// start the logger
// before returning, with the container's stdout and stderr on fds 3 and 4,
// the query as arguments and only CONTAINER_ID and CONTAINER_NAMESPACE in
// its environment; Close waits until it has finished.
func TestLoggerCopiesStreams(t *testing.T) {
	for _, tt := range []struct{ name, scheme, ready string }{
		{"binary", "binary", "exec 5>&-\n"},
		{"binary-v2", "binary-v2", "printf x >&5\nexec 5>&-\n"},
		{"binary-v2 byte only", "binary-v2", "printf x >&5\n"}, // the byte alone is enough
	} {
		t.Run(tt.name, func(t *testing.T) {
			testutil.WarmSignals()
			testutil.CheckNoLeaks(t)
			t.Setenv("SHIM_SECRET", "not-for-loggers")
			dir := t.TempDir()
			logger := writeLogger(t, dir, strings.Replace(copyBody, "exec 5>&-\n", tt.ready, 1))
			uri := logURI(tt.scheme, logger, url.Values{"dir": {dir}, "zeta": {"last"}})
			r := logReaper(t)
			pio, err := Open(context.Background(), Stdio{Stdout: uri, Stderr: uri},
				StreamEnv{Namespace: "ns1", ID: "ctr1", Children: r})
			if err != nil {
				t.Fatal(err)
			}
			runReapedChild(t, r, pio, "/bin/sh", "-c", "echo out-1; echo err-1 >&2; echo out-2")
			pio.Close()
			if got, want := readFile(t, filepath.Join(dir, "out")), "out-1\nout-2\n"; got != want {
				t.Errorf("logger stdout = %q, want %q", got, want)
			}
			if got, want := readFile(t, filepath.Join(dir, "err")), "err-1\n"; got != want {
				t.Errorf("logger stderr = %q, want %q", got, want)
			}
			env := readFile(t, filepath.Join(dir, "env"))
			for _, want := range []string{"CONTAINER_ID=ctr1\n", "CONTAINER_NAMESPACE=ns1\n"} {
				if !strings.Contains(env, want) {
					t.Errorf("logger environment %q lacks %q", env, want)
				}
			}
			if strings.Contains(env, "SHIM_SECRET") {
				t.Errorf("logger environment %q holds the shim's own", env)
			}
		})
	}
}

// TestLoggerReadyGatesOpen: openIO does not return, and so the container
// cannot start, before the logger says it is ready.
func TestLoggerReadyGatesOpen(t *testing.T) {
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	logger := writeLogger(t, dir, `: >"$DIR/started"
while [ ! -e "$DIR/gate" ]; do /bin/sleep 0.01; done
`+copyBody)
	type result struct {
		pio *IO
		err error
	}
	opened := make(chan result, 1)
	go func() {
		pio, err := Open(context.Background(), Stdio{Stdout: logURI("binary", logger, url.Values{"dir": {dir}})},
			StreamEnv{Children: logReaper(t)})
		opened <- result{pio, err}
	}()
	testutil.WaitFor(t, 10*time.Second, "the logger to start", func() bool {
		_, err := os.Stat(filepath.Join(dir, "started"))
		return err == nil
	})
	select {
	case r := <-opened:
		t.Fatalf("openIO returned (%v) before the logger was ready", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := <-opened
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.pio.Close()
}

// TestLoggerFailures: a logger that cannot start, dies before it is ready
// under binary-v2, or never gets ready fails openIO with a clear class,
// is reaped, and leaves nothing open.
func TestLoggerFailures(t *testing.T) {
	tests := []struct {
		name   string
		scheme string
		body   string
		ctx    time.Duration // a request deadline, when set
		want   error
	}{
		{name: "missing binary", scheme: "binary", want: errdefs.ErrNotFound},
		{name: "v2 exits without the byte", scheme: "binary-v2", body: "exit 0\n", want: errdefs.ErrUnavailable},
		{name: "v2 closes fd 5 without the byte", scheme: "binary-v2", body: "exec 5>&-\n/bin/sleep 100\n", want: errdefs.ErrUnavailable},
		{name: "never ready", scheme: "binary", body: "/bin/sleep 100\n", ctx: 300 * time.Millisecond, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.WarmSignals()
			testutil.CheckNoLeaks(t)
			dir := t.TempDir()
			logger := filepath.Join(dir, "missing")
			if tt.body != "" {
				logger = writeLogger(t, dir, tt.body)
			}
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			pio, err := Open(ctx, Stdio{Stdout: logURI(tt.scheme, logger, url.Values{"dir": {dir}})}, StreamEnv{Children: logReaper(t)})
			if !errors.Is(err, tt.want) {
				t.Fatalf("openIO = %v, want %v", err, tt.want)
			}
			if pio != nil {
				t.Fatal("openIO returned a IO with an error")
			}
		})
	}
}

// TestFileLog: file:// appends stdout and stderr to one file, creating it
// and its directory, keeping what was there; the container writes into a
// pipe owned by IoUid/IoGid, not into the file.
func TestFileLog(t *testing.T) {
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	path := filepath.Join(t.TempDir(), "sub", "dir", "c.log")
	for round, want := range []string{"out-1\nerr-1\n", "out-1\nerr-1\nout-1\nerr-1\n"} {
		pio, err := Open(context.Background(), Stdio{Stdout: logURI("file", path, nil), Stderr: logURI("file", path, nil)}, StreamEnv{})
		if err != nil {
			t.Fatal(err)
		}
		if pio.childStdout != pio.childStderr {
			t.Errorf("stdout and stderr are different files; want one pipe, so their order survives")
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(pio.childStdout.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFIFO {
			t.Errorf("the container's stdout has mode %o, want a pipe", st.Mode)
		}
		runChild(t, pio, "/bin/sh", "-c", "echo out-1; echo err-1 >&2")
		pio.Close()
		if got := readFile(t, path); got != want {
			t.Errorf("round %d: log file = %q, want %q", round, got, want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("log file mode = %v, want 0644", fi.Mode().Perm())
	}
}

// TestFileLogHeldOpen: a process left behind holding the pipe does not
// keep Close waiting, and what was written before Close is in the file.
func TestFileLogHeldOpen(t *testing.T) {
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	path := filepath.Join(t.TempDir(), "c.log")
	pio, err := Open(context.Background(), Stdio{Stdout: logURI("file", path, nil)}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	// Output first, then the stream stays open for as long as the process
	// lives, as a daemonised grandchild would keep it.
	holder := exec.Command("/bin/sh", "-c", "echo before; exec /bin/sleep 100")
	pio.Set(holder)
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	pio.CloseAfterStart()
	defer func() {
		holder.Process.Kill()
		holder.Wait()
	}()
	testutil.WaitFor(t, 10*time.Second, "the holder to be in sleep", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(holder.Process.Pid) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	closed := make(chan struct{})
	go func() {
		pio.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close is still waiting for a writer that will not go away")
	}
	if got, want := readFile(t, path), "before\n"; got != want {
		t.Errorf("log file = %q, want %q", got, want)
	}
}

// TestOpenIOOutputOwner: with IoUid/IoGid set, every pipe and fifo the
// container writes to is theirs, so a non-root process can reopen
// /dev/stdout; a regular file given as a path (it could be /dev/null) is
// never chowned.
func TestOpenIOOutputOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	// The logger writes its copies into its own directory.
	dir, logDir := t.TempDir(), t.TempDir()
	logger := writeLogger(t, logDir, copyBody)
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		stdio   Stdio
		chowned bool
	}{
		{name: "fifos", stdio: Stdio{Stdout: testutil.Mkfifo(t, dir, "out"), Stderr: testutil.Mkfifo(t, dir, "err")}, chowned: true},
		{name: "binary", stdio: Stdio{Stdout: logURI("binary", logger, url.Values{"dir": {logDir}})}, chowned: true},
		{name: "file", stdio: Stdio{Stdout: logURI("file", filepath.Join(dir, "c.log"), nil)}, chowned: true},
		{name: "regular file", stdio: Stdio{Stdout: plain, Stderr: plain}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.WarmSignals()
			testutil.CheckNoLeaks(t)
			pio, err := Open(context.Background(), tt.stdio, StreamEnv{UID: 1234, GID: 5678, Children: logReaper(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer pio.Close()
			want := [2]uint32{0, 0}
			if tt.chowned {
				want = [2]uint32{1234, 5678}
			}
			for name, f := range map[string]*os.File{"stdout": pio.childStdout, "stderr": pio.childStderr} {
				var st unix.Stat_t
				if err := unix.Fstat(int(f.Fd()), &st); err != nil {
					t.Fatal(err)
				}
				if got := [2]uint32{st.Uid, st.Gid}; got != want {
					t.Errorf("%s owner = %d:%d, want %d:%d", name, got[0], got[1], want[0], want[1])
				}
			}
		})
	}
}
