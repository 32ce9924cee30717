package sandbox

import (
	"fmt"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// exitRouter is the one owner of exits and of the order of the pod's
// events. Every exit the reaper does not route to a runtime command comes
// here, and so does every event the Manager publishes, so the order in
// which they reach the event queue is decided in one place, under one
// lock, by these rules:
//
//  1. An exit is matched to a started process by pid. An exit whose pid is
//     not known yet is offered to every open start window (a create or an
//     exec start whose runtime call is still running: the process it forks
//     may die before its pid is read), and matched when that start returns.
//     An exit no window wants (an orphan reparented to the shim) is dropped.
//  2. TaskExit of a process follows its TaskCreate and TaskStart (or
//     TaskExecStarted): an init's exit seen while its Start runs is held
//     until the Start has published.
//  3. An init's TaskExit follows the TaskExit of every exec that was started
//     (or was starting) when it exited, and the init is recorded as exited
//     (Wait returns, State says stopped) only then — containerd issue 10589
//     and its test TestIssue10589.
//  4. Once an init's exit has been seen, no exec of its container may start
//     (containerd 10634); an exec may still be created while the init's
//     exit is held, as the runc shim allows.
//  5. At an init's exit the container's OOM kill counter is read before
//     TaskExit is published, and TaskOOM goes first when it rose:
//     containerd before 2.3 decides "OOMKilled" when the exit arrives
//     (containerd PR 12714). The OOM watch's later report of the same kill
//     is not published again.
//  6. An exec that outlives its container's delete (a shared PID namespace)
//     stays routed: its Wait returns and its TaskExit is published when it
//     exits.
//  7. When the init of a container without a PID namespace of its own
//     exits, the rest of its processes are killed (they do not die with
//     it) before its TaskExit is published, as the runc shim does.
//
// The router never blocks and never runs the runtime: what must happen
// outside the lock (killing the rest of a container without its own PID
// namespace, closing an orphaned exec's streams) is returned to the
// caller as follow-ups. exits_test.go walks these rules as a table.
type exitRouter struct {
	events eventSink

	mu sync.Mutex
	// live maps the pid of every started process whose exit has not been
	// seen to it. Guarded by mu.
	live map[int]*routed
	// windows are the starts in flight (rule 1). Guarded by mu.
	windows map[*startWindow]struct{}
	// tasks are the containers by id, from their create to their delete.
	// Guarded by mu.
	tasks map[string]*taskExits
}

// eventSink takes events in the order they must be published.
type eventSink interface {
	push(topic string, payload proto.Message)
}

// exitable is a process whose exit the router records.
type exitable interface {
	SetExited(status int, at time.Time)
}

// routed is a started process waiting for its exit.
type routed struct {
	task   *taskExits
	execID string // "" for the init
	p      exitable
	// closeIO closes an exec's streams; set when its container was
	// deleted before it exited (rule 6).
	closeIO func()
}

// startWindow collects the exits of unknown pids while one start runs.
type startWindow struct {
	exits []reaper.Exit
}

// taskExits is what the router knows of one container. Guarded by
// exitRouter.mu.
type taskExits struct {
	id   string
	init exitable
	// starting counts the init Starts in flight (rule 2).
	starting int
	// initExit is the init's exit once seen; published is set once its
	// TaskExit is out.
	initExit  *reaper.Exit
	published bool
	// execs counts exec starts in flight and started execs whose exit has
	// not been published (rule 3).
	execs int
	// oomKills reads the OOM kill counter; oomSeen is its value at create
	// and after each published TaskOOM (rule 5). nil: no OOM reporting.
	oomKills func() (uint64, error)
	oomSeen  uint64
	// killOnExit: the container has no PID namespace of its own; killing
	// is set while its remaining processes are being killed (rule 7).
	killOnExit bool
	killing    bool
}

// followUp is work the caller does after the router's lock is released.
type followUp struct {
	// killAll names a container whose remaining processes must be killed.
	killAll string
	// closeIO closes the streams of an exec that outlived its container.
	closeIO func()
}

func newExitRouter(events eventSink) *exitRouter {
	return &exitRouter{
		events:  events,
		live:    make(map[int]*routed),
		windows: make(map[*startWindow]struct{}),
		tasks:   make(map[string]*taskExits),
	}
}

// publish queues an event that is not about an exit, in order with the
// rest.
func (r *exitRouter) publish(topic string, payload proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events.push(topic, payload)
}

// openWindow starts collecting exits of unknown pids (rule 1); the caller
// must close it with one of the end calls or closeWindow.
func (r *exitRouter) openWindow() *startWindow {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &startWindow{}
	r.windows[w] = struct{}{}
	return w
}

// closeWindow ends a start that failed.
func (r *exitRouter) closeWindow(w *startWindow) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.windows, w)
}

