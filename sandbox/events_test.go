package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/proto"
)

// errDown is what a publisher returns while containerd is away.
var errDown = errors.New("dial containerd: connection refused")

// scriptedPublisher hands every Publish call to the test, which answers
// it: the test plays containerd going away, coming back and refusing
// events, one call at a time.
type scriptedPublisher struct {
	calls chan publishCall
}

type publishCall struct {
	key   string // topic and ids, see keyOf
	reply chan error
}

func (p *scriptedPublisher) Publish(ctx context.Context, topic string, ev proto.Message) error {
	c := publishCall{key: keyOf(event{topic: topic, payload: ev}), reply: make(chan error, 1)}
	select {
	case p.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// keyOf names an event in tests: "topic id" or "topic id/exec".
func keyOf(e event) string {
	id, execID := e.ids()
	if execID != "" {
		id += "/" + execID
	}
	return e.topic + " " + id
}

// retryClock records every retry delay the queue asks for and fires it at
// once, or, while stopped, when the test calls fire.
type retryClock struct {
	mu      sync.Mutex
	stopped bool               // guarded by mu
	delays  []time.Duration    // guarded by mu
	held    []chan<- time.Time // guarded by mu: asked for while stopped
}

func (c *retryClock) after(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delays = append(c.delays, d)
	ch := make(chan time.Time, 1)
	if c.stopped {
		c.held = append(c.held, ch)
	} else {
		ch <- time.Time{}
	}
	return ch
}

func (c *retryClock) setStopped(stopped bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = stopped
}

// fire lets every delay asked for while stopped pass now.
func (c *retryClock) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.held {
		ch <- time.Time{}
	}
	c.held = nil
}

func (c *retryClock) taken() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.delays)
}

type droppedEvent struct {
	key string
	why error
}

// queueRig runs an eventQueue over a scriptedPublisher and a retryClock.
type queueRig struct {
	q       *eventQueue
	pub     *scriptedPublisher
	clock   *retryClock
	dropped chan droppedEvent  // every event the queue gave up on
	cancel  context.CancelFunc // cancels run's context, as Manager.Close does
	done    chan struct{}      // closed when run has returned
}

// startQueue pushes events, then starts the queue, so that its first look
// takes all of them at once. The run goroutine is joined at the test's end.
func startQueue(t *testing.T, limit int, clock *retryClock, events ...event) *queueRig {
	t.Helper()
	r := &queueRig{
		pub:     &scriptedPublisher{calls: make(chan publishCall)},
		clock:   clock,
		dropped: make(chan droppedEvent, 1000),
		done:    make(chan struct{}),
	}
	r.q = newEventQueue(r.pub)
	r.q.limit = limit
	r.q.after = clock.after
	r.q.dropped = func(_ context.Context, e event, why error) {
		r.dropped <- droppedEvent{key: keyOf(e), why: why}
	}
	for _, e := range events {
		r.q.push(e.topic, e.payload)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.q.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// answer takes the queue's next Publish call, checks that it is for want
// ("" takes any) and answers err.
func (r *queueRig) answer(t *testing.T, want string, err error) {
	t.Helper()
	r.next(t, want).reply <- err
}

// next takes the queue's next Publish call, checks that it is for want
// ("" takes any) and leaves it to the test to answer.
func (r *queueRig) next(t *testing.T, want string) publishCall {
	t.Helper()
	select {
	case c := <-r.pub.calls:
		if want != "" && c.key != want {
			t.Errorf("publish: got %q, want %q", c.key, want)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no publish of %q within 10s", want)
		return publishCall{}
	}
}

// close closes the queue with a deadline far away and waits for run.
func (r *queueRig) close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.q.close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	<-r.done
}

// drops returns what the queue reported as dropped so far.
func (r *queueRig) drops() []droppedEvent {
	var out []droppedEvent
	for {
		select {
		case d := <-r.dropped:
			out = append(out, d)
		default:
			return out
		}
	}
}

func dropKeys(ds []droppedEvent) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.key)
	}
	return out
}

func keys(evs []event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, keyOf(e))
	}
	return out
}

