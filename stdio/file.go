package stdio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// fileDrainMax bounds what Close still copies from the pipe after the
// process is gone: what was buffered then, not what a stray writer adds.
const fileDrainMax = 1 << 20

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// fileLog appends a process's stdout and stderr to a file (file://).
//
// The container writes into one pipe, stdout and stderr both, so their
// relative order survives; one goroutine copies it to the file. The
// container is not given the file itself: on the host it could truncate,
// chmod or read it through its fd, and a pipe can belong to IoUid.
type fileLog struct {
	file *os.File
	// pipe is the read end; w, the write end the container gets, is
	// closed with the child side of IO.
	pipe, w *os.File
	// done is closed when the copy has returned.
	done chan struct{}
}

// openLogFile opens path for appending, creating it and its directory as
// the runc shim does (0644 and 0755). A path that cannot be a log file
// (under a file, a directory itself) is the request's fault.
func openLogFile(path string) (*os.File, error) {
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			return f, nil
		}
	}
	return nil, fmt.Errorf("open log file %q: %w: %w", path, err, errdefs.ErrInvalidArgument)
}

func newFileLog(path string, uid, gid int) (_ *fileLog, retErr error) {
	f, err := openLogFile(path)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, err
	}
	l := &fileLog{file: f, pipe: r, w: w, done: make(chan struct{})}
	if err := w.Chown(uid, gid); err != nil {
		f.Close()
		r.Close()
		w.Close()
		return nil, fmt.Errorf("chown log pipe: %w", err)
	}
	go l.copy()
	return l, nil
}

// copy appends what the container writes until every writer is gone, or
// until close sets the pipe's deadline; then it drains what is buffered
// without waiting for more. A failing file (disk full) does not stop the
// reading: a container must never block on a log it cannot see.
func (l *fileLog) copy() {
	defer close(l.done)
	buf := make([]byte, 32<<10)
	var werr error
	write := func(b []byte) {
		if werr != nil {
			return
		}
		if _, werr = l.file.Write(b); werr != nil {
			log.L.WithError(werr).WithField("file", l.file.Name()).Warn("log file write failed; dropping the rest of the output")
		}
	}
	for {
		n, err := l.pipe.Read(buf)
		write(buf[:n])
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			l.drain(buf, write)
		}
		return
	}
}

// drain copies what the pipe holds now, with non-blocking reads that
// bypass the deadline, up to fileDrainMax.
func (l *fileLog) drain(buf []byte, write func([]byte)) {
	rc, err := l.pipe.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		for total := 0; total < fileDrainMax; {
			n, err := unix.Read(int(fd), buf)
			if n > 0 {
				write(buf[:n])
				total += n
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
		}
	})
}

// close stops the copy once it has what the process wrote, and closes the
// file. The process has exited by now; if a process it left behind still
// holds the pipe, the copy would never see EOF, so it is cut off after
// draining what is buffered.
func (l *fileLog) close() {
	select {
	case <-l.done:
	default:
		_ = l.pipe.SetReadDeadline(aLongTimeAgo)
		<-l.done
	}
	l.pipe.Close()
	l.file.Close()
}
