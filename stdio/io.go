package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Stdio names a process's streams as containerd gives them: fifo paths,
// or a log URI for stdout (uri.go); an empty name means no stream.
type Stdio struct {
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
}

// IO connects a process to containerd's fifos, or to the logging
// binary or log file a log URI names (logger.go, file.go).
//
// stdout and stderr are zero-copy: the container gets the fifo's write end
// itself, so its bytes go straight to containerd's reader with no shim
// goroutine or buffer in between, and every byte written before exit is in
// the fifo when the exit is reported. The shim keeps a read end of each
// fifo open and never reads it: with it, a containerd restart (reader gone)
// makes the container block once the pipe is full rather than die of
// SIGPIPE, which is what the runc shim's copy loop gives too.
//
// stdin is copied into a pipe whose read end the container gets. The shim
// holds a write end of the stdin fifo itself, as the runc shim does, so
// the copy never reads EOF merely because containerd's writer is not open
// yet or went away (a containerd restart, an attach ending): the container
// sees EOF only after CloseIO released the shim's writer and every other
// writer closed, and only once everything written has been drained.
type IO struct {
	// child holds the fds the runtime passes to the container; the shim's
	// copies are closed once the runtime has started (CloseChildSide).
	childStdin, childStdout, childStderr *os.File

	// null is /dev/null, shared by the streams nobody asked for; closed
	// with the child side.
	null *os.File

	// keepOpen are the shim's idle read ends of the stdout/stderr fifos.
	keepOpen []*os.File

	stdinMu sync.Mutex
	// stdinHold is the shim's write end of the stdin fifo, closed by
	// CloseIO. stdinFifo and stdinPipe are the copy's source and sink,
	// closed by the copy at EOF or by Close. All guarded by stdinMu; nil
	// once closed.
	stdinHold *os.File
	stdinFifo *os.File
	stdinPipe *os.File
	// copyDone is closed when the stdin copy goroutine returns.
	copyDone chan struct{}

	// tty is set for a terminal process (console.go).
	tty *ttyIO
	// readerWait bounds the wait for an output fifo's reader.
	readerWait time.Duration

	// logger is the binary:// logging process (logger.go), fileLog the
	// file:// copy (file.go); at most one is set.
	logger  *logger
	fileLog *fileLog
}

// ReaderWait is how long the shim waits, opening an output fifo, for its
// reader: containerd's, whose open is normally already waiting.
const ReaderWait = 2 * time.Second

// Open opens the streams of one process.
func Open(ctx context.Context, s Stdio, env StreamEnv) (_ *IO, retErr error) {
	out, err := parseStdio(s)
	if err != nil {
		return nil, err
	}
	p := &IO{readerWait: env.ReaderWait}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	if s.Terminal {
		if err := p.openTerminal(ctx, s, out, env); err != nil {
			return nil, err
		}
		return p, p.fillNull()
	}
	if err := p.openOutput(ctx, s, out, env); err != nil {
		return nil, err
	}
	if s.Stdin != "" {
		if err := p.openStdin(s.Stdin, env.UID, env.GID); err != nil {
			return nil, fmt.Errorf("open stdin %q: %w", s.Stdin, err)
		}
	}
	if err := p.fillNull(); err != nil {
		return nil, err
	}
	return p, nil
}

// openOutput gives the container its stdout and stderr: containerd's fifos
// themselves, a logging binary's pipes, or the pipe of a log file.
func (p *IO) openOutput(ctx context.Context, s Stdio, out output, env StreamEnv) error {
	switch out.kind {
	case toBinary:
		l, err := startLogger(ctx, out, env)
		if err != nil {
			return err
		}
		p.logger = l
		p.childStdout, p.childStderr = l.stdout, l.stderr
		return nil
	case toFile:
		l, err := newFileLog(out.path, env.UID, env.GID)
		if err != nil {
			return err
		}
		p.fileLog = l
		p.childStdout, p.childStderr = l.w, l.w
		return nil
	}
	if s.Stdout != "" {
		w, err := p.openWriteEnd(ctx, s.Stdout, env.UID, env.GID)
		if err != nil {
			return fmt.Errorf("open stdout %q: %w", s.Stdout, err)
		}
		p.childStdout = w
	}
	switch {
	case s.Stderr == "":
	case s.Stderr == s.Stdout:
		p.childStderr = p.childStdout
	default:
		w, err := p.openWriteEnd(ctx, s.Stderr, env.UID, env.GID)
		if err != nil {
			return fmt.Errorf("open stderr %q: %w", s.Stderr, err)
		}
		p.childStderr = w
	}
	return nil
}

// fillNull gives every stream nobody asked for /dev/null. Leaving one
// unset is not the same: go-runc then captures the runtime's output
// through a pipe that the container inherits, and waiting for runc create
// would wait for the container to close it, i.e. to exit.
func (p *IO) fillNull() error {
	if p.childStdin != nil && p.childStdout != nil && p.childStderr != nil {
		return nil
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	p.null = null
	for _, f := range []**os.File{&p.childStdin, &p.childStdout, &p.childStderr} {
		if *f == nil {
			*f = null
		}
	}
	return nil
}

// openWriteEnd opens path for the container to write to. A fifo (created
// if missing, as containerd's fifo package would) is opened for writing
// once its reader is there (openFifoWriter), and only then gets the
// shim's keep-open read end; anything else (a file, /dev/null) is opened
// for appending.
//
// A fifo is handed to IoUid/IoGid when they are set: the container holds
// it as its stdout, and a program that reopens /dev/stdout (or
// /proc/self/fd/1) as that user needs the inode to be its own, as the
// runc shim's pipes are. The fifo's directory stays containerd's, closed
// to everyone else.
func (p *IO) openWriteEnd(ctx context.Context, path string, uid, gid int) (*os.File, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mkfifo(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		fi, err = os.Stat(path)
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	}
	wfd, err := openFifoWriter(ctx, path, p.readerWait)
	if err != nil {
		return nil, err
	}
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(wfd)
		return nil, err
	}
	p.keepOpen = append(p.keepOpen, os.NewFile(uintptr(rfd), path))
	w := os.NewFile(uintptr(wfd), path)
	if uid != 0 || gid != 0 {
		if err := w.Chown(uid, gid); err != nil {
			w.Close()
			return nil, fmt.Errorf("chown to IoUid/IoGid: %w", err)
		}
	}
	return w, nil
}