// takeLocked closes w and returns the exit of pid it collected, if any.
func (r *exitRouter) takeLocked(w *startWindow, pid int) *reaper.Exit {
	delete(r.windows, w)
	for _, e := range w.exits {
		if e.Pid == pid {
			return &e
		}
	}
	return nil
}

// createdTask describes a container whose runtime create succeeded.
type createdTask struct {
	id   string
	pid  int
	init exitable
	// oomKills reads the OOM kill counter, nil when there is none to
	// read; oomBase is its value at create, read by the caller before
	// the router's lock is taken.
	oomKills   func() (uint64, error)
	oomBase    uint64
	killOnExit bool
	event      *eventstypes.TaskCreate
}

// created registers a container's init, closes its create's window and
// publishes TaskCreate, then its TaskExit if it died already.
func (r *exitRouter) created(w *startWindow, c createdTask) []followUp {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &taskExits{id: c.id, init: c.init, oomKills: c.oomKills, oomSeen: c.oomBase, killOnExit: c.killOnExit}
	r.tasks[c.id] = t
	r.events.push(TopicTaskCreate, c.event)
	if e := r.takeLocked(w, c.pid); e != nil {
		return r.initExitedLocked(t, *e)
	}
	r.live[c.pid] = &routed{task: t, p: t.init}
	return nil
}

// starting marks an init Start in flight: its exit is held (rule 2).
func (r *exitRouter) starting(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.tasks[id]; ok {
		t.starting++
	}
}

// started ends an init Start, publishing TaskStart when it succeeded and
// then the init's exit if it was held for it.
func (r *exitRouter) started(id string, pid int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, found := r.tasks[id]
	if !found {
		return
	}
	t.starting--
	if ok {
		r.events.push(TopicTaskStart, &eventstypes.TaskStart{ContainerID: id, Pid: uint32(pid)})
	}
	r.releaseInitLocked(t)
}

// execStarting admits an exec start (rule 4) and opens its window. The
// caller must end it with execStarted.
func (r *exitRouter) execStarting(id, execID string) (*startWindow, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[id]
	if !ok {
		return nil, fmt.Errorf("start exec %q in %q: %w", execID, id, errdefs.ErrNotFound)
	}
	if t.initExit != nil {
		return nil, fmt.Errorf("start exec %q: container %q init process is not running: %w", execID, id, errdefs.ErrFailedPrecondition)
	}
	t.execs++
	w := &startWindow{}
	r.windows[w] = struct{}{}
	return w, nil
}

// execStarted ends an exec start. On success it publishes
// TaskExecStarted, then the exec's TaskExit if it died already; on
// failure the init's exit may now be published (rule 3).
func (r *exitRouter) execStarted(w *startWindow, id, execID string, p exitable, pid int, ok bool) []followUp {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tasks[id]
	if t == nil {
		// Deleted while starting (never while the init lives, which
		// delete refuses): route the exec on its own.
		t = &taskExits{id: id, published: true}
		t.execs++
	}
	if !ok {
		delete(r.windows, w)
		t.execs--
		return r.releaseInitLocked(t)
	}
	r.events.push(TopicTaskExecStarted, &eventstypes.TaskExecStarted{ContainerID: id, ExecID: execID, Pid: uint32(pid)})
	x := &routed{task: t, execID: execID, p: p}
	if e := r.takeLocked(w, pid); e != nil {
		return r.execExitedLocked(x, *e)
	}
	r.live[pid] = x
	return nil
}

