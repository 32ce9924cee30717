package sandbox

import (
	"context"
	"errors"
	"fmt"
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

// Publisher delivers one event to containerd. Publish returns once ctx is
// done. An error wrapping ErrEventRejected says that this event can never
// be delivered (it does not marshal, or containerd refused it as invalid);
// any other error is taken to mean that containerd cannot be reached now,
// and the event is kept and tried again.
type Publisher interface {
	Publish(ctx context.Context, topic string, event proto.Message) error
}

// ErrEventRejected marks a publish error that sending the event again
// cannot change.
var ErrEventRejected = errors.New("sandbox: event rejected")

// The queue's bound and its retry delays.
const (
	// maxKept bounds the events kept for a containerd that does not take
	// them. Events are small (a TaskCreate with its mounts is well under
	// 1 KiB), so this is at most about 1 MiB held by the shim.
	maxKept = 1024
	// retryMin is the first delay after a failed publish; it doubles on
	// every failure up to retryMax, so a containerd that comes back is
	// found within retryMax, and one that stays away costs a dial every
	// retryMax.
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
	// closingRetryMax caps the delay once close was called: the flush has
	// only close's deadline (30 s at shim exit), and containerd is most
	// likely on its way back then (containerd 2.2+ deletes a task whose
	// processes all exited while it reloads its shims, before it serves
	// its events endpoint, so that delete can be what ends the shim).
	closingRetryMax = 250 * time.Millisecond
)

// errQueueFull is why an event is dropped at the bound.
var errQueueFull = errors.New("sandbox: event queue full: dropping the oldest event that is neither a TaskExit nor a TaskOOM")

type event struct {
	topic   string
	payload proto.Message
}

// vital reports whether e is one containerd and its clients cannot do
// without: the exit status and the OOM kill of a process. No later event
// or call brings them back once dropped (CRI learns of an exit from
// TaskExit; containerd issue 6771).
func (e event) vital() bool {
	return e.topic == TopicTaskExit || e.topic == TopicTaskOOM
}

// ids returns the container and, for exec events, the exec e is about.
func (e event) ids() (id, execID string) {
	if m, ok := e.payload.(interface{ GetContainerID() string }); ok {
		id = m.GetContainerID()
	}
	switch m := e.payload.(type) {
	case interface{ GetExecID() string }:
		execID = m.GetExecID()
	case interface{ GetID() string }:
		// TaskExit and TaskDelete carry the exec id in ID, or the
		// container id for the init process.
		if m.GetID() != id {
			execID = m.GetID()
		}
	}
	return id, execID
}

// eventQueue keeps events in the order they were pushed and publishes them
// from one goroutine (run), so the order containerd sees is the order the
// Manager decided under its lock (TaskCreate, TaskStart, TaskExit,
// TaskDelete per task), and no lock is held while publishing.
//
// An event containerd cannot take is kept, not dropped after a few
// seconds: while containerd, or only its events endpoint, is away (a
// restart, a crash, a hang), run retries the oldest event with a delay
// that doubles from retryMin to retryMax, and once containerd answers again
// it delivers everything kept, in order, however long the outage was. The
// runc shim gives up on an event after about 15 s (containerd issue 6771),
// so the TaskExit of a container that exits while containerd is down for
// longer never reaches containerd's event stream.
//
// The bound: at most maxKept events are kept. Beyond it, the oldest kept
// event that is neither a TaskExit nor a TaskOOM is dropped and logged with
// its topic and ids: typically the create, start or exec-added of a
// process whose TaskExit is kept behind it. TaskExit and TaskOOM are never
// dropped while the shim lives and may hold the queue above maxKept; while
// containerd is away no task or exec can be created, so their number is
// bounded by the processes already running (and their OOM kills).
//
// Also dropped, and logged, is an event the publisher reports as rejected
// (ErrEventRejected): retrying it would hold up every event behind it
// forever. At shim exit, close flushes until its context is done; then
// run's context is cancelled and what is still kept is logged with its
// topic and ids.
type eventQueue struct {
	pub Publisher
	// limit is maxKept; tests lower it.
	limit int
	// after returns a channel that receives once d has passed: time.After,
	// or a clock the test drives.
	after func(d time.Duration) <-chan time.Time
	// dropped is told of every event given up on, and why; it logs.
	dropped func(ctx context.Context, e event, why error)

	mu sync.Mutex
	// inbox is guarded by mu: appended by push, taken whole by run, which
	// owns every event from then on. It holds what is pushed while run is
	// inside one Publish call (bounded by the publisher's call timeout).
	inbox []event
	// wake has room for one token: a push after run looked is never lost.
	wake chan struct{}
	// stop is closed by close (stopOnce); done is closed when run
	// returns.
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newEventQueue(pub Publisher) *eventQueue {
	return &eventQueue{
		pub:     pub,
		limit:   maxKept,
		after:   time.After,
		dropped: logDropped,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// push queues an event; it never blocks, so the Manager calls it under its
// lock.
func (q *eventQueue) push(topic string, payload proto.Message) {
	q.mu.Lock()
	q.inbox = append(q.inbox, event{topic: topic, payload: payload})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run publishes until close is called and everything kept has been
// delivered, or until ctx is cancelled; then it reports every event it
// still keeps as dropped.
func (q *eventQueue) run(ctx context.Context) {
	defer close(q.done)
	var (
		kept      []event          // oldest first; kept[0] is the one being tried
		stop      = q.stop         // nil once close was called: a closed channel is always ready
		closing   bool             // close was called: return once kept is empty
		delay     time.Duration    // the last retry delay; 0 while containerd takes events
		retry     <-chan time.Time // non-nil while waiting to try kept[0] again
		downSince time.Time        // first failure of the current outage
	)
	for {
		kept = q.take(ctx, kept)
		if len(kept) > 0 && retry == nil {
			e := kept[0]
			err := q.pub.Publish(ctx, e.topic, e.payload)
			if err == nil || errors.Is(err, ErrEventRejected) {
				if err != nil {
					q.dropped(ctx, e, err)
				}
				kept[0] = event{}
				kept = kept[1:]
				if delay > 0 {
					log.G(ctx).WithField("outage", time.Since(downSince).Round(time.Millisecond)).WithField("kept", len(kept)+1).
						Info("containerd takes events again: delivering the kept ones")
					delay = 0
				}
				continue
			}
			if ctx.Err() == nil {
				if delay == 0 {
					downSince = time.Now()
					log.G(ctx).WithError(err).WithField("kept", len(kept)).
						Warn("containerd does not take events: keeping them until it does")
				}
				delay = nextDelay(delay)
				if closing {
					delay = min(delay, closingRetryMax)
				}
				retry = q.after(delay)
			}
		}
		if len(kept) == 0 && closing {
			return
		}
		select {
		case <-q.wake:
		case <-retry:
			retry = nil
		case <-stop:
			stop, closing = nil, true
			// Try again now rather than at the end of a long delay.
			retry = nil
		case <-ctx.Done():
			why := fmt.Errorf("not delivered before the shim stopped publishing: %w", ctx.Err())
			for _, e := range q.take(ctx, kept) {
				q.dropped(ctx, e, why)
			}
			return
		}
	}
}

// nextDelay returns the retry delay after one of prev.
func nextDelay(prev time.Duration) time.Duration {
	if prev == 0 {
		return retryMin
	}
	return min(2*prev, retryMax)
}

// take appends what was pushed since it last looked to kept and enforces
// the bound.
func (q *eventQueue) take(ctx context.Context, kept []event) []event {
	q.mu.Lock()
	in := q.inbox
	q.inbox = nil
	q.mu.Unlock()
	kept = append(kept, in...)
	excess := len(kept) - q.limit
	if excess <= 0 {
		return kept
	}
	out := kept[:0]
	for _, e := range kept {
		if excess > 0 && !e.vital() {
			q.dropped(ctx, e, errQueueFull)
			excess--
			continue
		}
		out = append(out, e)
	}
	clear(kept[len(out):])
	return out
}

// close asks run to deliver what it keeps and return, and waits for that
// until ctx is done. Then the caller cancels run's context (Manager.Close
// does), and run reports every event it still keeps.
func (q *eventQueue) close(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush events: %w", ctx.Err())
	}
}

// logDropped logs an event given up on with its topic and ids.
func logDropped(ctx context.Context, e event, why error) {
	id, execID := e.ids()
	l := log.G(ctx).WithError(why).WithField("topic", e.topic).WithField("id", id)
	if execID != "" {
		l = l.WithField("exec_id", execID)
	}
	l.Error("event dropped")
}
