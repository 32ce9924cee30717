package service

import (
	"context"
	"fmt"
	"net"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// TaskAPI asks the shim on conn whether it serves task API v2 (a
// sandbox.TaskAPIFunc) and closes conn. It answers 3 when the shim does
// not know containerd.task.v2.Task, as containerd 2.x's runc shim, which
// serves only v3; else 0. `start` asks this of a shim it finds at a pod's
// socket that does not take claims, so that a containerd 2.0-2.2, which
// speaks v2 to a plain address, is told to speak v3 to such a shim.
//
// The question is a Connect, which every shim answers without side
// effects, for any id.
func TaskAPI(ctx context.Context, conn net.Conn) (int, error) {
	c := ttrpc.NewClient(conn)
	defer c.Close()
	err := c.Call(ctx, taskServiceV2, "Connect", &taskapi.ConnectRequest{}, &taskapi.ConnectResponse{})
	if err == nil {
		return 0, nil
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("ask the shim for task API v2: %w", ctx.Err())
	}
	if err := errgrpc.ToNative(err); errdefs.IsNotImplemented(err) {
		return 3, nil
	}
	// It answered for v2, if with an error: it serves v2.
	return 0, nil
}
