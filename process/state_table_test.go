package process

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// outcome is what one operation in one state does: the errdefs class it
// fails with (nil: succeeds), the state it leaves, and whether it ran the
// runtime's kill.
type outcome struct {
	err         error
	state       State
	runtimeKill bool
}

var (
	ok     = func(s State) outcome { return outcome{state: s} }
	fp     = func(s State) outcome { return outcome{err: errdefs.ErrFailedPrecondition, state: s} }
	gone   = func(s State) outcome { return outcome{err: errdefs.ErrNotFound, state: s} }
	viaRun = func(s State) outcome { return outcome{state: s, runtimeKill: true} }
)

// initOps are the operations of an init process, by name.
var initOps = []string{"start", "kill TERM", "kill KILL", "kill KILL all", "delete", "pause", "resume", "update", "exit"}

// initTable is what every operation does in every state of an init
// process. A stopped process answers every signal NotFound, as the runc
// shim does (containerd's TestContainerKill); SIGKILL of a frozen
// container goes through the runtime, which thaws it (runc PR 3217).
var initTable = map[State]map[string]outcome{
	Created: {
		"start": ok(Running), "kill TERM": ok(Created), "kill KILL": ok(Created), "kill KILL all": viaRun(Created),
		"delete": ok(Deleted), "pause": fp(Created), "resume": fp(Created), "update": ok(Created), "exit": ok(Stopped),
	},
	Starting: {
		"start": fp(Starting), "kill TERM": ok(Starting), "kill KILL": ok(Starting), "kill KILL all": viaRun(Starting),
		"delete": fp(Starting), "pause": fp(Starting), "resume": fp(Starting), "update": ok(Starting), "exit": ok(Stopped),
	},
	Running: {
		"start": fp(Running), "kill TERM": ok(Running), "kill KILL": ok(Running), "kill KILL all": viaRun(Running),
		"delete": fp(Running), "pause": ok(Paused), "resume": fp(Running), "update": ok(Running), "exit": ok(Stopped),
	},
	Pausing: {
		"start": fp(Pausing), "kill TERM": ok(Pausing), "kill KILL": viaRun(Pausing), "kill KILL all": viaRun(Pausing),
		"delete": fp(Pausing), "pause": fp(Pausing), "resume": fp(Pausing), "update": ok(Pausing), "exit": ok(Stopped),
	},
	Paused: {
		"start": fp(Paused), "kill TERM": ok(Paused), "kill KILL": viaRun(Paused), "kill KILL all": viaRun(Paused),
		"delete": fp(Paused), "pause": fp(Paused), "resume": ok(Running), "update": ok(Paused), "exit": ok(Stopped),
	},
	Resuming: {
		"start": fp(Resuming), "kill TERM": ok(Resuming), "kill KILL": viaRun(Resuming), "kill KILL all": viaRun(Resuming),
		"delete": fp(Resuming), "pause": fp(Resuming), "resume": fp(Resuming), "update": ok(Resuming), "exit": ok(Stopped),
	},
	Stopped: {
		"start": fp(Stopped), "kill TERM": gone(Stopped), "kill KILL": gone(Stopped), "kill KILL all": viaRun(Stopped),
		"delete": ok(Deleted), "pause": fp(Stopped), "resume": fp(Stopped), "update": fp(Stopped), "exit": ok(Stopped),
	},
	Deleting: {
		"start": fp(Deleting), "kill TERM": gone(Deleting), "kill KILL": gone(Deleting), "kill KILL all": gone(Deleting),
		"delete": fp(Deleting), "pause": fp(Deleting), "resume": fp(Deleting), "update": fp(Deleting), "exit": ok(Deleting),
	},
	Deleted: {
		"start": fp(Deleted), "kill TERM": gone(Deleted), "kill KILL": gone(Deleted), "kill KILL all": gone(Deleted),
		"delete": fp(Deleted), "pause": fp(Deleted), "resume": fp(Deleted), "update": fp(Deleted), "exit": ok(Deleted),
	},
}

// initIn returns an init process in state st, backed by a live child
// (or a dead one, for the states after an exit). The in-between states
// are set directly: they only exist while a runtime call runs.
func initIn(t *testing.T, eng *fakeruntime.Runtime, st State) *Init {
	t.Helper()
	p, child := createdInit(t, eng)
	// runc delete --force kills the process waiting in runc init.
	eng.OnDelete = func(context.Context, string, bool) error {
		_ = child.Process.Kill()
		p.SetExited(KilledStatus, time.Now())
		return nil
	}
	ctx := context.Background()
	switch st {
	case Created:
	case Running, Paused:
		if err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if st == Paused {
			if err := p.Pause(ctx); err != nil {
				t.Fatal(err)
			}
		}
	case Stopped:
		p.SetExited(0, time.Now())
	case Deleted:
		p.SetExited(0, time.Now())
		if _, err := p.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	case Starting, Pausing, Resuming, Deleting:
		p.mu.Lock()
		p.state = st
		p.mu.Unlock()
	default:
		t.Fatalf("no way to reach %s", st)
	}
	wantState(t, p, st)
	return p
}

func runInitOp(p *Init, op string) error {
	ctx := context.Background()
	switch op {
	case "start":
		return p.Start(ctx)
	case "kill TERM":
		return p.Kill(ctx, int(unix.SIGTERM), false)
	case "kill KILL":
		return p.Kill(ctx, int(unix.SIGKILL), false)
	case "kill KILL all":
		return p.Kill(ctx, int(unix.SIGKILL), true)
	case "delete":
		_, err := p.Delete(ctx)
		return err
	case "pause":
		return p.Pause(ctx)
	case "resume":
		return p.Resume(ctx)
	case "update":
		return p.Update(ctx, &specs.LinuxResources{})
	case "exit":
		p.SetExited(1, time.Now())
		return nil
	}
	panic("unknown op " + op)
}

