package tests

import (
	"bytes"
	"crypto/sha256"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// logDir makes a directory for the test's log files inside the daemon's
// temp dir, removed when the test ends.
func logDir(t *testing.T, e *env) string {
	t.Helper()
	dir := filepath.Join(e.d.dir, "logs", e.ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestLogURIFileStreams: file:// with a large stream (every byte, in
// order), for an exec process, and from `ctr run --log-uri`.
func TestLogURIFileStreams(t *testing.T) {
	e := newDefaultEnv(t)
	dir := logDir(t, e)

	t.Run("8 MiB byte-exact", func(t *testing.T) {
		const size = 8 << 20
		path := filepath.Join(dir, "big", "nested", "c.log")
		code := runWithIO(t, e.sub(t), "log-big", "yes 0123456789abcdef | head -c "+strconv.Itoa(size), cio.LogFile(path))
		if code != 0 {
			t.Errorf("exit code = %d, want 0", code)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("0123456789abcdef\n"), size/17+1)[:size]
		if len(data) != size || sha256.Sum256(data) != sha256.Sum256(want) {
			t.Errorf("%s: %d bytes, sha256 %x; want %d bytes, sha256 %x", path, len(data), sha256.Sum256(data), size, sha256.Sum256(want))
		}
	})
	t.Run("exec", func(t *testing.T) {
		se := e.sub(t)
		r := se.run(ctrSpec{id: "log-exec", args: []string{"sh", "-c", "echo up; exec sleep 600"}})
		r.waitOutput(t, "up\n", 30*time.Second)
		path := filepath.Join(dir, "exec.log")
		spec, err := r.container.Spec(se.ctx)
		if err != nil {
			t.Fatal(err)
		}
		pspec := *spec.Process
		pspec.Args = []string{"sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"}
		p, err := r.task.Exec(se.ctx, "x1", &pspec, cio.LogFile(path))
		if err != nil {
			t.Fatalf("exec with file log: %v", err)
		}
		exitC, err := p.Wait(se.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(se.ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-exitC:
			if st.ExitCode() != 3 {
				t.Errorf("exec exit code = %d, want 3", st.ExitCode())
			}
		case <-time.After(time.Minute):
			t.Fatal("exec did not exit within a minute")
		}
		if _, err := p.Delete(se.ctx); err != nil {
			t.Fatal(err)
		}
		// Seen here: the runc shim copies both streams into the one file
		// through a close-counting writer whose count the stderr copy
		// raises only after the stdout copy may have hit EOF and closed
		// the file (countingWriteCloser in its process/io.go).
		if data, _ := os.ReadFile(path); isSandboxRuntime() || bytes.Contains(data, []byte("exec-err")) ||
			!knownDifference(t, e.d.version.name, "file-log-stderr-dropped", "the runc shim dropped the exec's stderr from %s: %q", path, data) {
			checkLogLines(t, e.d.version.name, path, []string{"exec-out"}, []string{"exec-err"})
		}
		r.kill(9)
		r.wait(30 * time.Second)
		r.delete()
	})
	t.Run("ctr run --log-uri", func(t *testing.T) {
		path := filepath.Join(dir, "ctr.log")
		uri := (&url.URL{Scheme: "file", Path: path}).String()
		args := append([]string{"run", "--rm", "--log-uri", uri}, ctrRuntimeArgs(t)...)
		stdout, stderr, code, err := e.d.ctr(e.ctx, e.ns, append(args,
			"--rootfs", e.d.rootfs, "ctr-log", "/bin/sh", "-c", "echo out-1; echo err-1 >&2; exit 4")...)
		if err != nil {
			t.Fatal(err)
		}
		if code != 4 {
			t.Errorf("ctr exit code = %d, want 4 (stdout %q, stderr %q)", code, stdout, stderr)
		}
		if len(stdout) != 0 {
			t.Errorf("ctr printed %q; the output belongs in the log", stdout)
		}
		checkLogLines(t, e.d.version.name, path, []string{"out-1"}, []string{"err-1"})
	})
}

// checkLogLines checks that the log file at path holds exactly the lines
// out and errs, each stream in its order (their interleaving is not
// defined: the runc shim copies them independently). daemon is the
// daemonVersion name the test runs on.
func checkLogLines(t *testing.T, daemon, path string, out, errs []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if !isSandboxRuntime() && len(errs) > 0 && !slices.ContainsFunc(lines, func(l string) bool { return slices.Contains(errs, l) }) &&
		// The runc shim's close-counting writer race (see the exec case
		// of TestLogURIFileStreams); seen here with ctr --log-uri too.
		knownDifference(t, daemon, "file-log-stderr-dropped", "the runc shim dropped stderr from %s: %q", path, data) {
		return
	}
	var gotOut, gotErr []string
	for _, l := range lines {
		switch {
		case slices.Contains(out, l):
			gotOut = append(gotOut, l)
		case slices.Contains(errs, l):
			gotErr = append(gotErr, l)
		default:
			t.Errorf("%s: unexpected line %q (file %q)", path, l, data)
		}
	}
	if !slices.Equal(gotOut, out) || !slices.Equal(gotErr, errs) {
		t.Errorf("%s: stdout lines %q and stderr lines %q, want %q and %q", path, gotOut, gotErr, out, errs)
	}
}

// uriTerminalIO is task IO for a terminal whose output goes to a log URI,
// which cio.LogURI cannot ask for.
type uriTerminalIO struct{ cfg cio.Config }

func (u *uriTerminalIO) Config() cio.Config { return u.cfg }
func (u *uriTerminalIO) Cancel()            {}
func (u *uriTerminalIO) Wait()              {}
func (u *uriTerminalIO) Close() error       { return nil }

// TestLogURITerminal: a terminal's output reaches a binary:// logger
// through the PTY (one stream: stderr stays empty).
func TestLogURITerminal(t *testing.T) {
	e := newDefaultEnv(t)
	if !isSandboxRuntime() && e.d.version.name == "1.6" {
		// Seen here: its logger stays a zombie under the shim, which the
		// harness rightly counts as a leak.
		t.Skip("the runc shim of containerd 1.6 never reaps a terminal's logging binary")
	}
	dir := logDir(t, e)
	logger := writeLoggerScript(t, dir, "tty-logger.sh", "exec 5>&-\n")
	out, errp := filepath.Join(dir, "tty.out"), filepath.Join(dir, "tty.err")
	uri := logURI("binary", logger, map[string]string{"out": out, "err": errp}).String()
	creator := func(string) (cio.IO, error) {
		return &uriTerminalIO{cfg: cio.Config{Terminal: true, Stdout: uri, Stderr: uri}}, nil
	}
	code := runWithIO(t, e, "tty-log", "test -t 1 && echo is-a-tty; echo to-stderr >&2", creator,
		ioRunOpt{spec: []oci.SpecOpts{oci.WithTTY}})
	if code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	waitLoggerFile(t, out, "is-a-tty\r\nto-stderr\r\n")
	waitLoggerFile(t, errp, "")
}

// TestIOOwner: with IoUid/IoGid set to the container's user, the streams
// are that user's, so a non-root process can reopen /dev/stdout,
// /dev/stderr and /dev/stdin. Without them, runc itself hands the stdio
// to the process's uid (libcontainer's fixStdioPermissions changes only
// the uid), so what tells the two apart is the group: IoGid's, or root's.
func TestIOOwner(t *testing.T) {
	e := newDefaultEnv(t)
	const script = `echo out-fd
echo out-reopen >/dev/stdout || echo stdout-refused
echo err-reopen >/dev/stderr || echo stderr-refused
stat -L -c owner=%u:%g /proc/self/fd/1
id -u`
	user := oci.WithUIDGID(1000, 1000)

	t.Run("IoUid and IoGid", func(t *testing.T) {
		r := e.sub(t).run(ctrSpec{
			id:          "io-owner",
			args:        []string{"sh", "-c", script + "\nhead -n 1 /dev/stdin"},
			stdin:       strings.NewReader("in-line\n"),
			opts:        []oci.SpecOpts{user},
			runtimeOpts: &options.Options{IoUid: 1000, IoGid: 1000},
		})
		if code := r.wait(time.Minute); code != 0 {
			t.Errorf("exit code = %d, want 0 (stderr %q)", code, r.stderr.Bytes())
		}
		checkStream(t, e.d.version.name, "stdout", string(r.stdout.Bytes()), "out-fd\nout-reopen\nowner=1000:1000\n1000\nin-line\n")
		checkStream(t, e.d.version.name, "stderr", string(r.stderr.Bytes()), "err-reopen\n")
		r.delete()
	})
	t.Run("without", func(t *testing.T) {
		r := e.sub(t).run(ctrSpec{id: "io-root-owned", args: []string{"sh", "-c", script}, opts: []oci.SpecOpts{user}})
		if code := r.wait(time.Minute); code != 0 {
			t.Errorf("exit code = %d, want 0 (stderr %q)", code, r.stderr.Bytes())
		}
		checkStream(t, e.d.version.name, "stdout", string(r.stdout.Bytes()), "out-fd\nout-reopen\nowner=1000:0\n1000\n")
		checkStream(t, e.d.version.name, "stderr", string(r.stderr.Bytes()), "err-reopen\n")
		r.delete()
	})
}

// checkStream compares a task's output with want. The runc shim, used to
// check the suite, sometimes loses the end of a short task's output under
// load (seen in CI with containerd 1.6): for it a cut-off prefix is
// a listed known difference; this shim must deliver every byte. daemon is
// the daemonVersion name the test runs on.
func checkStream(t *testing.T, daemon, name, got, want string) {
	t.Helper()
	switch {
	case got == want:
	case !isSandboxRuntime() && strings.HasPrefix(want, got) &&
		knownDifference(t, daemon, "short-output-cut", "the runc shim delivered %q of %s %q", got, name, want):
	default:
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}
