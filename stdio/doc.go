// Package stdio connects a container process's standard streams to where
// containerd asked for them, in one of five ways:
//
//   - fifos (the default): stdout and stderr are zero-copy, the container
//     writing into containerd's fifo itself; stdin is copied from its
//     fifo into a pipe (io.go);
//   - a terminal: the runtime sends the PTY master over a console socket
//     and the shim copies between it and the fifos (console.go);
//   - binary://: a logging binary started by the shim, fed through pipes,
//     ready once it closes fd 5 (logger.go);
//   - file://: both streams through one pipe, appended to a file by one
//     goroutine (file.go);
//   - none: every stream nobody asked for is /dev/null, never left unset
//     (go-runc would then capture runc's output through a pipe the
//     container inherits).
//
// # Who owns what
//
// Open returns an IO that the process owns until it closes it. The
// runtime call that starts the process gets the child's ends (Set, the
// console socket); CloseChildSide closes the shim's copies of them right
// after that call, so the container holds the only write ends and EOF
// means the container is done. Every goroutine IO starts (the stdin copy,
// the terminal copies, the file copy) ends by Close; a logging binary is
// waited for, and killed after a bound, by Close too.
//
// # Why the shim holds idle ends
//
// The shim keeps a read end of each output fifo it never reads, and a
// write end of the stdin fifo until CloseIO: without them a containerd
// restart (its reader gone) would kill the container with SIGPIPE, and
// stdin would see EOF when containerd's writer merely closed for a while.
// The runc shim's copy loops give the same behaviour.
//
// Children (logging binaries) must be started through a ChildStarter, the
// shim's reaper: its wait4(-1) would otherwise take their exit status
// (containerd issue 9218).
package stdio
