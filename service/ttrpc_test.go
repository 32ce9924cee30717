package service

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// serve starts a ttrpc server with the task services on a unix socket in
// a short temp dir and returns a client connected to it.
func serve(t *testing.T, tk *Task) *ttrpc.Client {
	t.Helper()
	return serveWith(context.Background(), t, func(s *ttrpc.Server) { Register(s, tk) })
}

// serveWith is serve with the services register adds, served under ctx
// (which handlers' contexts derive from).
func serveWith(ctx context.Context, t *testing.T, register func(*ttrpc.Server)) *ttrpc.Client {
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
	go func() { served <- server.Serve(ctx, l) }()
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := server.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ttrpc.ErrServerClosed) {
			t.Errorf("Serve: got %v, want ErrServerClosed", err)
		}
	})
	return client
}

func TestTTRPCRoundTrip(t *testing.T) {
	tk, _ := newTestTask(t)
	client := serve(t, tk)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v2 := taskapi.NewTTRPCTaskClient(client)

	tests := []struct {
		name    string
		call    func() error
		want    codes.Code
		wantErr error
	}{
		{
			name: "v2 State unknown",
			call: func() error { _, err := v2.State(ctx, &taskapi.StateRequest{ID: "nosuch"}); return err },
			want: codes.NotFound, wantErr: errdefs.ErrNotFound,
		},
		{
			name: "v3 State unknown",
			call: func() error {
				return client.Call(ctx, "containerd.task.v3.Task", "State", &taskapi.StateRequest{ID: "nosuch"}, &taskapi.StateResponse{})
			},
			want: codes.NotFound, wantErr: errdefs.ErrNotFound,
		},
		{
			name: "v2 Kill signal 0",
			call: func() error { _, err := v2.Kill(ctx, &taskapi.KillRequest{ID: "nosuch", Signal: 0}); return err },
			want: codes.InvalidArgument, wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "v3 Kill signal 0",
			call: func() error {
				return client.Call(ctx, "containerd.task.v3.Task", "Kill", &taskapi.KillRequest{ID: "nosuch", Signal: 0}, &emptypb.Empty{})
			},
			want: codes.InvalidArgument, wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "v2 Pause unknown",
			call: func() error { _, err := v2.Pause(ctx, &taskapi.PauseRequest{ID: "nosuch"}); return err },
			want: codes.NotFound, wantErr: errdefs.ErrNotFound,
		},
		{
			name: "v2 Checkpoint",
			call: func() error {
				_, err := v2.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{ID: "nosuch"})
				return err
			},
			want: codes.Unimplemented, wantErr: errdefs.ErrNotImplemented,
		},
		{
			name: "v2 Create relative bundle",
			call: func() error {
				_, err := v2.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: "relative"})
				return err
			},
			want: codes.InvalidArgument, wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "unknown service",
			call: func() error {
				return client.Call(ctx, "containerd.task.v9.Task", "State", &taskapi.StateRequest{ID: "nosuch"}, &taskapi.StateResponse{})
			},
			want: codes.Unimplemented,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.want)
			}
			if tt.wantErr != nil && !errors.Is(errgrpc.ToNative(err), tt.wantErr) {
				t.Errorf("ToNative(%v) is not %v", err, tt.wantErr)
			}
		})
	}
}

// TestTTRPCLifecycleV3: a container's life over the v3 service name with
// v2 message types, as containerd 2.x speaks it.
func TestTTRPCLifecycleV3(t *testing.T) {
	tk, _ := newTestTask(t)
	client := serve(t, tk)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := func(method string, req, resp any) {
		t.Helper()
		if err := client.Call(ctx, "containerd.task.v3.Task", method, req, resp); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
	}
	bundle := newBundle(t)
	var cr taskapi.CreateTaskResponse
	call("Create", &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle}, &cr)
	var sr taskapi.StartResponse
	call("Start", &taskapi.StartRequest{ID: "c1"}, &sr)
	if sr.Pid != cr.Pid || cr.Pid == 0 {
		t.Errorf("Start pid %d, Create pid %d", sr.Pid, cr.Pid)
	}
	var st taskapi.StateResponse
	call("State", &taskapi.StateRequest{ID: "c1"}, &st)
	if st.Status != task.Status_RUNNING || st.Pid != cr.Pid {
		t.Errorf("State: got %v", &st)
	}
	call("Kill", &taskapi.KillRequest{ID: "c1", Signal: 15}, &emptypb.Empty{})
	var wr taskapi.WaitResponse
	call("Wait", &taskapi.WaitRequest{ID: "c1"}, &wr)
	if wr.ExitStatus != 143 {
		t.Errorf("Wait: got exit %d, want 143", wr.ExitStatus)
	}
	var dr taskapi.DeleteResponse
	call("Delete", &taskapi.DeleteRequest{ID: "c1"}, &dr)
	if dr.ExitStatus != 143 || dr.Pid != cr.Pid {
		t.Errorf("Delete: got %v", &dr)
	}
	call("Shutdown", &taskapi.ShutdownRequest{}, &emptypb.Empty{})
}
