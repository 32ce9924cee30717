package stdio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// ChildStarter starts a child of the shim and hands back the channel its
// exit arrives on. It is the shim's Reaper: a child started any other way
// would have its exit stolen by the reaper's wait4(-1).
type ChildStarter interface {
	Start(cmd *exec.Cmd) (chan runc.Exit, error)
}

// StreamEnv is what opening a process's streams needs besides their names.
type StreamEnv struct {
	// UID and GID own the pipes the container reads and writes, and
	// containerd's fifos it is given (runtime options IoUid and IoGid).
	UID, GID int
	// Namespace and ID are the logging binary's CONTAINER_NAMESPACE and
	// CONTAINER_ID: the container id for an init process, the exec id for
	// an exec, as the runc shim passes them.
	Namespace, ID string
	// Children starts logging binaries; without it binary:// is refused.
	Children ChildStarter
	// ReaderWait bounds how long an output fifo waits for its reader
	// before the container may write to it (ReaderWait in the shim).
	ReaderWait time.Duration
}

const (
	// loggerReadyWait bounds how long create waits for a logging binary
	// to say it is ready, unless the request's deadline is sooner.
	loggerReadyWait = time.Minute
	// loggerTermWait is how long a logging binary has, after the SIGTERM
	// that tells it its process is gone, before it is killed: the runc
	// shim gives it 12 s to flush.
	loggerTermWait = 12 * time.Second
)

// logger is a binary:// logging process. The container writes straight
// into pipes whose read ends the logger holds (fds 3 and 4), so the shim
// copies nothing.
type logger struct {
	cmd  *exec.Cmd
	exit chan runc.Exit
	// stdout and stderr are the write ends the container gets; closed with
	// the child side of IO, or by the console copy.
	stdout, stderr *os.File
}

// startLogger starts the logging binary out.path with the container's
// stdout and stderr pipes on fds 3 and 4 and a readiness pipe on fd 5,
// and waits until it is ready: fd 5 closed (binary://) or a byte written
// on it (binary-v2://). The container must not start before, or its first
// bytes could meet a logger that is not reading yet.
func startLogger(ctx context.Context, out output, env StreamEnv) (_ *logger, retErr error) {
	if env.Children == nil {
		return nil, fmt.Errorf("logging binary %q: no reaper to run it: %w", out.path, errdefs.ErrNotImplemented)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	outR, outW, err := pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		return nil, err
	}
	readyR, readyW, err := pipe()
	if err != nil {
		return nil, err
	}
	for _, w := range []*os.File{outW, errW} {
		if err := w.Chown(env.UID, env.GID); err != nil {
			return nil, fmt.Errorf("chown logging pipe: %w", err)
		}
	}
	cmd := exec.Command(out.path, out.args...)
	// Only these two, as containerd documents: the shim's own environment
	// is not the logger's business.
	cmd.Env = []string{"CONTAINER_ID=" + env.ID, "CONTAINER_NAMESPACE=" + env.Namespace}
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	exit, err := env.Children.Start(cmd)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("start logging binary: %w", err)
	}
	l := &logger{cmd: cmd, exit: exit, stdout: outW, stderr: errW}
	defer func() {
		if retErr != nil {
			l.stdout.Close()
			l.stderr.Close()
			l.kill()
		}
	}()
	// The logger holds its ends now; ours would keep fd 5 from reading EOF.
	for _, f := range []*os.File{outR, errR, readyW} {
		f.Close()
	}
	// From here on, the write ends belong to l.
	files = []*os.File{readyR}
	if err := waitReady(ctx, readyR, out.strictReady); err != nil {
		return nil, fmt.Errorf("logging binary %q: %w", out.path, err)
	}
	return l, nil
}

// waitReady reads the readiness pipe until the logger writes a byte or
// closes it, ctx is done or loggerReadyWait passes.
func waitReady(ctx context.Context, ready *os.File, strict bool) error {
	deadline := time.Now().Add(loggerReadyWait)
	d, byCtx := ctx.Deadline()
	if byCtx = byCtx && d.Before(deadline); byCtx {
		deadline = d
	}
	if err := ready.SetReadDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = ready.SetReadDeadline(aLongTimeAgo) })
	defer stop()
	n, err := ready.Read(make([]byte, 1))
	switch {
	case n == 1:
		return nil
	case errors.Is(err, io.EOF) && !strict:
		return nil
	case errors.Is(err, io.EOF):
		return fmt.Errorf("exited or closed fd 5 without writing the ready byte binary-v2 requires: %w", errdefs.ErrUnavailable)
	case errors.Is(err, os.ErrDeadlineExceeded) && (byCtx || ctx.Err() != nil):
		// The request's deadline may pass a moment before ctx says so.
		return fmt.Errorf("not ready: %w", cmp.Or(ctx.Err(), context.DeadlineExceeded))
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("not ready within %v: %w", loggerReadyWait, errdefs.ErrUnavailable)
	default:
		return fmt.Errorf("read readiness pipe: %w", err)
	}
}

// stop tells the logger that its process is gone and waits for it. The
// container's ends are closed by now, so a logger that reads to EOF has
// everything; SIGTERM is the runc shim's contract with loggers that wait
// for it, and a logger that outlives loggerTermWait is killed.
func (l *logger) stop() {
	select {
	case <-l.exit:
		l.release()
		return
	default:
	}
	if err := l.cmd.Process.Signal(unix.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.L.WithError(err).WithField("pid", l.cmd.Process.Pid).Warn("signal logging binary")
	}
	timer := time.NewTimer(loggerTermWait)
	defer timer.Stop()
	select {
	case <-l.exit:
		l.release()
	case <-timer.C:
		log.L.WithField("pid", l.cmd.Process.Pid).Warnf("logging binary still running %v after SIGTERM, killing it", loggerTermWait)
		l.kill()
	}
}

// kill kills the logger and waits for the reaper to bring its exit.
func (l *logger) kill() {
	_ = l.cmd.Process.Kill()
	<-l.exit
	l.release()
}

// release frees the os.Process's pidfd once the reaper has reaped it.
func (l *logger) release() {
	_ = l.cmd.Process.Release()
}
