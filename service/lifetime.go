package service

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// lifetimeService is this shim's own ttrpc service, spoken between its
// `start` action and a running shim daemon; containerd never calls it. Its
// one method, Claim, takes the container id as a StringValue and answers
// Empty. A shim that predates it answers Unimplemented.
const (
	lifetimeService = "io.containerd.sandbox.v2.Lifetime"
	claimMethod     = "Claim"
)

// RegisterLifetime serves the lifetime service over m on server.
func RegisterLifetime(server *ttrpc.Server, m *sandbox.Manager) {
	server.RegisterService(lifetimeService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		claimMethod: method(func(ctx context.Context, r *wrapperspb.StringValue) (*emptypb.Empty, error) {
			if r.GetValue() == "" {
				return nil, fmt.Errorf("claim: container id is empty: %w", errdefs.ErrInvalidArgument)
			}
			if err := m.Claim(ctx, r.GetValue()); err != nil {
				return nil, err
			}
			return &emptypb.Empty{}, nil
		}),
	}})
}

// Claim asks the shim on conn to hold itself for container id (a
// sandbox.ClaimFunc) and closes conn. The answer comes back as an errdefs
// error; a connection the shim closed before answering (it died, or is
// going) is ErrUnavailable, like a shim that refuses because it is
// exiting.
func Claim(ctx context.Context, conn net.Conn, id string) error {
	c := ttrpc.NewClient(conn)
	defer c.Close()
	err := c.Call(ctx, lifetimeService, claimMethod, wrapperspb.String(id), &emptypb.Empty{})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ttrpc.ErrClosed):
		return fmt.Errorf("claim %q: shim closed the connection: %w", id, errdefs.ErrUnavailable)
	case ctx.Err() != nil:
		return fmt.Errorf("claim %q: %w", id, ctx.Err())
	}
	return fmt.Errorf("claim %q: %w", id, errgrpc.ToNative(err))
}
