package sandbox

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"
)

// Event topics containerd expects from a task shim.
const (
	TopicTaskCreate = "/tasks/create"
	TopicTaskStart  = "/tasks/start"
	TopicTaskExit   = "/tasks/exit"
	TopicTaskDelete = "/tasks/delete"
	TopicTaskOOM    = "/tasks/oom"
)

// Publisher delivers one event to containerd.
type Publisher interface {
	Publish(ctx context.Context, topic string, event proto.Message) error
}

type event struct {
	topic   string
	payload proto.Message
}

// eventQueue keeps events in the order they were pushed and publishes them
// from one goroutine, so the order containerd sees is the order the Manager
// decided under its lock (TaskCreate, TaskStart, TaskExit, TaskDelete per
// task), and no lock is held while publishing.
type eventQueue struct {
	pub Publisher

	mu sync.Mutex
	// items is guarded by mu. Pushed by the Manager, popped by run.
	items []event
	// wake has room for one token: a push after run looked is never lost.
	wake chan struct{}
	// stop is closed by close; done is closed when run returns.
	stop chan struct{}
	done chan struct{}
}

func newEventQueue(pub Publisher) *eventQueue {
	return &eventQueue{
		pub:  pub,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
}

func (q *eventQueue) push(topic string, payload proto.Message) {
	q.mu.Lock()
	q.items = append(q.items, event{topic: topic, payload: payload})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run publishes until close is called and everything pushed before it has
// been published (or given up on).
func (q *eventQueue) run(ctx context.Context) {
	defer close(q.done)
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		for _, e := range items {
			q.publish(ctx, e)
		}
		if len(items) > 0 {
			continue
		}
		select {
		case <-q.wake:
		case <-q.stop:
			q.mu.Lock()
			empty := len(q.items) == 0
			q.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// publishAttempts and publishBackoff bound how long one event may hold up
// the ones behind it while containerd is unreachable (restarting).
const (
	publishAttempts = 5
	publishBackoff  = 100 * time.Millisecond
)

func (q *eventQueue) publish(ctx context.Context, e event) {
	backoff := publishBackoff
	for attempt := 1; ; attempt++ {
		err := q.pub.Publish(ctx, e.topic, e.payload)
		if err == nil {
			return
		}
		if attempt == publishAttempts || ctx.Err() != nil {
			log.G(ctx).WithError(err).WithField("topic", e.topic).Error("dropping event after retries")
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff *= 2
	}
}

// close stops run once the queue is empty and waits for it, or until ctx
// is done.
func (q *eventQueue) close(ctx context.Context) error {
	select {
	case <-q.stop:
	default:
		close(q.stop)
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
