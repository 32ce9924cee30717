package service

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// serveOn serves a ttrpc server set up by register on a fresh socket and
// returns the socket's path.
func serveOn(t *testing.T, register func(*ttrpc.Server)) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		t.Fatal(err)
	}
	register(server)
	served := make(chan error, 1)
	go func() { served <- server.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		server.Close()
		<-served
	})
	return path
}

// rawListener accepts connections on a fresh socket and hands each to
// handle; it returns the socket's path.
func rawListener(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return path
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClaim(t *testing.T) {
	tk, _ := newTestTask(t)
	path := serveOn(t, func(s *ttrpc.Server) {
		Register(s, tk)
		RegisterLifetime(s, tk.m)
	})
	legacy := serveOn(t, func(s *ttrpc.Server) { Register(s, tk) })
	closed := rawListener(t, func(c net.Conn) { c.Close() })
	// Reads the request and never answers; Claim closes the connection
	// when it gives up.
	silent := rawListener(t, func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	})

	// Connected before the exit decision, used after it.
	late := dial(t, path)
	tests := []struct {
		name    string
		conn    func() net.Conn
		id      string
		timeout time.Duration
		want    error // nil, or the errdefs sentinel
	}{
		{name: "claimed", conn: func() net.Conn { return dial(t, path) }, id: "b"},
		{name: "empty id", conn: func() net.Conn { return dial(t, path) }, id: "", want: errdefs.ErrInvalidArgument},
		{name: "shim predates claims", conn: func() net.Conn { return dial(t, legacy) }, id: "b", want: errdefs.ErrNotImplemented},
		{name: "connection closed", conn: func() net.Conn { return dial(t, closed) }, id: "b", want: errdefs.ErrUnavailable},
		{name: "no answer", conn: func() net.Conn { return dial(t, silent) }, id: "b", timeout: 200 * time.Millisecond, want: context.DeadlineExceeded},
		{name: "exiting", conn: func() net.Conn {
			sock, err := sandbox.OwnSocket(path)
			if err != nil {
				t.Fatal(err)
			}
			tk.m.Exit(context.Background(), sock)
			return late
		}, id: "c", want: errdefs.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := Claim(ctx, tt.conn(), tt.id)
			if (err == nil) != (tt.want == nil) || (err != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Claim: got %v, want %v", err, tt.want)
			}
			if tt.want != errdefs.ErrUnavailable && errdefs.IsUnavailable(err) {
				t.Fatalf("Claim: got %v, which `start` would take for an exiting shim", err)
			}
		})
	}
}

// TestTaskAPI: a shim serving only containerd.task.v3.Task (containerd
// 2.x's runc shim) is told apart from one that serves v2 (this shim, or
// 1.x's runc shim); a shim that cannot be asked is taken for one that
// serves both.
func TestTaskAPI(t *testing.T) {
	tk, _ := newTestTask(t)
	both := serveOn(t, func(s *ttrpc.Server) { Register(s, tk) })
	v3only := serveOn(t, func(s *ttrpc.Server) {
		s.RegisterService(taskServiceV3, &ttrpc.ServiceDesc{Methods: tk.methods()})
	})
	v2only := serveOn(t, func(s *ttrpc.Server) {
		s.RegisterService(taskServiceV2, &ttrpc.ServiceDesc{Methods: tk.methods()})
	})
	closed := rawListener(t, func(c net.Conn) { c.Close() })
	tests := []struct {
		name    string
		path    string
		want    int
		wantErr bool
	}{
		{name: "v2 and v3", path: both, want: 0},
		{name: "v3 only", path: v3only, want: 3},
		{name: "v2 only", path: v2only, want: 0},
		{name: "connection closed", path: closed, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := TaskAPI(ctx, dial(t, tt.path))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("TaskAPI: got (%d, %v), want %d", got, err, tt.want)
			}
		})
	}
}
