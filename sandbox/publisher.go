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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// RemotePublisher forwards events to containerd's ttrpc events service,
// which every containerd since 1.6 serves on its TTRPC_ADDRESS. It dials
// lazily and redials after containerd restarts.
type RemotePublisher struct {
	address   string
	namespace string

	mu sync.Mutex
	// conn and client are guarded by mu; nil until dialed or after a
	// failed call drops them.
	conn   *ttrpc.Client
	client eventsapi.TTRPCEventsService
}

// NewRemotePublisher returns a publisher for containerd at address (a unix
// socket path, optionally prefixed unix://).
func NewRemotePublisher(address, namespace string) *RemotePublisher {
	return &RemotePublisher{address: strings.TrimPrefix(address, "unix://"), namespace: namespace}
}

const dialTimeout = 5 * time.Second

func (p *RemotePublisher) eventsClient() (eventsapi.TTRPCEventsService, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	if p.address == "" {
		return nil, fmt.Errorf("no containerd ttrpc address to publish to")
	}
	c, err := net.DialTimeout("unix", p.address, dialTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial containerd %q: %w", p.address, err)
	}
	p.conn = ttrpc.NewClient(c)
	p.client = eventsapi.NewTTRPCEventsClient(p.conn)
	return p.client, nil
}

func (p *RemotePublisher) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.conn, p.client = nil, nil
}

// Publish sends one event.
func (p *RemotePublisher) Publish(ctx context.Context, topic string, event proto.Message) error {
	payload, err := marshalAny(event)
	if err != nil {
		return err
	}
	client, err := p.eventsClient()
	if err != nil {
		return err
	}
	_, err = client.Forward(ctx, &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: p.namespace,
		Topic:     topic,
		Event:     payload,
	}})
	if err != nil {
		p.drop()
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
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