// openFifoWriter opens the fifo for writing once containerd's reader has
// it open. The order matters: containerd opens its end in the background
// with a blocking open, which returns only when a writer arrives; had the
// shim's own reader let the write end open first, a container that wrote
// and exited before containerd's open began would leave that open waiting
// for a writer that never comes, and its bytes unread (seen with 50
// concurrent execs). A reader that does not come within readerWait
// (StreamEnv.ReaderWait; zero: none) or ctx is not waited for: the stream is opened anyway, and its bytes stay
// in the fifo for a late reader while the shim holds it.
func openFifoWriter(ctx context.Context, path string, readerWait time.Duration) (int, error) {
	deadline := time.Now().Add(readerWait)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 5*time.Millisecond) {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			// The container writes with ordinary blocking writes.
			if err := unix.SetNonblock(fd, false); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENXIO) {
			return -1, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(delay)
	}
	// No reader: open through a reader of our own, as before.
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rfd)
	return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
}

func (p *IO) openStdin(path string, uid, gid int) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	p.childStdin, p.stdinPipe = r, w
	if err := r.Chown(uid, gid); err != nil {
		return err
	}
	if err := p.openStdinFifo(path); err != nil {
		return err
	}
	p.copyDone = make(chan struct{})
	go p.copyStdin(p.stdinFifo, w)
	return nil
}

// openStdinFifo opens the stdin fifo for reading and the shim's own
// writer that holds it open until CloseIO.
func (p *IO) openStdinFifo(path string) error {
	// Reader first: a non-blocking O_WRONLY open fails without one.
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	p.stdinFifo = os.NewFile(uintptr(rfd), path)
	wfd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	p.stdinHold = os.NewFile(uintptr(wfd), path)
	return nil
}

// copyStdin copies containerd's stdin fifo into the container until EOF
// (every writer, the shim's included, closed) or Close stops it, then
// closes the container's stdin.
func (p *IO) copyStdin(src io.Reader, dst io.Writer) {
	defer close(p.copyDone)
	buf := make([]byte, 32<<10)
	_, _ = io.CopyBuffer(dst, src, buf)
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	closeFile(&p.stdinFifo)
	closeFile(&p.stdinPipe)
}

func closeFile(f **os.File) {
	if *f != nil {
		(*f).Close()
		*f = nil
	}
}

// Set gives the container's fds to the runtime command; go-runc calls it.
func (p *IO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.childStdin, p.childStdout, p.childStderr
}

// CloseAfterStart closes the shim's copies of the container's fds once the
// runtime process holds them; go-runc calls it.
func (p *IO) CloseAfterStart() error {
	p.CloseChildSide()
	return nil
}

// The methods below complete go-runc's IO interface; the shim never reads
// the container's output through go-runc.
func (p *IO) Stdin() io.WriteCloser { return nil }
func (p *IO) Stdout() io.ReadCloser { return nil }
func (p *IO) Stderr() io.ReadCloser { return nil }

// CloseChildSide closes the shim's copies of the container's fds, so that
// EOF reaches readers when the container's own copies close.
func (p *IO) CloseChildSide() {
	closed := map[*os.File]bool{}
	for _, f := range []*os.File{p.childStdin, p.childStdout, p.childStderr, p.null} {
		if f != nil && !closed[f] {
			f.Close()
			closed[f] = true
		}
	}
	p.childStdin, p.childStdout, p.childStderr, p.null = nil, nil, nil, nil
}

// StdinCopied returns a channel closed when the copy into the process's
// stdin has ended (CloseIO, or every writer gone), nil when the process
// has no stdin.
func (p *IO) StdinCopied() <-chan struct{} { return p.copyDone }

// CloseStdin is CloseIO: it releases the shim's writer of the stdin fifo.
// The container reads EOF once containerd's writer is closed too and what
// was written has been copied; nothing in flight is dropped.
func (p *IO) CloseStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	closeFile(&p.stdinHold)
}

// Close releases every fd and waits for the stdin copy to return.
func (p *IO) Close() error {
	p.CloseChildSide()
	p.stdinMu.Lock()
	closeFile(&p.stdinHold)
	// Closing the source and sink unblocks a copy still waiting on either.
	closeFile(&p.stdinFifo)
	closeFile(&p.stdinPipe)
	p.stdinMu.Unlock()
	// The console's output copy goes to the log, so it ends first.
	p.closeConsole()
	if p.fileLog != nil {
		p.fileLog.close()
		p.fileLog = nil
	}
	if p.logger != nil {
		p.logger.stop()
		p.logger = nil
	}
	if p.copyDone != nil {
		<-p.copyDone
	}
	for _, f := range p.keepOpen {
		f.Close()
	}
	p.keepOpen = nil
	return nil
}
