package tests

import (
	"syscall"
	"testing"
	"time"
)

// TestExitCodes: the exit code of the container's init reaches the
// client: normal exits verbatim, death by signal as 128+signal.
func TestExitCodes(t *testing.T) {
	e := newDefaultEnv(t)
	for _, tc := range []struct {
		name   string
		args   []string
		signal syscall.Signal // sent once the task printed "ready"; 0 for none
		want   uint32
	}{
		{"exit-0", []string{"sh", "-c", "exit 0"}, 0, 0},
		{"exit-3", []string{"sh", "-c", "exit 3"}, 0, 3},
		{"false", []string{"false"}, 0, 1},
		{"sigkill", []string{"sh", "-c", "echo ready; exec sleep 1000"}, syscall.SIGKILL, 137},
		// A pid-namespace init gets only signals it has a handler for,
		// SIGKILL excepted (pid_namespaces(7)): SIGTERM is covered by
		// TestSIGTERMTrap, whose shell traps it.
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.sub(t).run(ctrSpec{id: tc.name, args: tc.args})
			if tc.signal != 0 {
				r.waitOutput(t, "ready\n", time.Minute)
				r.kill(tc.signal)
			}
			if got := r.wait(time.Minute); got != tc.want {
				t.Errorf("exit code = %d, want %d", got, tc.want)
			}
			r.delete()
		})
	}
}

// TestSIGTERMTrap: a SIGTERM sent with task.Kill reaches a shell that
// traps it; its handler's output and exit code come back.
func TestSIGTERMTrap(t *testing.T) {
	e := newDefaultEnv(t)
	r := e.run(ctrSpec{id: "trap", args: []string{"sh", "-c",
		`trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done`}})
	r.waitOutput(t, "ready\n", time.Minute)
	r.kill(syscall.SIGTERM)
	if got := r.wait(time.Minute); got != 7 {
		t.Errorf("exit code = %d, want 7", got)
	}
	r.delete()
	if got, want := string(r.stdout.Bytes()), "ready\ngot-term\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}