func evCreate(id string) event {
	return event{TopicTaskCreate, &eventstypes.TaskCreate{ContainerID: id}}
}
func evStart(id string) event { return event{TopicTaskStart, &eventstypes.TaskStart{ContainerID: id}} }
func evExit(id string) event {
	return event{TopicTaskExit, &eventstypes.TaskExit{ContainerID: id, ID: id, ExitStatus: 7}}
}
func evDelete(id string) event {
	return event{TopicTaskDelete, &eventstypes.TaskDelete{ContainerID: id, ID: id}}
}
func evOOM(id string) event { return event{TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: id}} }
func evExecAdded(id, execID string) event {
	return event{TopicTaskExecAdded, &eventstypes.TaskExecAdded{ContainerID: id, ExecID: execID}}
}
func evExecStarted(id, execID string) event {
	return event{TopicTaskExecStarted, &eventstypes.TaskExecStarted{ContainerID: id, ExecID: execID}}
}
func evExecExit(id, execID string) event {
	return event{TopicTaskExit, &eventstypes.TaskExit{ContainerID: id, ID: execID}}
}

// TestEventQueueKeepsEventsAcrossOutage: while containerd is away the
// queue keeps every event, pushed before or during the outage, retries
// the oldest with a delay that doubles up to retryMax, and delivers all of
// them in order once containerd answers; however many attempts failed
// (the old queue dropped an event after five, about 1.5 s).
func TestEventQueueKeepsEventsAcrossOutage(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		before     []event // pushed before the outage is noticed
		failures   int     // attempts that fail before containerd answers
		during     []event // pushed after the first failure
		wantDelays []time.Duration
	}{
		{
			name:       "one failed attempt",
			before:     []event{evCreate("c1"), evStart("c1")},
			failures:   1,
			wantDelays: []time.Duration{100 * ms},
		},
		{
			name:       "exits during the outage",
			before:     []event{evCreate("c1"), evStart("c1"), evCreate("c2"), evStart("c2")},
			failures:   3,
			during:     []event{evExit("c1"), evExecExit("c2", "e1"), evExit("c2")},
			wantDelays: []time.Duration{100 * ms, 200 * ms, 400 * ms},
		},
		{
			name:     "outage far past the old give-up, delay capped",
			before:   []event{evCreate("c1"), evStart("c1")},
			failures: 40,
			during:   []event{evOOM("c1"), evExit("c1")},
			wantDelays: append([]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms},
				slices.Repeat([]time.Duration{retryMax}, 35)...),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startQueue(t, maxKept, &retryClock{}, tt.before...)
			head := keyOf(tt.before[0])
			for i := range tt.failures {
				r.answer(t, head, errDown)
				if i == 0 {
					for _, e := range tt.during {
						r.q.push(e.topic, e.payload)
					}
				}
			}
			want := keys(append(slices.Clone(tt.before), tt.during...))
			for _, k := range want {
				r.answer(t, k, nil)
			}
			r.close(t)
			if got := r.clock.taken(); !slices.Equal(got, tt.wantDelays) {
				t.Errorf("retry delays: got %v, want %v", got, tt.wantDelays)
			}
			if got := dropKeys(r.drops()); len(got) > 0 {
				t.Errorf("dropped: got %q, want none", got)
			}
		})
	}
}

// TestEventQueueDelayResets: after containerd took an event, the next
// outage starts again from retryMin, so a containerd that comes back is
// found within retryMax however long it was gone before.
func TestEventQueueDelayResets(t *testing.T) {
	ms := time.Millisecond
	r := startQueue(t, maxKept, &retryClock{}, evCreate("c1"), evStart("c1"))
	for range 3 {
		r.answer(t, "/tasks/create c1", errDown)
	}
	r.answer(t, "/tasks/create c1", nil)
	r.answer(t, "/tasks/start c1", errDown)
	r.answer(t, "/tasks/start c1", nil)
	r.close(t)
	if got, want := r.clock.taken(), []time.Duration{100 * ms, 200 * ms, 400 * ms, 100 * ms}; !slices.Equal(got, want) {
		t.Errorf("retry delays: got %v, want %v", got, want)
	}
}

// TestEventQueueCloseRetriesSooner: close makes the queue try again at
// once, not at the end of a long delay, and from then on at most
// closingRetryMax apart, so the flush uses all of its deadline.
func TestEventQueueCloseRetriesSooner(t *testing.T) {
	ms := time.Millisecond
	clock := &retryClock{}
	r := startQueue(t, maxKept, clock, evCreate("c1"))
	for range 5 {
		r.answer(t, "/tasks/create c1", errDown)
	}
	// The sixth delay (retryMax) never passes: only close can bring the
	// next attempt.
	c := r.next(t, "/tasks/create c1")
	clock.setStopped(true)
	c.reply <- errDown
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- r.q.close(ctx) }()
	c = r.next(t, "/tasks/create c1")
	clock.setStopped(false)
	c.reply <- errDown
	r.answer(t, "/tasks/create c1", errDown)
	r.answer(t, "/tasks/create c1", nil)
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, retryMax, closingRetryMax, closingRetryMax}
	if got := clock.taken(); !slices.Equal(got, want) {
		t.Errorf("retry delays: got %v, want %v", got, want)
	}
}