// exit routes one reaped exit. It never blocks.
func (r *exitRouter) exit(e reaper.Exit) []followUp {
	r.mu.Lock()
	defer r.mu.Unlock()
	x, ok := r.live[e.Pid]
	if !ok {
		for w := range r.windows {
			w.exits = append(w.exits, e)
		}
		return nil
	}
	delete(r.live, e.Pid)
	if x.execID != "" {
		return r.execExitedLocked(x, e)
	}
	return r.initExitedLocked(x.task, e)
}

func (r *exitRouter) initExitedLocked(t *taskExits, e reaper.Exit) []followUp {
	t.initExit = &e
	if t.killOnExit {
		t.killing = true
		return []followUp{{killAll: t.id}}
	}
	return r.releaseInitLocked(t)
}

// killedAll ends rule 7's kill of what a container's init left behind.
func (r *exitRouter) killedAll(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.tasks[id]; ok && t.killing {
		t.killing = false
		r.releaseInitLocked(t)
	}
}

func (r *exitRouter) execExitedLocked(x *routed, e reaper.Exit) []followUp {
	x.p.SetExited(e.Status, e.Timestamp)
	r.events.push(TopicTaskExit, &eventstypes.TaskExit{
		ContainerID: x.task.id,
		ID:          x.execID,
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    timestamppb.New(e.Timestamp),
	})
	x.task.execs--
	var out []followUp
	if x.closeIO != nil {
		out = append(out, followUp{closeIO: x.closeIO})
	}
	return append(out, r.releaseInitLocked(x.task)...)
}

// releaseInitLocked publishes an init's seen exit once nothing holds it
// (rules 2, 3 and 5).
func (r *exitRouter) releaseInitLocked(t *taskExits) []followUp {
	if t.initExit == nil || t.published || t.starting > 0 || t.execs > 0 || t.killing {
		return nil
	}
	t.published = true
	// The one read under the lock: a cgroupfs counter (memory, never
	// blocks), and it must come between the exit and its TaskExit.
	if t.oomKills != nil {
		if n, err := t.oomKills(); err == nil && n > t.oomSeen {
			t.oomSeen = n
			r.events.push(TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: t.id})
		}
	}
	e := *t.initExit
	t.init.SetExited(e.Status, e.Timestamp)
	r.events.push(TopicTaskExit, &eventstypes.TaskExit{
		ContainerID: t.id,
		ID:          t.id,
		Pid:         uint32(e.Pid),
		ExitStatus:  uint32(e.Status),
		ExitedAt:    timestamppb.New(e.Timestamp),
	})
	return nil
}

// oom publishes TaskOOM for a rise of a container's OOM kill counter to
// kills that was not published yet (rule 5).
func (r *exitRouter) oom(id string, kills uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.tasks[id]
	if !ok || kills <= t.oomSeen {
		return
	}
	t.oomSeen = kills
	r.events.push(TopicTaskOOM, &eventstypes.TaskOOM{ContainerID: id})
}

// execStreams is an exec of a deleted container: its pid (0: never
// started) and what closes its streams.
type execStreams struct {
	pid     int
	closeIO func()
}

// deleted forgets a container and publishes TaskDelete. Its init is no
// longer routed (its delete recorded the exit it reports). Of its execs,
// those still running stay routed and have their streams closed once they
// exit (rule 6); deleted returns the closers of the others for the caller
// to run outside the lock.
func (r *exitRouter) deleted(id string, execs []execStreams, event *eventstypes.TaskDelete) []func() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.tasks[id]; ok {
		delete(r.tasks, id)
		for pid, x := range r.live {
			if x.task == t && x.execID == "" {
				delete(r.live, pid)
			}
		}
	}
	var now []func()
	for _, e := range execs {
		x, ok := r.live[e.pid]
		if e.pid == 0 || !ok || x.execID == "" {
			now = append(now, e.closeIO)
			continue
		}
		x.closeIO = e.closeIO
	}
	r.events.push(TopicTaskDelete, event)
	return now
}
