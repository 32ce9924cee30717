package process

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

var allStates = []State{Created, Starting, Running, Stopped, Deleting, Deleted, Pausing, Paused, Resuming}

// wantAllowed is the transition table as DESIGN.md and the comments in
// state.go describe it, written out pair by pair.
var wantAllowed = map[[2]State]bool{
	{Created, Starting}: true,
	{Created, Stopped}:  true, // died before start
	{Created, Deleting}: true,
	{Starting, Running}: true,
	{Starting, Stopped}: true, // exited before Start returned
	{Starting, Created}: true, // runc start failed
	{Running, Stopped}:  true,
	{Running, Pausing}:  true,
	{Pausing, Paused}:   true,
	{Pausing, Running}:  true, // runc pause failed
	{Pausing, Stopped}:  true, // died before it froze
	{Paused, Resuming}:  true,
	{Paused, Stopped}:   true, // killed while frozen
	{Resuming, Running}: true,
	{Resuming, Paused}:  true, // runc resume failed
	{Resuming, Stopped}: true,
	{Stopped, Deleting}: true,
	{Deleting, Deleted}: true,
	{Deleting, Created}: true, // delete failed, retry
	{Deleting, Stopped}: true, // delete failed, retry
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{Created, "created"},
		{Starting, "starting"},
		{Running, "running"},
		{Stopped, "stopped"},
		{Deleting, "deleting"},
		{Deleted, "deleted"},
		{Pausing, "pausing"},
		{Paused, "paused"},
		{Resuming, "resuming"},
		{State(0), "state(0)"},
		{State(42), "state(42)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", int(tt.s), got, tt.want)
		}
	}
}

// TestTransitionMatrix walks the full 9x9 matrix (and the zero state,
// which a process has before Create).
func TestTransitionMatrix(t *testing.T) {
	from := append([]State{State(0)}, allStates...)
	for _, f := range from {
		for _, to := range allStates {
			want := wantAllowed[[2]State{f, to}]
			t.Run(fmt.Sprintf("%s->%s", f, to), func(t *testing.T) {
				if got := allowed(f, to); got != want {
					t.Fatalf("allowed(%s, %s) = %v, want %v", f, to, got, want)
				}
				cur := f
				err := transition(&cur, to, "op", "c1")
				if want {
					if err != nil {
						t.Fatalf("transition(%s -> %s) = %v, want nil", f, to, err)
					}
					if cur != to {
						t.Fatalf("state after allowed transition = %s, want %s", cur, to)
					}
					return
				}
				if err == nil {
					t.Fatalf("transition(%s -> %s) = nil, want FailedPrecondition", f, to)
				}
				if !errdefs.IsFailedPrecondition(err) {
					t.Errorf("transition(%s -> %s) = %v, want FailedPrecondition", f, to, err)
				}
				if cur != f {
					t.Errorf("state after denied transition = %s, want unchanged %s", cur, f)
				}
				for _, s := range []string{"op", `"c1"`, f.String()} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
			})
		}
	}
}

// TestTransitionTableCount guards against a silently widened table.
func TestTransitionTableCount(t *testing.T) {
	n := 0
	for _, f := range allStates {
		for _, to := range allStates {
			if allowed(f, to) {
				n++
			}
		}
	}
	if n != len(wantAllowed) {
		t.Fatalf("allowed transitions: got %d, want %d", n, len(wantAllowed))
	}
}

// TestTransitionErrorNamesBothStates: STYLE.md asks that a wrong-state
// error name both states, the one the process is in and the one the
// operation needed, so a client can tell what went wrong.
func TestTransitionErrorNamesBothStates(t *testing.T) {
	for _, f := range allStates {
		for _, to := range allStates {
			if wantAllowed[[2]State{f, to}] {
				continue
			}
			t.Run(fmt.Sprintf("%s->%s", f, to), func(t *testing.T) {
				cur := f
				err := transition(&cur, to, "op", "c1")
				if err == nil {
					t.Fatalf("transition(%s -> %s) = nil, want an error", f, to)
				}
				for _, s := range []string{f.String(), to.String()} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name state %q", err, s)
					}
				}
			})
		}
	}
}
