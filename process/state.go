package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// State is where a process is in its life. The in-between states
// (Starting, Deleting) exist so that a second caller arriving while runc is
// still working gets a clean FailedPrecondition instead of racing it.
type State int

const (
	Created State = iota + 1
	Starting
	Running
	Stopped
	Deleting
	Deleted
	// Pausing, Paused and Resuming: the runtime freezes the container's
	// processes (cgroup freezer) and thaws them.
	Pausing
	Paused
	Resuming
	// Creating is an init process before its runtime create has returned;
	// nothing outside the Manager sees it.
	Creating
)

func (s State) String() string {
	switch s {
	case Created:
		return "created"
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Stopped:
		return "stopped"
	case Deleting:
		return "deleting"
	case Deleted:
		return "deleted"
	case Pausing:
		return "pausing"
	case Paused:
		return "paused"
	case Resuming:
		return "resuming"
	case Creating:
		return "creating"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// allowed is the transition table of a process. Every state change goes
// through transition, which consults it.
func allowed(from, to State) bool {
	switch from {
	case Creating:
		return to == Created
	case Created:
		// Stopped: the process died (killed, or runc init failed) before Start.
		return to == Starting || to == Stopped || to == Deleting
	case Starting:
		// Created: runc start failed and the container is still there to delete.
		// Stopped: the process exited before Start returned (/bin/true).
		return to == Running || to == Stopped || to == Created
	case Running:
		return to == Stopped || to == Pausing
	case Pausing:
		// Running again when the pause failed; Stopped: it died first.
		return to == Paused || to == Running || to == Stopped
	case Paused:
		// Stopped: killed while frozen, it dies once thawed.
		return to == Resuming || to == Stopped
	case Resuming:
		// Paused again when the resume failed.
		return to == Running || to == Paused || to == Stopped
	case Stopped:
		return to == Deleting
	case Deleting:
		// Back to Created or Stopped when the delete failed and may be
		// retried: Stopped whenever the exit has been recorded, so a dead
		// process never goes back to Created and on to Start.
		return to == Deleted || to == Created || to == Stopped
	}
	return false
}

// transition moves *cur to next or explains why it cannot. op names the
// operation for the error message. It is the only code that writes a
// process's state (through proc.moveLocked).
func transition(cur *State, next State, op, id string) error {
	if !allowed(*cur, next) {
		return fmt.Errorf("%s %q: process is %s, cannot become %s: %w", op, id, *cur, next, errdefs.ErrFailedPrecondition)
	}
	*cur = next
	return nil
}

// live reports whether a process in state s may still be running: it has
// a pid and has not been seen to exit.
func (s State) live() bool {
	switch s {
	case Created, Starting, Running, Pausing, Paused, Resuming:
		return true
	}
	return false
}

// frozen reports whether the container's processes may be frozen by the
// cgroup freezer: a signal other than SIGKILL waits for the thaw, and on
// cgroup v1 even SIGKILL does until the runtime thaws (runc PR 3217).
func (s State) frozen() bool {
	return s == Pausing || s == Paused || s == Resuming
}
