package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// shimAddress reads where the shim of the task in bundle listens and which
// task API version containerd speaks to it: containerd 2.x writes the
// shim's answer to `start` as bootstrap.json, 1.6 writes the plain
// address to a file named address.
func shimAddress(bundle string) (address string, version int, err error) {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var b struct {
			Version  int    `json:"version"`
			Address  string `json:"address"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			return "", 0, fmt.Errorf("parse %s/bootstrap.json %q: %w", bundle, data, err)
		}
		if b.Protocol != "" && !strings.EqualFold(b.Protocol, "ttrpc") {
			return "", 0, fmt.Errorf("%s/bootstrap.json: protocol %q, want ttrpc", bundle, b.Protocol)
		}
		return b.Address, b.Version, nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return "", 0, fmt.Errorf("no bootstrap.json or address in bundle %s: %w", bundle, err)
	}
	return strings.TrimSpace(string(data)), 2, nil
}

// dialShim connects to a shim's ttrpc socket; the connection is closed at
// the end of t.
func dialShim(t *testing.T, address string) *ttrpc.Client {
	t.Helper()
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		t.Fatalf("shim address %q: want unix://", address)
	}
	conn, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		t.Fatalf("dial shim: %v", err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c
}

// shimTaskAPI is the part of the shim task service the bad-input tests
// call, over either API version (v2 and v3 messages are identical; only
// the service name differs).
type shimTaskAPI interface {
	create(ctx context.Context, id, bundle string, options *anypb.Any) error
	createIO(ctx context.Context, id, bundle, stdout, stderr string) error
	start(ctx context.Context, id string) error
	state(ctx context.Context, id string) (status string, err error)
	kill(ctx context.Context, id string, signal uint32) error
	delete(ctx context.Context, id string) error
	stats(ctx context.Context, id string) error
}

type taskV2 struct{ c taskv2.TTRPCTaskService }

func (a taskV2) create(ctx context.Context, id, bundle string, options *anypb.Any) error {
	_, err := a.c.Create(ctx, &taskv2.CreateTaskRequest{ID: id, Bundle: bundle, Options: options})
	return err
}

func (a taskV2) createIO(ctx context.Context, id, bundle, stdout, stderr string) error {
	_, err := a.c.Create(ctx, &taskv2.CreateTaskRequest{ID: id, Bundle: bundle, Stdout: stdout, Stderr: stderr})
	return err
}

func (a taskV2) start(ctx context.Context, id string) error {
	_, err := a.c.Start(ctx, &taskv2.StartRequest{ID: id})
	return err
}

func (a taskV2) state(ctx context.Context, id string) (string, error) {
	resp, err := a.c.State(ctx, &taskv2.StateRequest{ID: id})
	if err != nil {
		return "", err
	}
	return resp.Status.String(), nil
}

func (a taskV2) kill(ctx context.Context, id string, signal uint32) error {
	_, err := a.c.Kill(ctx, &taskv2.KillRequest{ID: id, Signal: signal})
	return err
}

func (a taskV2) delete(ctx context.Context, id string) error {
	_, err := a.c.Delete(ctx, &taskv2.DeleteRequest{ID: id})
	return err
}

func (a taskV2) stats(ctx context.Context, id string) error {
	_, err := a.c.Stats(ctx, &taskv2.StatsRequest{ID: id})
	return err
}

type taskV3 struct{ c taskv3.TTRPCTaskService }

func (a taskV3) stats(ctx context.Context, id string) error {
	_, err := a.c.Stats(ctx, &taskv3.StatsRequest{ID: id})
	return err
}

func (a taskV3) create(ctx context.Context, id, bundle string, options *anypb.Any) error {
	_, err := a.c.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: bundle, Options: options})
	return err
}

func (a taskV3) createIO(ctx context.Context, id, bundle, stdout, stderr string) error {
	_, err := a.c.Create(ctx, &taskv3.CreateTaskRequest{ID: id, Bundle: bundle, Stdout: stdout, Stderr: stderr})
	return err
}

func (a taskV3) start(ctx context.Context, id string) error {
	_, err := a.c.Start(ctx, &taskv3.StartRequest{ID: id})
	return err
}

func (a taskV3) state(ctx context.Context, id string) (string, error) {
	resp, err := a.c.State(ctx, &taskv3.StateRequest{ID: id})
	if err != nil {
		return "", err
	}
	return resp.Status.String(), nil
}

func (a taskV3) kill(ctx context.Context, id string, signal uint32) error {
	_, err := a.c.Kill(ctx, &taskv3.KillRequest{ID: id, Signal: signal})
	return err
}

func (a taskV3) delete(ctx context.Context, id string) error {
	_, err := a.c.Delete(ctx, &taskv3.DeleteRequest{ID: id})
	return err
}

// shimAPI connects to the shim serving task id of e's namespace and
// returns a client for the task API version containerd uses with it.
func shimAPI(t *testing.T, e *env, id string) shimTaskAPI {
	t.Helper()
	address, version, err := shimAddress(e.bundleDir(id))
	if err != nil {
		t.Fatal(err)
	}
	conn := dialShim(t, address)
	if version >= 3 {
		return taskV3{taskv3.NewTTRPCTaskClient(conn)}
	}
	return taskV2{taskv2.NewTTRPCTaskClient(conn)}
}

// errClass names the errdefs class of an error: one from the shim after
// converting it from its gRPC status the way containerd does, one from
// the containerd client (already converted) as it is.
func errClass(err error) string {
	if err == nil {
		return "OK"
	}
	if _, isStatus := status.FromError(err); isStatus {
		err = errgrpc.ToNative(err)
	}
	for _, c := range []struct {
		is   func(error) bool
		name string
	}{
		{errdefs.IsInvalidArgument, "InvalidArgument"},
		{errdefs.IsNotFound, "NotFound"},
		{errdefs.IsAlreadyExists, "AlreadyExists"},
		{errdefs.IsFailedPrecondition, "FailedPrecondition"},
		{errdefs.IsNotImplemented, "NotImplemented"},
		{errdefs.IsUnavailable, "Unavailable"},
		{errdefs.IsCanceled, "Canceled"},
		{errdefs.IsDeadlineExceeded, "DeadlineExceeded"},
		{errdefs.IsPermissionDenied, "PermissionDenied"},
		{errdefs.IsInternal, "Internal"},
	} {
		if c.is(err) {
			return c.name
		}
	}
	if errors.Is(err, ttrpc.ErrClosed) {
		return "ConnectionClosed"
	}
	return "Unknown"
}
