package stdio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// openFifoReader opens the containerd side of an output fifo. Opening it
// non-blocking never waits; reads then block in the poller until data or
// EOF (every writer gone).
func openFifoReader(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// runChild runs args with the process's streams, as runc would hand them
// to the container, and closes the shim's copies once started.
func runChild(t *testing.T, pio *IO, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	pio.Set(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pio.CloseAfterStart(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

func fdTarget(t *testing.T, f *os.File) string {
	t.Helper()
	if f == nil {
		return "<nil>"
	}
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestOpenIORejects: a bad name in any slot fails openIO with the right
// class and leaves nothing open.
func TestOpenIORejects(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	good := testutil.Mkfifo(t, dir, "out")
	tests := []struct {
		name  string
		stdio Stdio
		want  error
	}{
		{name: "relative stdin", stdio: Stdio{Stdin: "in", Stdout: good}, want: errdefs.ErrInvalidArgument},
		{name: "relative stdout", stdio: Stdio{Stdout: "out"}, want: errdefs.ErrInvalidArgument},
		{name: "relative stderr", stdio: Stdio{Stdout: good, Stderr: "err"}, want: errdefs.ErrInvalidArgument},
		{name: "binary stdout with a host", stdio: Stdio{Stdout: "binary://x"}, want: errdefs.ErrInvalidArgument},
		{name: "binary stdout without a reaper", stdio: Stdio{Stdout: "binary:///bin/true"}, want: errdefs.ErrNotImplemented},
		{name: "file stderr", stdio: Stdio{Stdout: good, Stderr: "file:///x"}, want: errdefs.ErrInvalidArgument},
		{name: "file stdin", stdio: Stdio{Stdin: "file:///x"}, want: errdefs.ErrInvalidArgument},
		{name: "log file in a file", stdio: Stdio{Stdout: "file://" + good + "/x"}, want: errdefs.ErrInvalidArgument},
		{name: "terminal without stdout", stdio: Stdio{Terminal: true}, want: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pio, err := Open(context.Background(), tt.stdio, StreamEnv{})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open(%+v) = %v, want %v", tt.stdio, err, tt.want)
			}
			if pio != nil {
				t.Errorf("openIO returned a IO with an error")
			}
		})
	}
}

// TestOpenIOEmptyNames: streams nobody asked for are /dev/null (not left
// unset, which would make go-runc hand the container a pipe of its own).
func TestOpenIOEmptyNames(t *testing.T) {
	testutil.CheckNoLeaks(t)
	pio, err := Open(context.Background(), Stdio{}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	for name, f := range map[string]*os.File{"stdin": pio.childStdin, "stdout": pio.childStdout, "stderr": pio.childStderr} {
		if got := fdTarget(t, f); got != os.DevNull {
			t.Errorf("%s: got %s, want %s", name, got, os.DevNull)
		}
	}
	if pio.childStdin != pio.childStdout || pio.childStdout != pio.childStderr {
		t.Errorf("unset streams should share one /dev/null fd")
	}
	if len(pio.keepOpen) != 0 || pio.stdinFifo != nil || pio.copyDone != nil {
		t.Errorf("nothing to keep open or copy: keepOpen=%d stdinFifo=%v copyDone=%v", len(pio.keepOpen), pio.stdinFifo, pio.copyDone)
	}
	if pio.Stdin() != nil || pio.Stdout() != nil || pio.Stderr() != nil {
		t.Errorf("go-runc's Stdin/Stdout/Stderr must be nil: the shim never reads through go-runc")
	}
}

// TestOpenIOStdoutByteExact: the container writes straight into the fifo;
// its reader gets every byte, in order, then EOF once the container exits.
func TestOpenIOStdoutByteExact(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	out := testutil.Mkfifo(t, dir, "out")
	want := make([]byte, 256<<10) // four times a pipe's buffer
	for i := range want {
		want[i] = byte(i*7 + i/251)
	}
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	pio, err := Open(context.Background(), Stdio{Stdout: out}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	if got := fdTarget(t, pio.childStdout); got != out {
		t.Errorf("child stdout: got %s, want the fifo %s", got, out)
	}
	if got := fdTarget(t, pio.childStderr); got != os.DevNull {
		t.Errorf("child stderr: got %s, want %s", got, os.DevNull)
	}
	r := openFifoReader(t, out)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	runChild(t, pio, "/bin/busybox", "cat", src)
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("fifo reader got %d bytes, want %d identical bytes", len(b), len(want))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("reader saw no EOF 20s after the child exited")
	}
}

// TestOpenIOSeparateStderr: stdout and stderr go to their own fifos.
func TestOpenIOSeparateStderr(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	out, errPath := testutil.Mkfifo(t, dir, "out"), testutil.Mkfifo(t, dir, "err")
	pio, err := Open(context.Background(), Stdio{Stdout: out, Stderr: errPath}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	if pio.childStdout == pio.childStderr {
		t.Fatal("distinct paths share one fd")
	}
	ro, re := openFifoReader(t, out), openFifoReader(t, errPath)
	gotOut, gotErr := make(chan string, 1), make(chan string, 1)
	go func() { b, _ := io.ReadAll(ro); gotOut <- string(b) }()
	go func() { b, _ := io.ReadAll(re); gotErr <- string(b) }()
	runChild(t, pio, "/bin/sh", "-c", "echo out1; echo err1 >&2; echo out2")
	if got, want := <-gotOut, "out1\nout2\n"; got != want {
		t.Errorf("stdout: got %q, want %q", got, want)
	}
	if got, want := <-gotErr, "err1\n"; got != want {
		t.Errorf("stderr: got %q, want %q", got, want)
	}
}

// TestOpenIOSharedStdoutStderr: one path for both streams is one fd, so
// the two interleave in the order written.
func TestOpenIOSharedStdoutStderr(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	out := testutil.Mkfifo(t, dir, "out")
	pio, err := Open(context.Background(), Stdio{Stdout: out, Stderr: out}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	if pio.childStdout != pio.childStderr {
		t.Fatal("stdout == stderr path: got two fds, want one shared")
	}
	if got := len(pio.keepOpen); got != 1 {
		t.Errorf("keep-open read ends: got %d, want 1", got)
	}
	r := openFifoReader(t, out)
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r); got <- string(b) }()
	runChild(t, pio, "/bin/sh", "-c", "echo a; echo b >&2; echo c; echo d >&2")
	if g, want := <-got, "a\nb\nc\nd\n"; g != want {
		t.Errorf("got %q, want %q", g, want)
	}
}

// TestOpenIORegularFileAndMissingFifo: a regular file is appended to; a
// missing path becomes a fifo.
func TestOpenIORegularFileAndMissingFifo(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "log")
	if err := os.WriteFile(file, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "made-by-shim")
	pio, err := Open(context.Background(), Stdio{Stdout: file, Stderr: missing}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	fi, err := os.Stat(missing)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("missing stderr path: got mode %v, want a fifo", fi.Mode())
	}
	runChild(t, pio, "/bin/sh", "-c", "echo new")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), "old\nnew\n"; got != want {
		t.Errorf("file: got %q, want %q", got, want)
	}
}

// readWithin reads exactly n bytes from f, failing the test if they do
// not come within d.
func readWithin(t *testing.T, f *os.File, n int, d time.Duration) []byte {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatalf("read %d bytes within %v: %v", n, d, err)
	}
	return buf
}

// wantEOFWithin fails the test unless f reads EOF, with no data before
// it, within d.
func wantEOFWithin(t *testing.T, f *os.File, d time.Duration) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	n, err := f.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("read: got (%d, %v), want (0, EOF) within %v", n, err, d)
	}
}

