// Package process is one container's processes: the init (the container
// itself, as the runtime sees it) and its exec processes, each a state
// machine that cannot be bypassed.
//
// # States
//
// Every change of a process's state goes through transition (state.go),
// which consults one table; proc.moveLocked is its only caller. The
// in-between states (Creating, Starting, Deleting, Pausing, Resuming) exist
// so that a second caller arriving while the runtime works gets a clean
// FailedPrecondition instead of racing it, and so that an exit arriving
// meanwhile has a defined place to land (Stopped wins over whatever the
// runtime call returns afterwards).
//
// # Exits and the races they bring
//
// This package never waits for a process. The shim's reaper (package
// reaper) reaps every child; the sandbox Manager matches each exit to its
// process and calls SetExited, which records the status, closes the pidfd
// and wakes Wait callers. Three races follow, and each has one answer:
//
//   - An exec may exit, and be reaped, before `runc exec` has returned
//     its pid (a process like /bin/true). Exec.Start returns the pid; the
//     caller holds unmatched exits while Start runs and matches them
//     afterwards (the sandbox package's exit router).
//   - A pid may be reused once reaped. Every process known alive is pinned
//     by a pidfd (setPidLocked) and signals go through it; a pidfd that
//     reports the process gone or a zombie (waitid WNOWAIT) makes Kill
//     NotFound, "process already finished", as the runc shim answers.
//   - An init may exit while Start, Pause or Delete runs. The state
//     machine records Stopped and the runtime call's answer no longer
//     moves it.
//
// # Streams
//
// A process owns its stdio.IO from the moment the runtime call that
// started it returns until Delete (or CloseAllIO at shutdown) closes it;
// the runtime and the container get only the child's ends, closed in the
// shim right after the call (stdio.IO.CloseChildSide).
//
// # The runtime
//
// Everything about the OCI runtime is behind ociruntime.Runtime: this
// package says what should happen (create, start, kill --all, delete a
// stopped container) and the runtime package decides how. Runtime errors
// come back typed; a container the runtime does not have is NotFound.
//
// # Locks
//
// Each process has one mutex (proc.mu) guarding its state, pid, pidfd,
// exit and streams. It is never held across a runtime call, IO or a
// channel send: a method takes it to move into an in-between state,
// releases it for the runtime, and takes it again to move on. Callers
// above (the sandbox Manager and its exit router) take their own locks
// before a process's, never after.
package process
