package stdio

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
)

// ttyIO is a terminal process's side of its streams: runc hands the PTY
// master over a console socket, and the shim copies between it and
// containerd's fifos (a PTY cannot be given to containerd directly).
type ttyIO struct {
	socket *runc.Socket
	// out is where the PTY's output goes (openTerminalSink); the output
	// copy closes it.
	out *os.File
	// master is set by attachConsole. outDone is closed when the
	// master->stdout copy returns: the process and every holder of the
	// PTY's slave side are gone and all output is in the fifo.
	master  console.Console
	outDone chan struct{}
}

// consoleDrainWait bounds how long Close waits for the output copy before
// closing the master under it.
const consoleDrainWait = 2 * time.Second

func (p *IO) openTerminal(ctx context.Context, s Stdio, out output, env StreamEnv) error {
	if s.Stdout == "" {
		return fmt.Errorf("terminal without stdout: %w", errdefs.ErrInvalidArgument)
	}
	sink, err := p.openTerminalSink(ctx, s, out, env)
	if err != nil {
		return err
	}
	p.tty = &ttyIO{out: sink}
	if s.Stdin != "" {
		if err := p.openStdinFifo(s.Stdin); err != nil {
			return fmt.Errorf("open stdin %q: %w", s.Stdin, err)
		}
	}
	sock, err := runc.NewTempConsoleSocket()
	if err != nil {
		return fmt.Errorf("console socket: %w", err)
	}
	p.tty.socket = sock
	return nil
}

// openTerminalSink opens what the PTY's output is copied to: the stdout
// fifo, the logging binary's stdout pipe (its stderr pipe stays empty: a
// terminal has one stream), or the log file itself.
func (p *IO) openTerminalSink(ctx context.Context, s Stdio, out output, env StreamEnv) (*os.File, error) {
	switch out.kind {
	case toBinary:
		l, err := startLogger(ctx, out, env)
		if err != nil {
			return nil, err
		}
		p.logger = l
		l.stderr.Close()
		return l.stdout, nil
	case toFile:
		return openLogFile(out.path)
	}
	w, err := p.openWriteEnd(ctx, s.Stdout, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdout %q: %w", s.Stdout, err)
	}
	return w, nil
}

// ConsoleSocket is what the runtime sends the PTY master to, or nil.
func (p *IO) ConsoleSocket() runc.ConsoleSocket {
	if p.tty == nil || p.tty.socket == nil {
		return nil
	}
	return p.tty.socket
}

// AttachConsole receives the PTY master the runtime sent during create or
// exec and starts copying both ways. The copies are owned by p: Close
// stops and joins them.
func (p *IO) AttachConsole() error {
	if p.tty == nil {
		return nil
	}
	master, err := p.tty.socket.ReceiveMaster()
	p.tty.socket.Close()
	p.tty.socket = nil
	if err != nil {
		return fmt.Errorf("receive pty master: %w", err)
	}
	p.tty.master = master
	p.tty.outDone = make(chan struct{})
	go func(out *os.File, done chan struct{}) {
		defer close(done)
		buf := make([]byte, 32<<10)
		// Ends with EIO once the slave side is closed everywhere.
		_, _ = io.CopyBuffer(out, master, buf)
		out.Close()
	}(p.tty.out, p.tty.outDone)
	p.tty.out = nil
	if p.stdinFifo != nil {
		p.copyDone = make(chan struct{})
		go p.copyStdin(p.stdinFifo, master)
	}
	return nil
}

// Resize sets the PTY's window size.
func (p *IO) Resize(width, height uint32) error {
	if p.tty == nil || p.tty.master == nil {
		return fmt.Errorf("resize: process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	return p.tty.master.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// closeConsole lets the output copy drain (bounded), then closes the
// master, which also unblocks a stdin copy writing to it.
func (p *IO) closeConsole() {
	t := p.tty
	if t == nil {
		return
	}
	if t.socket != nil {
		t.socket.Close()
	}
	if t.out != nil {
		t.out.Close()
	}
	if t.master != nil {
		select {
		case <-t.outDone:
		case <-time.After(consoleDrainWait):
		}
		t.master.Close()
		<-t.outDone
	}
	p.tty = nil
}
