package sandbox

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// sink records what the router publishes, as "topic id[/exec] [status]".
type sink struct{ got []string }

func (s *sink) push(topic string, payload proto.Message) {
	line := topic
	switch e := payload.(type) {
	case *eventstypes.TaskCreate:
		line += " " + e.ContainerID
	case *eventstypes.TaskStart:
		line += " " + e.ContainerID
	case *eventstypes.TaskExecStarted:
		line += " " + e.ContainerID + "/" + e.ExecID
	case *eventstypes.TaskExit:
		if e.ID == e.ContainerID {
			line += fmt.Sprintf(" %s %d", e.ContainerID, e.ExitStatus)
		} else {
			line += fmt.Sprintf(" %s/%s %d", e.ContainerID, e.ID, e.ExitStatus)
		}
	case *eventstypes.TaskOOM:
		line += " " + e.ContainerID
	case *eventstypes.TaskDelete:
		line += " " + e.ContainerID
	}
	s.got = append(s.got, line)
}

// recorder is a process whose recorded exit the test reads.
type recorder struct {
	exited bool
	status int
}

func (r *recorder) SetExited(status int, _ time.Time) {
	if !r.exited {
		r.exited, r.status = true, status
	}
}

// routerStep is one input to the router. Ops:
//
//	create ID PID [early: the exit of PID came while the create ran]
//	starting ID / started ID / startFailed ID
//	execStarting ID EXEC (opens its window) / execStarted ID EXEC PID / execFailed ID EXEC
//	exit PID STATUS
//	oomCounter ID N (the cgroup's counter now reads N) / oomWatch ID N (the watch reports N)
//	killedAll ID (the kill of what the init left is done)
//	delete ID
type routerStep struct {
	op       string
	id, exec string
	pid, n   int
	// wantErr is the errdefs class execStarting must fail with.
	wantErr error
	// want are the events this step publishes.
	want []string
	// wantKillAll / wantCloseIO: the follow-ups this routerStep returns.
	wantKillAll string
	wantCloseIO bool
	// recorded: after this routerStep, the init of id has (or has not) been
	// recorded as exited.
	initExited *bool
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

const (
	createT = TopicTaskCreate
	startT  = TopicTaskStart
	started = TopicTaskExecStarted
	exitT   = TopicTaskExit
	oomT    = TopicTaskOOM
	deleteT = TopicTaskDelete
)

// TestExitRouterRules walks the rules of exits.go as inputs and the events
// each input publishes.
func TestExitRouterRules(t *testing.T) {
	tests := []struct {
		name  string
		steps []routerStep
	}{
		{"exit after start", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "starting", id: "c"},
			{op: "started", id: "c", want: []string{startT + " c"}},
			{op: "exit", pid: 10, n: 3, want: []string{exitT + " c 3"}, initExited: yes()},
		}},
		{"rule 2: exit during start waits for TaskStart", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "starting", id: "c"},
			{op: "exit", pid: 10, n: 0, initExited: no()},
			{op: "started", id: "c", want: []string{startT + " c", exitT + " c 0"}, initExited: yes()},
		}},
		{"rule 2: exit during a failed start still published", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "starting", id: "c"},
			{op: "exit", pid: 10, n: 137},
			{op: "startFailed", id: "c", want: []string{exitT + " c 137"}, initExited: yes()},
		}},
		{"rule 1: exit before the create returned", []routerStep{
			{op: "create", id: "c", pid: 10, n: 1, want: []string{createT + " c", exitT + " c 1"}, initExited: yes()},
		}},
		{"rule 1: unknown pid with no start in flight is dropped", []routerStep{
			{op: "exit", pid: 10, n: 1},
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}, initExited: no()},
		}},
		{"rule 1: exec exit before its start returned", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "execStarting", id: "c", exec: "e"},
			{op: "exit", pid: 20, n: 0},
			{op: "execStarted", id: "c", exec: "e", pid: 20, want: []string{started + " c/e", exitT + " c/e 0"}},
		}},
		{"rule 1: two starts in flight each take their own exit", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "execStarting", id: "c", exec: "e1"},
			{op: "execStarting", id: "c", exec: "e2"},
			{op: "exit", pid: 21, n: 1},
			{op: "exit", pid: 22, n: 2},
			{op: "execStarted", id: "c", exec: "e2", pid: 22, want: []string{started + " c/e2", exitT + " c/e2 2"}},
			{op: "execStarted", id: "c", exec: "e1", pid: 21, want: []string{started + " c/e1", exitT + " c/e1 1"}},
		}},
		{"rule 3: init exit waits for a started exec", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "starting", id: "c"},
			{op: "started", id: "c", want: []string{startT + " c"}},
			{op: "execStarting", id: "c", exec: "e"},
			{op: "execStarted", id: "c", exec: "e", pid: 20, want: []string{started + " c/e"}},
			{op: "exit", pid: 10, n: 0, initExited: no()},
			{op: "exit", pid: 20, n: 137, want: []string{exitT + " c/e 137", exitT + " c 0"}, initExited: yes()},
		}},
		{"rule 3 and 4: init exit during an exec start that then fails (containerd 10589)", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "starting", id: "c"},
			{op: "started", id: "c", want: []string{startT + " c"}},
			{op: "execStarting", id: "c", exec: "e1"},
			{op: "exit", pid: 10, n: 137, initExited: no()},
			{op: "execStarting", id: "c", exec: "e2", wantErr: errdefs.ErrFailedPrecondition},
			{op: "execFailed", id: "c", exec: "e1", want: []string{exitT + " c 137"}, initExited: yes()},
		}},
		{"rule 4: exec start refused once the init's exit is out (containerd 10634)", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "exit", pid: 10, n: 0, want: []string{exitT + " c 0"}},
			{op: "execStarting", id: "c", exec: "e", wantErr: errdefs.ErrFailedPrecondition},
		}},
		{"exec start of an unknown container", []routerStep{
			{op: "execStarting", id: "c", exec: "e", wantErr: errdefs.ErrNotFound},
		}},
		{"rule 5: OOM and exit together: TaskOOM first", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "oomCounter", id: "c", n: 1},
			{op: "exit", pid: 10, n: 137, want: []string{oomT + " c", exitT + " c 137"}},
			{op: "oomWatch", id: "c", n: 1},
		}},
		{"rule 5: OOM seen by the watch first is not published again", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "oomCounter", id: "c", n: 1},
			{op: "oomWatch", id: "c", n: 1, want: []string{oomT + " c"}},
			{op: "exit", pid: 10, n: 137, want: []string{exitT + " c 137"}},
		}},
		{"rule 5: a counter that did not rise publishes no TaskOOM", []routerStep{
			{op: "oomCounter", id: "c", n: 4},
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "exit", pid: 10, n: 1, want: []string{exitT + " c 1"}},
		}},
		{"rule 6: exec exit after its container's delete", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "execStarting", id: "c", exec: "e"},
			{op: "execStarted", id: "c", exec: "e", pid: 20, want: []string{started + " c/e"}},
			{op: "delete", id: "c", want: []string{deleteT + " c"}},
			{op: "exit", pid: 20, n: 137, want: []string{exitT + " c/e 137"}, wantCloseIO: true},
			// The deleted init's pid is no longer routed.
			{op: "exit", pid: 10, n: 0},
		}},
		{"rule 7: no own PID namespace: the init's exit kills the rest first", []routerStep{
			{op: "create", id: "shared", pid: 10, want: []string{createT + " shared"}},
			{op: "execStarting", id: "shared", exec: "e"},
			{op: "execStarted", id: "shared", exec: "e", pid: 20, want: []string{started + " shared/e"}},
			{op: "exit", pid: 10, n: 0, wantKillAll: "shared", initExited: no()},
			{op: "exit", pid: 20, n: 137, want: []string{exitT + " shared/e 137"}, initExited: no()},
			{op: "killedAll", id: "shared", want: []string{exitT + " shared 0"}, initExited: yes()},
		}},
		{"rule 7: nothing else running: TaskExit once the kill is done", []routerStep{
			{op: "create", id: "shared", pid: 10, want: []string{createT + " shared"}},
			{op: "exit", pid: 10, n: 3, wantKillAll: "shared", initExited: no()},
			{op: "killedAll", id: "shared", want: []string{exitT + " shared 3"}, initExited: yes()},
		}},
		{"an exit is reported once", []routerStep{
			{op: "create", id: "c", pid: 10, want: []string{createT + " c"}},
			{op: "exit", pid: 10, n: 1, want: []string{exitT + " c 1"}},
			{op: "exit", pid: 10, n: 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			r := newExitRouter(s)
			inits := map[string]*recorder{}
			counters := map[string]uint64{}
			windows := map[string]*startWindow{}
			for i, st := range tt.steps {
				before := len(s.got)
				var fs []followUp
				var err error
				switch st.op {
				case "create":
					w := r.openWindow()
					if st.n != 0 {
						fs = append(fs, r.exit(reaper.Exit{Pid: st.pid, Status: st.n})...)
					}
					inits[st.id] = &recorder{}
					id := st.id
					fs = append(fs, r.created(w, createdTask{
						id:         id,
						pid:        st.pid,
						init:       inits[id],
						oomKills:   func() (uint64, error) { return counters[id], nil },
						oomBase:    counters[id],
						killOnExit: id == "shared",
						event:      &eventstypes.TaskCreate{ContainerID: id},
					})...)
				case "starting":
					r.starting(st.id)
				case "started", "startFailed":
					r.started(st.id, 10, st.op == "started")
				case "execStarting":
					windows[st.exec], err = r.execStarting(st.id, st.exec)
				case "execStarted", "execFailed":
					fs = r.execStarted(windows[st.exec], st.id, st.exec, &recorder{}, st.pid, st.op == "execStarted")
				case "exit":
					fs = r.exit(reaper.Exit{Pid: st.pid, Status: st.n})
				case "oomCounter":
					counters[st.id] = uint64(st.n)
				case "killedAll":
					r.killedAll(st.id)
				case "oomWatch":
					r.oom(st.id, uint64(st.n))
				case "delete":
					var execs []execStreams
					for pid := range r.live {
						if r.live[pid].execID != "" {
							execs = append(execs, execStreams{pid: pid, closeIO: func() {}})
						}
					}
					closeNow := r.deleted(st.id, execs, &eventstypes.TaskDelete{ContainerID: st.id})
					if len(closeNow) != 0 {
						t.Errorf("routerStep %d (%s): %d streams closed at once, want them kept for the live exec", i, st.op, len(closeNow))
					}
				default:
					t.Fatalf("routerStep %d: unknown op %q", i, st.op)
				}
				switch {
				case st.wantErr == nil && err != nil:
					t.Fatalf("routerStep %d (%s): %v", i, st.op, err)
				case st.wantErr != nil && !errors.Is(err, st.wantErr):
					t.Fatalf("routerStep %d (%s): got %v, want %v", i, st.op, err, st.wantErr)
				}
				if got := s.got[before:]; !slices.Equal(got, st.want) {
					t.Fatalf("routerStep %d (%s %s%s %d): published %q, want %q", i, st.op, st.id, st.exec, st.pid, got, st.want)
				}
				var killAll string
				var closeIO bool
				for _, f := range fs {
					if f.killAll != "" {
						killAll = f.killAll
					}
					closeIO = closeIO || f.closeIO != nil
				}
				if killAll != st.wantKillAll || closeIO != st.wantCloseIO {
					t.Errorf("routerStep %d (%s): follow-ups killAll=%q closeIO=%v, want %q %v", i, st.op, killAll, closeIO, st.wantKillAll, st.wantCloseIO)
				}
				if st.initExited != nil {
					// Each case has one container.
					for id, init := range inits {
						if init.exited != *st.initExited {
							t.Errorf("routerStep %d (%s): init of %s recorded as exited = %v, want %v", i, st.op, id, init.exited, *st.initExited)
						}
					}
				}
			}
			if len(r.windows) != 0 {
				t.Errorf("%d start windows left open", len(r.windows))
			}
		})
	}
}