// TestEventQueueBound: beyond the bound the oldest events that are neither
// TaskExit nor TaskOOM are dropped and reported; TaskExit and TaskOOM are
// kept even above it.
func TestEventQueueBound(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		before []event // pushed before the queue starts
		during []event // pushed while the first attempt is failing
		want   []string
		// wantDropped are the events reported dropped, in order.
		wantDropped []string
	}{
		{
			name:   "within the bound",
			limit:  4,
			before: []event{evCreate("c1"), evStart("c1"), evExit("c1"), evDelete("c1")},
			want:   []string{"/tasks/create c1", "/tasks/start c1", "/tasks/exit c1", "/tasks/delete c1"},
		},
		{
			name:        "oldest others dropped first",
			limit:       3,
			before:      []event{evCreate("c1"), evStart("c1"), evExecAdded("c1", "e1"), evExecStarted("c1", "e1"), evExecExit("c1", "e1")},
			want:        []string{"/tasks/exec-added c1/e1", "/tasks/exec-started c1/e1", "/tasks/exit c1/e1"},
			wantDropped: []string{"/tasks/create c1", "/tasks/start c1"},
		},
		{
			name:        "exits and OOMs kept above the bound",
			limit:       2,
			before:      []event{evCreate("c1"), evOOM("c1"), evExit("c1"), evCreate("c2"), evExit("c2"), evDelete("c1")},
			want:        []string{"/tasks/oom c1", "/tasks/exit c1", "/tasks/exit c2"},
			wantDropped: []string{"/tasks/create c1", "/tasks/create c2", "/tasks/delete c1"},
		},
		{
			name:        "the event being retried is dropped when it is the oldest",
			limit:       2,
			before:      []event{evCreate("c1"), evStart("c1")},
			during:      []event{evExit("c1"), evCreate("c2")},
			want:        []string{"/tasks/exit c1", "/tasks/create c2"},
			wantDropped: []string{"/tasks/create c1", "/tasks/start c1"},
		},
		{
			name:        "only exits: nothing to drop",
			limit:       1,
			before:      []event{evExit("c1"), evExit("c2")},
			during:      []event{evOOM("c3"), evExit("c3")},
			want:        []string{"/tasks/exit c1", "/tasks/exit c2", "/tasks/oom c3", "/tasks/exit c3"},
			wantDropped: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &retryClock{}
			r := startQueue(t, tt.limit, clock, tt.before...)
			// The queue looks at its inbox again after this failure,
			// before its next attempt: the retry waits for the pushes.
			clock.setStopped(true)
			r.answer(t, "", errDown)
			for _, e := range tt.during {
				r.q.push(e.topic, e.payload)
			}
			clock.setStopped(false)
			clock.fire()
			for _, k := range tt.want {
				r.answer(t, k, nil)
			}
			r.close(t)
			drops := r.drops()
			if got, want := dropKeys(drops), append([]string{}, tt.wantDropped...); !slices.Equal(got, want) {
				t.Errorf("dropped: got %q, want %q", got, want)
			}
			for _, d := range drops {
				if !errors.Is(d.why, errQueueFull) {
					t.Errorf("%s dropped because %v, want %v", d.key, d.why, errQueueFull)
				}
			}
		})
	}
}

