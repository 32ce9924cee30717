package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// TestExecMany: 100 sequential and 50 concurrent execs in one container,
// each with its own exit code and output, and the container undisturbed.
func TestExecMany(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "many", pod: "manypod", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	one := func(t *testing.T, i int) {
		id := fmt.Sprintf("x%d", i)
		x := r.exec(t, id, []string{"sh", "-c", fmt.Sprintf("echo out-%d; exit %d", i, i%200)}, nil)
		if code := x.finish(t, e); code != uint32(i%200) {
			t.Errorf("%s: exit code = %d, want %d", id, code, i%200)
		}
		got, want := string(x.stdout.Bytes()), fmt.Sprintf("out-%d\n", i)
		switch {
		case got == want:
		case got == "" && !isSandboxRuntime() &&
			// Seen here under load, with containerd 2.4.2: the runc
			// shim's copy of a fast exec's output lost all of it.
			knownDifference(t, e.d.version.name, "fast-exec-stdout-dropped", "the runc shim delivered none of %s's stdout", id):
		default:
			t.Errorf("%s: stdout = %q, want %q", id, got, want)
		}
	}
	t.Run("sequential-100", func(t *testing.T) {
		for i := 0; i < 100; i++ {
			one(t, i)
		}
	})
	t.Run("concurrent-50", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 100; i < 150; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				one(t, i)
			}(i)
		}
		wg.Wait()
	})
	if got := r.status(); got != client.Running {
		t.Errorf("container status after the execs = %q, want %q", got, client.Running)
	}
}

// hashWriter counts and hashes what it is given.
type hashWriter struct {
	mu sync.Mutex
	h  interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n += int64(len(p))
	return w.h.Write(p)
}

const bigStdout = 256 << 20

// seqStream is what `seq 1 N | head -c size` prints: every line differs,
// so a lost, repeated or reordered chunk changes the hash.
func seqStream(size int64) []byte {
	var buf bytes.Buffer
	buf.Grow(int(size) + 16)
	for i := 1; int64(buf.Len()) < size; i++ {
		buf.WriteString(strconv.Itoa(i))
		buf.WriteByte('\n')
	}
	return buf.Bytes()[:size]
}

// TestStdout256MiB: 256 MiB on an exec's stdout arrive complete and in
// order (sha256 of the stream).
func TestStdout256MiB(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "big", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	want := sha256.Sum256(seqStream(bigStdout))
	spec, err := r.container.Spec(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pspec := *spec.Process
	pspec.Args = []string{"sh", "-c", fmt.Sprintf("seq 1 40000000 | head -c %d", bigStdout)}
	hw := &hashWriter{h: sha256.New()}
	var stderr bytes.Buffer
	x, err := r.task.Exec(e.ctx, "big1", &pspec, cio.NewCreator(cio.WithStreams(nil, hw, &stderr), cio.WithFIFODir(filepath.Join(e.d.dir, "fifo"))))
	skipIfNotImplemented(t, err, "exec")
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	exitC, err := x.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Start(e.ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	select {
	case st := <-exitC:
		if code, _, _ := st.Result(); code != 0 {
			t.Errorf("exit code = %d, want 0; stderr %q", code, stderr.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("256 MiB exec did not exit within 5 minutes")
	}
	// Delete waits for the client's copy to reach EOF.
	if _, err := x.Delete(e.ctx); err != nil {
		t.Fatalf("delete: %v", err)
	}
	hw.mu.Lock()
	defer hw.mu.Unlock()
	if hw.n != bigStdout {
		t.Fatalf("got %d bytes, want %d", hw.n, bigStdout)
	}
	if got := hw.h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("sha256 = %x, want %x", got, want)
	}
}

// TestWaitWithGrandchildHoldingStdout: an exec that leaves a background
// child holding its stdout still reports its exit at once: Wait does not
// wait for the stream to close.
func TestWaitWithGrandchildHoldingStdout(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "gc", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	r.waitOutput(t, "ready\n", time.Minute)

	x := r.exec(t, "gc1", []string{"sh", "-c", "sleep 1000 & echo parent-done; exit 9"}, nil)
	select {
	case st := <-x.exitC:
		if code, _, _ := st.Result(); code != 9 {
			t.Errorf("exit code = %d, want 9", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("exec exit not reported while a grandchild holds its stdout")
	}
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	if err := x.stdout.waitFor(ctx, []byte("parent-done\n")); err != nil {
		t.Errorf("stdout %q: %v", x.stdout.Bytes(), err)
	}
	// The container's init still answers; the pod is not wedged.
	if got := r.status(); got != client.Running {
		t.Errorf("container status = %q, want %q", got, client.Running)
	}
}
