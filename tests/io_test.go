package tests

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// TestOutputMiB: 1 MiB on stdout and a different 1 MiB on stderr, written
// concurrently, arrive byte-exact: nothing dropped, duplicated, reordered
// or crossed between the streams. The data are files baked into the image
// whose content the test computes independently (image.Pattern).
func TestOutputMiB(t *testing.T) {
	e := newDefaultEnv(t)
	script := fmt.Sprintf("cat %s & cat %s >&2; wait", image.StdoutBlob, image.StderrBlob)
	r := e.run(ctrSpec{id: "bigout", args: []string{"sh", "-c", script}})
	if code := r.wait(2 * time.Minute); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	r.delete()
	assertBytes(t, "stdout", r.stdout.Bytes(), image.Pattern(1, image.BlobSize))
	assertBytes(t, "stderr", r.stderr.Bytes(), image.Pattern(2, image.BlobSize))
}

// TestStdin: bytes written to the task's stdin come back unchanged through
// `cat`, and closing stdin (EOF after the last byte) lets cat exit 0.
func TestStdin(t *testing.T) {
	e := newDefaultEnv(t)
	cat := []string{"cat"}
	for _, tc := range []struct {
		name string
		in   []byte
		args []string
	}{
		{"line", []byte("hello through stdin\n"), cat},
		{"no-newline", []byte("no trailing newline"), cat},
		// Larger than the pipe and fifo buffers: when the client closes
		// stdin, data is still in flight and must not be dropped.
		{"1MiB-binary", image.Pattern(3, 1<<20), cat},
		// A slow reader: all of stdin is buffered between client and
		// container (fifo, shim, pipe) when the client closes it, so
		// CloseIO arrives while every byte is still in flight. Correct
		// for any timing; the sleep only makes a lossy CloseIO show.
		{"slow-reader-100KiB", image.Pattern(4, 100<<10), []string{"sh", "-c", "sleep 0.5; exec cat"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.sub(t).run(ctrSpec{id: "cat-" + tc.name, args: tc.args, stdin: bytes.NewReader(tc.in)})
			if code := r.wait(time.Minute); code != 0 {
				t.Errorf("exit code = %d, want 0", code)
			}
			r.delete()
			assertBytes(t, "stdout", r.stdout.Bytes(), tc.in)
			if got := r.stderr.Bytes(); len(got) != 0 {
				t.Errorf("stderr = %q, want empty", got)
			}
		})
	}
}

// TestEmptyOutput: a task that writes nothing yields empty output, not a
// hang (IO must close on exit even when no byte ever passed).
func TestEmptyOutput(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "silent", args: []string{"true"}})
	if code := r.wait(time.Minute); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	r.delete()
	if got := r.stdout.Bytes(); len(got) != 0 {
		t.Errorf("stdout = %q, want empty", got)
	}
}

// assertBytes compares got with want by length, sha256 and the first
// differing offset, so a mismatch of megabytes reads as one line.
func assertBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	first := 0
	for first < len(got) && first < len(want) && got[first] == want[first] {
		first++
	}
	t.Errorf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x); first difference at offset %d",
		what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want), first)
}