// TestEventQueueRejected: an event the publisher reports as rejected is
// dropped after one attempt and the queue goes on; any other error keeps
// it and tries it again.
func TestEventQueueRejected(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantDropped bool
	}{
		{"does not marshal", fmt.Errorf("publish /tasks/start: %w: marshal: string field contains invalid UTF-8", ErrEventRejected), true},
		{"containerd refused it", fmt.Errorf("publish /tasks/start: containerd refused it: %w: invalid topic", ErrEventRejected), true},
		{"containerd unreachable", errDown, false},
		{"call timed out", fmt.Errorf("publish /tasks/start: %w", context.DeadlineExceeded), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startQueue(t, maxKept, &retryClock{}, evCreate("c1"), evStart("c1"), evExit("c1"))
			r.answer(t, "/tasks/create c1", nil)
			r.answer(t, "/tasks/start c1", tt.err)
			if !tt.wantDropped {
				r.answer(t, "/tasks/start c1", nil)
			}
			r.answer(t, "/tasks/exit c1", nil)
			r.close(t)
			drops := r.drops()
			switch {
			case !tt.wantDropped && len(drops) > 0:
				t.Errorf("dropped: got %q, want none", dropKeys(drops))
			case tt.wantDropped && (len(drops) != 1 || drops[0].key != "/tasks/start c1" || !errors.Is(drops[0].why, ErrEventRejected)):
				t.Errorf("dropped: got %v, want /tasks/start c1 for %v", drops, tt.err)
			}
		})
	}
}

// TestEventQueueClose: close delivers what is kept if containerd comes
// back before close's deadline; otherwise it returns at the deadline and,
// once run's context is cancelled (as Manager.Close does next), every
// event still kept is reported with its topic and ids, whether the queue
// was waiting to retry or stuck in a call containerd never answers.
func TestEventQueueClose(t *testing.T) {
	pushed := []event{evCreate("c1"), evExit("c1"), evExecExit("c2", "e1")}
	tests := []struct {
		name     string
		deadline time.Duration
		// script plays containerd while close waits.
		script      func(t *testing.T, r *queueRig)
		wantErr     bool
		wantDropped []string
	}{
		{
			name:     "containerd back before the deadline",
			deadline: 10 * time.Second,
			script: func(t *testing.T, r *queueRig) {
				r.answer(t, "/tasks/create c1", errDown)
				for _, k := range keys(pushed) {
					r.answer(t, k, nil)
				}
			},
			wantDropped: []string{},
		},
		{
			name:     "containerd still away at the deadline",
			deadline: 50 * time.Millisecond,
			script: func(t *testing.T, r *queueRig) {
				r.clock.setStopped(true)
				r.answer(t, "/tasks/create c1", errDown)
			},
			wantErr:     true,
			wantDropped: keys(pushed),
		},
		{
			name:     "call never answered",
			deadline: 50 * time.Millisecond,
			script: func(t *testing.T, r *queueRig) {
				r.answer(t, "/tasks/create c1", nil)
				// The call for the exit is taken and never answered.
				select {
				case <-r.pub.calls:
				case <-time.After(10 * time.Second):
					t.Fatal("no publish of the exit within 10s")
				}
			},
			wantErr:     true,
			wantDropped: []string{"/tasks/exit c1", "/tasks/exit c2/e1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startQueue(t, maxKept, &retryClock{}, pushed...)
			ctx, cancel := context.WithTimeout(context.Background(), tt.deadline)
			defer cancel()
			closed := make(chan error, 1)
			go func() { closed <- r.q.close(ctx) }()
			tt.script(t, r)
			select {
			case err := <-closed:
				if gotErr := err != nil; gotErr != tt.wantErr || (gotErr && !errors.Is(err, context.DeadlineExceeded)) {
					t.Errorf("close: got %v, want error %v (DeadlineExceeded)", err, tt.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("close did not return within 10s")
			}
			r.cancel()
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
				t.Fatal("run did not return within 10s of its context's cancel")
			}
			if got := dropKeys(r.drops()); !slices.Equal(got, tt.wantDropped) {
				t.Errorf("reported: got %q, want %q", got, tt.wantDropped)
			}
		})
	}
}

func TestEventIDs(t *testing.T) {
	tests := []struct {
		e              event
		wantID, wantEx string
	}{
		{evCreate("c1"), "c1", ""},
		{evExit("c1"), "c1", ""},
		{evExecExit("c1", "e1"), "c1", "e1"},
		{evExecAdded("c1", "e1"), "c1", "e1"},
		{evExecStarted("c1", "e1"), "c1", "e1"},
		{evDelete("c1"), "c1", ""},
		{event{TopicTaskDelete, &eventstypes.TaskDelete{ContainerID: "c1", ID: "e2"}}, "c1", "e2"},
		{evOOM("c1"), "c1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.e.topic, func(t *testing.T) {
			if id, execID := tt.e.ids(); id != tt.wantID || execID != tt.wantEx {
				t.Errorf("ids of %v: got %q %q, want %q %q", tt.e.payload, id, execID, tt.wantID, tt.wantEx)
			}
		})
	}
}
