package sandbox

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// RemotePublisher forwards events to containerd's ttrpc events service,
// which every containerd since 1.6 serves on its TTRPC_ADDRESS. It dials
// lazily. Each call, dial included, has its own timeout, and any failure
// other than containerd rejecting the event drops the connection, so the
// next call redials: after containerd restarted, or when the connection
// hangs.
type RemotePublisher struct {
	address   string
	namespace string
	// timeout bounds each Publish call: forwardTimeout; tests lower it.
	timeout time.Duration

	mu sync.Mutex
	// conn and client are guarded by mu; nil until dialed or after a
	// failed call drops them. mu is never held across a call.
	conn   *ttrpc.Client
	client eventsapi.TTRPCEventsService
}

// NewRemotePublisher returns a publisher for containerd at address (a unix
// socket path, optionally prefixed unix://).
func NewRemotePublisher(address, namespace string) *RemotePublisher {
	return &RemotePublisher{
		address:   strings.TrimPrefix(address, "unix://"),
		namespace: namespace,
		timeout:   forwardTimeout,
	}
}

// forwardTimeout bounds one Forward, the dial included. containerd
// answers a Forward at once (it only hands the envelope to its
// subscribers), so a call this long means the connection or containerd
// hangs. The runc shim uses the same.
const forwardTimeout = 5 * time.Second

func (p *RemotePublisher) eventsClient(ctx context.Context) (eventsapi.TTRPCEventsService, error) {
	p.mu.Lock()
	client := p.client
	p.mu.Unlock()
	if client != nil {
		return client, nil
	}
	if p.address == "" {
		// Started without TTRPC_ADDRESS: no event can ever be delivered.
		return nil, fmt.Errorf("no containerd ttrpc address to publish to: %w", ErrEventRejected)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", p.address)
	if err != nil {
		return nil, fmt.Errorf("dial containerd %q: %w", p.address, err)
	}
	conn := ttrpc.NewClient(c)
	client = eventsapi.NewTTRPCEventsClient(conn)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		// Only the event queue's goroutine publishes; this is for a
		// second caller all the same.
		conn.Close()
		return p.client, nil
	}
	p.conn, p.client = conn, client
	return client, nil
}

func (p *RemotePublisher) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.conn, p.client = nil, nil
}

// Publish sends one event. The error wraps ErrEventRejected when the event
// does not marshal, containerd refused it (see rejected) or there is no
// address to send it to; any other error means containerd could not be
// reached or did not answer in time.
func (p *RemotePublisher) Publish(ctx context.Context, topic string, event proto.Message) error {
	payload, err := marshalAny(event)
	if err != nil {
		return fmt.Errorf("publish %s: %w: %w", topic, ErrEventRejected, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	client, err := p.eventsClient(ctx)
	if err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	_, err = client.Forward(ctx, &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: p.namespace,
		Topic:     topic,
		Event:     payload,
	}})
	if err == nil {
		return nil
	}
	if rejected(err) {
		return fmt.Errorf("publish %s: containerd refused it: %w: %w", topic, ErrEventRejected, err)
	}
	p.drop()
	return fmt.Errorf("publish %s: %w", topic, err)
}

// rejected reports whether a Forward failed because of the event itself,
// which no retry changes: containerd's events service answers
// InvalidArgument for a bad namespace, topic or empty event, and ttrpc
// refuses a message over its size limit with ResourceExhausted; the
// other codes listed say the same of a request by gRPC's definitions.
// Everything else is containerd not being there to take it now: no
// status at all (the dial failed, the connection closed, the call's
// timeout passed), Unavailable, or Unknown (containerd's exchange answers
// that while it shuts down).
func rejected(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange,
		codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.Unimplemented, codes.ResourceExhausted:
		return true
	}
	return false
}

// Close drops the connection.
func (p *RemotePublisher) Close() error {
	p.drop()
	return nil
}

// marshalAny wraps an event the way containerd's typeurl does for protobuf
// messages: the type URL is the message's full name.
func marshalAny(m proto.Message) (*anypb.Any, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	return &anypb.Any{TypeUrl: string(m.ProtoReflect().Descriptor().FullName()), Value: data}, nil
}
