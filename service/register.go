// Package service adapts the ttrpc APIs containerd speaks to the sandbox
// Manager: it validates and converts requests, calls the Manager and turns
// errdefs errors into gRPC status. It is the only package that does that
// conversion, in one place (method).
package service

import (
	"context"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// Task service names. containerd.task.v3 is byte-for-byte the v2 protocol
// under a new name (runtime/task/v3/shim.proto differs from v2 only in its
// package line), so one implementation on the v2 message types serves both
// and the shim never links the v3 package, whose gRPC stubs pull in gRPC.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// method adapts a typed handler to ttrpc: it decodes the request into a
// fresh Req and maps the handler's error to a gRPC status. Every RPC goes
// through here, so no handler can forget the mapping.
func method[Req any, Resp any](h func(context.Context, *Req) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		req := new(Req)
		if err := unmarshal(req); err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return resp, nil
	}
}

// Register serves the task API under both version names on server.
func Register(server *ttrpc.Server, t *Task) {
	for _, name := range []string{taskServiceV2, taskServiceV3} {
		server.RegisterService(name, &ttrpc.ServiceDesc{Methods: t.methods()})
	}
}
