package sandbox

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// fakeEvents is containerd's ttrpc events service on a unix socket;
// answer decides every Forward.
type fakeEvents struct {
	answer  func(ctx context.Context, req *eventsapi.ForwardRequest) error
	accepts atomic.Int32 // connections accepted

	mu  sync.Mutex
	got []*eventsapi.ForwardRequest // accepted forwards; guarded by mu
}

func (f *fakeEvents) Forward(ctx context.Context, req *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	if err := f.answer(ctx, req); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, req)
	return &emptypb.Empty{}, nil
}

// countingListener counts accepted connections (a publisher that redials
// shows as a second one) and keeps them, for stop to close.
type countingListener struct {
	net.Listener
	n *atomic.Int32

	mu    *sync.Mutex
	conns *[]net.Conn // guarded by mu
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
		l.mu.Lock()
		*l.conns = append(*l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// closeAll closes every accepted connection, as a containerd that died
// closes its end of each.
func (l countingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range *l.conns {
		c.Close()
	}
}

// serveEvents serves f at path until the returned stop is called (or the
// test ends).
func serveEvents(t *testing.T, path string, f *fakeEvents) (stop func()) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	eventsapi.RegisterTTRPCEventsService(srv, f)
	cl := countingListener{Listener: l, n: &f.accepts, mu: &sync.Mutex{}, conns: new([]net.Conn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), cl)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			<-done
			// ttrpc's Close may leave a busy connection serving for a
			// while; a containerd that went away serves nothing more.
			cl.closeAll()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestRemotePublisherErrors: what containerd answers decides whether the
// queue keeps an event (containerd away or slow) or drops it (containerd
// refused it, or it does not marshal).
func TestRemotePublisherErrors(t *testing.T) {
	hang := func(ctx context.Context, _ *eventsapi.ForwardRequest) error {
		<-ctx.Done()
		return ctx.Err()
	}
	tests := []struct {
		name         string
		answer       func(ctx context.Context, req *eventsapi.ForwardRequest) error
		wantErr      bool
		wantRejected bool
	}{
		{name: "accepted", answer: func(context.Context, *eventsapi.ForwardRequest) error { return nil }},
		{name: "invalid argument", answer: func(context.Context, *eventsapi.ForwardRequest) error {
			return status.Error(codes.InvalidArgument, "envelope topic: invalid")
		}, wantErr: true, wantRejected: true},
		{name: "unavailable", answer: func(context.Context, *eventsapi.ForwardRequest) error {
			return status.Error(codes.Unavailable, "shutting down")
		}, wantErr: true},
		{name: "unknown (sink closed at containerd shutdown)", answer: func(context.Context, *eventsapi.ForwardRequest) error {
			return status.Error(codes.Unknown, "sink closed")
		}, wantErr: true},
		{name: "hangs past the call timeout", answer: hang, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ttrpc.sock")
			f := &fakeEvents{answer: tt.answer}
			serveEvents(t, path, f)
			p := NewRemotePublisher("unix://"+path, "ns1")
			p.timeout = 200 * time.Millisecond
			defer p.Close()
			err := p.Publish(context.Background(), TopicTaskExit, &eventstypes.TaskExit{ContainerID: "c1", ExitStatus: 7})
			if (err != nil) != tt.wantErr || errors.Is(err, ErrEventRejected) != tt.wantRejected {
				t.Fatalf("Publish: got %v, want error %v, rejected %v", err, tt.wantErr, tt.wantRejected)
			}
			if err != nil {
				return
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.got) != 1 {
				t.Fatalf("forwards: got %d, want 1", len(f.got))
			}
			env := f.got[0].Envelope
			if env.Namespace != "ns1" || env.Topic != TopicTaskExit || env.Event.TypeUrl != "containerd.events.TaskExit" {
				t.Errorf("envelope: got %s %s %s, want ns1 %s containerd.events.TaskExit", env.Namespace, env.Topic, env.Event.TypeUrl, TopicTaskExit)
			}
		})
	}
}

// TestRemotePublisherRejectsUnmarshalable: an event that does not marshal
// is rejected before any dial.
func TestRemotePublisherRejectsUnmarshalable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	f := &fakeEvents{answer: func(context.Context, *eventsapi.ForwardRequest) error { return nil }}
	serveEvents(t, path, f)
	p := NewRemotePublisher(path, "ns1")
	defer p.Close()
	err := p.Publish(context.Background(), TopicTaskExit, &eventstypes.TaskExit{ContainerID: "bad\xff"})
	if !errors.Is(err, ErrEventRejected) {
		t.Errorf("Publish: got %v, want %v", err, ErrEventRejected)
	}
	if n := f.accepts.Load(); n != 0 {
		t.Errorf("connections: got %d, want 0", n)
	}
}

// TestRemotePublisherRedials: after a call that hung past its timeout, and
// after containerd went away and came back on the same socket, the next
// call dials again and succeeds.
func TestRemotePublisherRedials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ttrpc.sock")
	var hangs atomic.Int32
	hangs.Store(1)
	f := &fakeEvents{answer: func(ctx context.Context, _ *eventsapi.ForwardRequest) error {
		if hangs.Add(-1) >= 0 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	stop := serveEvents(t, path, f)
	p := NewRemotePublisher(path, "ns1")
	p.timeout = 200 * time.Millisecond
	defer p.Close()
	ctx := context.Background()
	ev := &eventstypes.TaskOOM{ContainerID: "c1"}

	if err := p.Publish(ctx, TopicTaskOOM, ev); err == nil || errors.Is(err, ErrEventRejected) {
		t.Fatalf("hung call: got %v, want a retryable error", err)
	}
	if err := p.Publish(ctx, TopicTaskOOM, ev); err != nil {
		t.Fatalf("after the hung call: %v", err)
	}
	if n := f.accepts.Load(); n != 2 {
		t.Errorf("connections after the hung call: got %d, want 2", n)
	}

	stop()
	if err := p.Publish(ctx, TopicTaskOOM, ev); err == nil || errors.Is(err, ErrEventRejected) {
		t.Fatalf("containerd away: got %v, want a retryable error", err)
	}
	f2 := &fakeEvents{answer: func(context.Context, *eventsapi.ForwardRequest) error { return nil }}
	serveEvents(t, path, f2)
	if err := p.Publish(ctx, TopicTaskOOM, ev); err != nil {
		t.Fatalf("containerd back: %v", err)
	}
	if n := f2.accepts.Load(); n != 1 {
		t.Errorf("connections to the new containerd: got %d, want 1", n)
	}
}

// TestRemotePublisherNoAddress: a shim started without TTRPC_ADDRESS can
// never deliver, so each event is rejected rather than kept.
func TestRemotePublisherNoAddress(t *testing.T) {
	p := NewRemotePublisher("", "ns1")
	err := p.Publish(context.Background(), TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: "c1"})
	if !errors.Is(err, ErrEventRejected) {
		t.Errorf("Publish: got %v, want %v", err, ErrEventRejected)
	}
}

// TestRemotePublisherNoContainerd: nothing listening on the socket is
// containerd away, never a rejection.
func TestRemotePublisherNoContainerd(t *testing.T) {
	p := NewRemotePublisher(filepath.Join(t.TempDir(), "gone.sock"), "ns1")
	err := p.Publish(context.Background(), TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: "c1"})
	if err == nil || errors.Is(err, ErrEventRejected) {
		t.Errorf("Publish: got %v, want a retryable error", err)
	}
}