// TestInitStateTable runs every operation in every state of an init
// process.
func TestInitStateTable(t *testing.T) {
	for _, st := range allStates {
		row, found := initTable[st]
		if !found {
			t.Errorf("no row for %s", st)
			continue
		}
		for _, op := range initOps {
			want, found := row[op]
			if !found {
				t.Errorf("%s: no outcome for %q", st, op)
				continue
			}
			t.Run(st.String()+"/"+op, func(t *testing.T) {
				eng := &fakeruntime.Runtime{}
				p := initIn(t, eng, st)
				before := len(eng.Calls())
				err := runInitOp(p, op)
				checkOutcome(t, err, p.Status().State, want)
				killed := false
				for _, c := range eng.Calls()[before:] {
					killed = killed || len(c) > 4 && c[:4] == "kill"
				}
				if killed != want.runtimeKill {
					t.Errorf("runtime kill called = %v, want %v (calls %q)", killed, want.runtimeKill, eng.Calls()[before:])
				}
			})
		}
	}
}

func checkOutcome(t *testing.T, err error, got State, want outcome) {
	t.Helper()
	switch {
	case want.err == nil && err != nil:
		t.Errorf("got %v, want success", err)
	case want.err != nil && !errors.Is(err, want.err):
		t.Errorf("got %v, want %v", err, want.err)
	}
	if got != want.state {
		t.Errorf("state after: got %s, want %s", got, want.state)
	}
}

// TestInitFailedDeleteAfterExit: a delete that fails once the process has
// exited leaves it Stopped, never Created, so a later Start cannot move a
// dead process to running.
func TestInitFailedDeleteAfterExit(t *testing.T) {
	ctx := context.Background()
	for _, from := range []State{Created, Stopped} {
		t.Run(from.String(), func(t *testing.T) {
			eng := &fakeruntime.Runtime{}
			p, child := createdInit(t, eng)
			if from == Stopped {
				p.SetExited(0, time.Now())
			}
			eng.OnDelete = func(context.Context, string, bool) error {
				_ = child.Process.Kill()
				p.SetExited(KilledStatus, time.Now())
				return errors.New("exit status 1: runc delete failed")
			}
			if _, err := p.Delete(ctx); err == nil {
				t.Fatal("Delete: got nil, want the runtime's error")
			}
			wantState(t, p, Stopped)
			if err := p.Start(ctx); !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Start after the failed delete: got %v, want FailedPrecondition", err)
			}
			wantState(t, p, Stopped)
		})
	}
}

var execOps = []string{"start", "kill TERM", "kill KILL", "delete", "exit"}

// execTable is what every operation does in every state of an exec
// process (an exec has no pause of its own and is never Creating).
var execTable = map[State]map[string]outcome{
	Created:  {"start": ok(Running), "kill TERM": fp(Created), "kill KILL": fp(Created), "delete": ok(Deleted), "exit": ok(Stopped)},
	Starting: {"start": fp(Starting), "kill TERM": fp(Starting), "kill KILL": fp(Starting), "delete": fp(Starting), "exit": ok(Stopped)},
	Running:  {"start": fp(Running), "kill TERM": ok(Running), "kill KILL": ok(Running), "delete": fp(Running), "exit": ok(Stopped)},
	Stopped:  {"start": fp(Stopped), "kill TERM": gone(Stopped), "kill KILL": gone(Stopped), "delete": ok(Deleted), "exit": ok(Stopped)},
	Deleted:  {"start": fp(Deleted), "kill TERM": gone(Deleted), "kill KILL": gone(Deleted), "delete": fp(Deleted), "exit": ok(Deleted)},
}

func execIn(t *testing.T, st State) *Exec {
	t.Helper()
	child := testutil.StartSleeper(t)
	eng := &fakeruntime.Runtime{OnExec: func(_ context.Context, _ string, _ specs.Process, opts *runc.ExecOpts) error {
		return os.WriteFile(opts.PidFile, []byte(strconv.Itoa(child.Process.Pid)), 0o600)
	}}
	bundle := t.TempDir()
	p := NewExec(ExecConfig{ContainerID: "c1", ExecID: "e1", Bundle: bundle, Spec: specs.Process{Args: []string{"true"}}}, eng)
	ctx := context.Background()
	switch st {
	case Created:
	case Running, Stopped, Deleted:
		if _, err := p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if st != Running {
			p.SetExited(0, time.Now())
		}
		if st == Deleted {
			if _, err := p.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		}
	case Starting:
		p.mu.Lock()
		p.state = st
		p.mu.Unlock()
	default:
		t.Fatalf("no way to reach %s", st)
	}
	if got := p.Status().State; got != st {
		t.Fatalf("state: got %s, want %s", got, st)
	}
	return p
}

// TestExecStateTable runs every operation in every state of an exec
// process.
func TestExecStateTable(t *testing.T) {
	for st, row := range execTable {
		for _, op := range execOps {
			want, found := row[op]
			if !found {
				t.Errorf("%s: no outcome for %q", st, op)
				continue
			}
			t.Run(st.String()+"/"+op, func(t *testing.T) {
				p := execIn(t, st)
				ctx := context.Background()
				var err error
				switch op {
				case "start":
					_, err = p.Start(ctx)
				case "kill TERM":
					err = p.Kill(ctx, int(unix.SIGTERM))
				case "kill KILL":
					err = p.Kill(ctx, int(unix.SIGKILL))
				case "delete":
					_, err = p.Delete(ctx)
				case "exit":
					p.SetExited(1, time.Now())
				}
				checkOutcome(t, err, p.Status().State, want)
			})
		}
	}
}
