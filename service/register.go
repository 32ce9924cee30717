// Package service adapts the ttrpc APIs containerd speaks to the sandbox
// Manager: the task API (v2 and v3), containerd's Sandbox API
// (sandbox_api.go, on internal/api/sandboxpb's copies of its messages,
// since containerd's generated package links gRPC) and the shim's own
// lifetime service. It validates and converts requests, calls the Manager
// and turns errdefs errors into gRPC status. It is the only package that
// does that conversion, in one place (method, and invalidOnDecode beside
// it for the Sandbox API's undecodable requests).
package service

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"
)

// Task service names. containerd.task.v3 is byte-for-byte the v2 protocol
// under a new name (runtime/task/v3/shim.proto differs from v2 only in its
// package line), so one implementation on the v2 message types serves both
// and the shim never links the v3 package, whose gRPC stubs pull in gRPC.
// TestTaskV3ProtoIsV2 is the tripwire: it fails when a containerd api
// release makes the two protos differ.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// method adapts a typed handler to ttrpc: it decodes the request into a
// fresh Req, maps the handler's error to a gRPC status and recovers a
// handler's panic. Every RPC goes through here, so no handler can forget
// the mapping, and no panic can take the pod's shim down: ttrpc does not
// recover panics, and one would kill every container's shim at once.
func method[Req any, Resp any](h func(context.Context, *Req) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (_ any, retErr error) {
		req := new(Req)
		defer func() {
			if v := recover(); v != nil {
				retErr = errgrpc.ToGRPC(recovered(ctx, req, v))
			}
		}()
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

// invalidOnDecode answers a request that does not decode (truncated, a
// string that is not UTF-8, options that are not an Any) with
// InvalidArgument: ttrpc answers Internal, which would blame the shim for
// the caller's bytes. The task API keeps ttrpc's answer, as the runc
// shim's generated server gives it. It sits beside method: both are where
// errors become gRPC status.
func invalidOnDecode(m ttrpc.Method) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		return m(ctx, func(req any) error {
			if err := unmarshal(req); err != nil {
				return errgrpc.ToGRPC(fmt.Errorf("decode %T: %s: %w", req, status.Convert(err).Message(), errdefs.ErrInvalidArgument))
			}
			return nil
		})
	}
}

// recovered logs a handler's panic with its stack and the request's ids
// and returns the internal error the caller is answered with.
func recovered(ctx context.Context, req any, v any) error {
	fields := log.Fields{"stack": string(debug.Stack())}
	if r, ok := req.(interface{ GetID() string }); ok && r.GetID() != "" {
		fields["id"] = r.GetID()
	}
	if r, ok := req.(interface{ GetSandboxId() string }); ok && r.GetSandboxId() != "" {
		fields["id"] = r.GetSandboxId()
	}
	if r, ok := req.(interface{ GetExecID() string }); ok && r.GetExecID() != "" {
		fields["exec_id"] = r.GetExecID()
	}
	err := fmt.Errorf("%T: handler panic: %v: %w", req, v, errdefs.ErrInternal)
	log.G(ctx).WithFields(fields).WithError(err).Error("recovered a handler panic")
	return err
}

// Register serves the task API under both version names on server.
func Register(server *ttrpc.Server, t *Task) {
	for _, name := range []string{taskServiceV2, taskServiceV3} {
		server.RegisterService(name, &ttrpc.ServiceDesc{Methods: t.methods()})
	}
}