// wantNoEOF checks that f has neither data nor EOF for a short while: the
// container's stdin is still open. Absence can only be shown by waiting;
// the wait bounds the check, it does not order anything.
func wantNoEOF(t *testing.T, f *os.File) {
	t.Helper()
	if err := f.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := f.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on an open, idle stdin: got (%d, %v), want a timeout", n, err)
	}
}

// TestOpenIOStdin: what containerd writes into the stdin fifo comes out of
// the container's stdin pipe, byte-exact. containerd's writer going away
// (a restart, an attach ending) is not EOF for the container: the shim
// holds a writer of its own until CloseIO, as containerd-shim-runc-v2
// does, and a writer that comes back is copied again.
func TestOpenIOStdin(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	in := testutil.Mkfifo(t, dir, "in")
	pio, err := Open(context.Background(), Stdio{Stdin: in}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	w := testutil.OpenFifoWriter(t, in)
	want := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB, twice a pipe
	wrote := make(chan error, 1)
	go func() {
		_, err := w.Write(want)
		w.Close()
		wrote <- err
	}()
	got := readWithin(t, pio.childStdin, len(want), 20*time.Second)
	if err := <-wrote; err != nil {
		t.Fatalf("write stdin fifo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("container stdin: %d bytes differ from the %d written", len(got), len(want))
	}
	wantNoEOF(t, pio.childStdin)

	w2 := testutil.OpenFifoWriter(t, in)
	if _, err := w2.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(t, pio.childStdin, 5, 10*time.Second); string(got) != "again" {
		t.Fatalf("after the writer came back: got %q, want %q", got, "again")
	}
	w2.Close()
	pio.CloseStdin()
	wantEOFWithin(t, pio.childStdin, 10*time.Second)
	select {
	case <-pio.copyDone:
	case <-time.After(10 * time.Second):
		t.Fatal("stdin copy did not return after EOF")
	}
}

// TestOpenIOCloseStdin: CloseIO while containerd still holds its writer
// drops nothing: what is written after it still arrives, and EOF comes
// when containerd's writer closes too. CloseStdin is idempotent.
func TestOpenIOCloseStdin(t *testing.T) {
	testutil.CheckNoLeaks(t)
	dir := t.TempDir()
	in := testutil.Mkfifo(t, dir, "in")
	pio, err := Open(context.Background(), Stdio{Stdin: in}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	w := testutil.OpenFifoWriter(t, in)
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	pio.CloseStdin()
	if _, err := w.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	if got := readWithin(t, pio.childStdin, 11, 10*time.Second); string(got) != "hello world" {
		t.Fatalf("got %q, want %q", got, "hello world")
	}
	wantNoEOF(t, pio.childStdin)
	w.Close()
	wantEOFWithin(t, pio.childStdin, 10*time.Second)
	select {
	case <-pio.copyDone:
	case <-time.After(10 * time.Second):
		t.Fatal("stdin copy did not return after EOF")
	}
	pio.CloseStdin()
}

// TestOpenIOCloseStdinNoWriter: CloseIO before containerd ever opened the
// fifo is EOF for the container at once.
func TestOpenIOCloseStdinNoWriter(t *testing.T) {
	testutil.CheckNoLeaks(t)
	in := testutil.Mkfifo(t, t.TempDir(), "in")
	pio, err := Open(context.Background(), Stdio{Stdin: in}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	wantNoEOF(t, pio.childStdin)
	pio.CloseStdin()
	wantEOFWithin(t, pio.childStdin, 10*time.Second)
}

// TestOpenIOCloseWithWriterOpen: Close does not wait for containerd to
// close its writer.
func TestOpenIOCloseWithWriterOpen(t *testing.T) {
	testutil.CheckNoLeaks(t)
	in := testutil.Mkfifo(t, t.TempDir(), "in")
	pio, err := Open(context.Background(), Stdio{Stdin: in}, StreamEnv{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.OpenFifoWriter(t, in)
	closed := make(chan struct{})
	go func() {
		pio.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while containerd's writer was open")
	}
}

// TestOpenIOCloseNoLeaks opens and closes every stream 50 times, with and
// without containerd ever opening the stdin fifo, and checks Close
// returns and leaves no goroutine and no fd behind.
func TestOpenIOCloseNoLeaks(t *testing.T) {
	const cycles = 50
	tests := []struct {
		name   string
		writer bool
	}{
		{name: "stdin never opened by a writer", writer: false},
		{name: "stdin written and closed", writer: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			in, out, errPath := testutil.Mkfifo(t, dir, "in"), testutil.Mkfifo(t, dir, "out"), testutil.Mkfifo(t, dir, "err")
			cycle := func() {
				pio, err := Open(context.Background(), Stdio{Stdin: in, Stdout: out, Stderr: errPath}, StreamEnv{})
				if err != nil {
					t.Fatal(err)
				}
				pio.CloseChildSide()
				if tt.writer {
					w, err := openWriterOnce(in)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := w.Write([]byte("x")); err != nil {
						t.Fatal(err)
					}
					w.Close()
				}
				closed := make(chan struct{})
				go func() {
					pio.Close()
					close(closed)
				}()
				select {
				case <-closed:
				case <-time.After(10 * time.Second):
					t.Fatal("Close did not return")
				}
			}
			cycle() // the fifo package starts nothing lasting, but be fair
			fds, gs := testutil.CountFDs(t), runtime.NumGoroutine()
			for i := 0; i < cycles; i++ {
				cycle()
			}
			var gotFDs, gotGs int
			deadline := time.Now().Add(5 * time.Second)
			for {
				gotFDs, gotGs = testutil.CountFDs(t), runtime.NumGoroutine()
				if (gotFDs <= fds && gotGs <= gs) || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if gotFDs > fds {
				t.Errorf("fds after %d cycles: got %d, want %d\n%s", cycles, gotFDs, fds, testutil.ListFDs())
			}
			if gotGs > gs {
				t.Errorf("goroutines after %d cycles: got %d, want %d", cycles, gotGs, gs)
			}
		})
	}
}

// openWriterOnce opens the stdin fifo for writing, polling for the reader.
func openWriterOnce(path string) (*os.File, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err == nil || !errors.Is(err, unix.ENXIO) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(time.Millisecond)
	}
}

// TestOpenIOStdinOwner: the stdin pipe the container reads belongs to the
// runtime options' IoUid/IoGid.
func TestOpenIOStdinOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	testutil.CheckNoLeaks(t)
	in := testutil.Mkfifo(t, t.TempDir(), "in")
	pio, err := Open(context.Background(), Stdio{Stdin: in}, StreamEnv{UID: 1234, GID: 5678})
	if err != nil {
		t.Fatal(err)
	}
	defer pio.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(pio.childStdin.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("stdin pipe owner: got %d:%d, want 1234:5678", st.Uid, st.Gid)
	}
}

// TestOpenIOWaitsForLateReader: containerd opens its reader of an output
// fifo in the background; a fast process that wrote and exited before
// that open began used to leave it waiting for a writer forever, its
// bytes unread. With ReaderWait the write end opens only once the reader
// is there, and the reader gets every byte and EOF.
func TestOpenIOWaitsForLateReader(t *testing.T) {
	testutil.CheckNoLeaks(t)
	out := testutil.Mkfifo(t, t.TempDir(), "out")
	got := make(chan string, 1)
	go func() {
		// containerd's reader, late: a blocking open, then read to EOF.
		time.Sleep(50 * time.Millisecond)
		f, err := os.OpenFile(out, os.O_RDONLY, 0)
		if err != nil {
			got <- "open: " + err.Error()
			return
		}
		defer f.Close()
		data, _ := io.ReadAll(f)
		got <- string(data)
	}()
	pio, err := Open(context.Background(), Stdio{Stdout: out}, StreamEnv{ReaderWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runChild(t, pio, "/bin/sh", "-c", "echo fast")
	pio.Close()
	select {
	case s := <-got:
		if s != "fast\n" {
			t.Errorf("reader got %q, want %q", s, "fast\n")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the late reader never got EOF: its open waits for a writer that is gone")
	}
}
