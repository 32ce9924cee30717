package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"time"

	"github.com/containerd/fifo"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/service"
)

// Bounds on the way out. The flush of kept events gets longer than the
// drain of requests: after a containerd restart, containerd's cleanup may
// delete the pod's last tasks (and so end the shim) before its events
// endpoint serves again, and what the shim kept (exits of the outage) is
// delivered only if it is still there then. Close returns as soon as the
// queue is empty, so a clean exit does not wait.
const (
	flushTimeout    = 30 * time.Second
	shutdownTimeout = 5 * time.Second
)

// runDaemon is the long-lived shim: it serves the task API on the socket
// `start` bound (fd 3) until the pod's last container is deleted and
// containerd says Shutdown.
func runDaemon(ctx context.Context, f flags) error {
	// Orphaned container processes are re-parented to us, so their exits
	// reach the reaper instead of init.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	// Writing to a log fifo whose reader left must be an EPIPE, not death.
	// Notify (not Ignore) so that children do not inherit SIG_IGN; the
	// channel is never read and Notify never blocks on it.
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	openLog(ctx)
	// The working directory is the first container's bundle, which
	// containerd removes when that container goes while the pod's shim
	// stays; nothing after the log is opened relative to it.
	if err := os.Chdir("/"); err != nil {
		return err
	}

	l, err := listener(f.socket)
	if err != nil {
		return err
	}
	// The socket file is removed when the shim decides to exit, under the
	// lock `start` takes to find the pod's shim (sandbox.Manager.WaitExit),
	// never on the way out, when it may already be the next shim's.
	sock, err := sandbox.OwnSocket(l.Addr().String())
	if err != nil {
		l.Close()
		return err
	}

	reaper := reaper.NewReaper()
	// go-runc's monitor is a package variable; it is set here, once, so
	// every runtime command is started and reaped through our reaper.
	runc.Monitor = reaper
	publisher := sandbox.NewRemotePublisher(os.Getenv("TTRPC_ADDRESS"), f.namespace)
	defer publisher.Close()
	m := sandbox.NewManager(ctx, sandbox.Config{Namespace: f.namespace, Publisher: publisher, Reaper: reaper})
	// The `start` that started this shim hands its address out for the
	// container it was run for: that container holds the shim as every
	// later `start`'s claim does.
	if err := m.Claim(ctx, f.id); err != nil {
		return err
	}

	conns := newConnTracker(ttrpc.UnixSocketRequireSameUser())
	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(conns))
	if err != nil {
		return err
	}
	service.Register(server, service.NewTask(m, ociruntime.Options{}))
	service.RegisterLifetime(server, m)
	service.RegisterSandbox(server, m)
	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(ctx, l) }()

	// SIGTERM and SIGINT sent to the shim are never forwarded to the
	// containers. They end the shim only once it holds no container, as
	// Shutdown does: a shim that left would orphan its containers' IO and
	// lose their exits.
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM, unix.SIGINT)
	defer signal.Stop(term)

	wctx, stopWait := context.WithCancel(ctx)
	exitDecided := make(chan error, 1)
	go func() { exitDecided <- m.WaitExit(wctx, sock) }()

	var serveFailed error
loop:
	for {
		select {
		case <-exitDecided:
			break loop
		case s := <-term:
			log.G(ctx).WithField("signal", s).Info("shim signalled")
			m.Shutdown(ctx)
		case err := <-serveErr:
			serveFailed = err
			break loop
		}
	}
	stopWait()
	if serveFailed == nil && m.PodReleased() {
		// ShutdownSandbox decided the exit from inside its handler, whose
		// answer may not be sent yet: ttrpc's Shutdown can close a
		// connection whose handler has returned but whose response is
		// still queued, and containerd's controller fails
		// RemovePodSandbox on that ErrClosed (unlike a task Shutdown's).
		// containerd closes its connection right after the answer
		// (ShimManager.Delete), so wait for that, bounded.
		conns.waitIdle(ctx, shutdownTimeout)
	}
	if serveFailed != nil {
		<-exitDecided
		// Refuse claims and creates, and let the pod's next `start`
		// start a new shim.
		m.Exit(ctx, sock)
	}

	fctx, cancelFlush := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancelFlush()
	if err := m.Close(fctx); err != nil {
		log.G(ctx).WithError(err).Warn("events not flushed before exit")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := server.Shutdown(sctx); err != nil {
		server.Close()
	}
	if serveFailed == nil {
		// Serve returns ErrServerClosed after Shutdown.
		<-serveErr
	}
	if serveFailed != nil && !errors.Is(serveFailed, ttrpc.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveFailed)
	}
	return nil
}

// listener returns the socket `start` bound and passed as fd 3, or a new
// one at path.
func listener(path string) (net.Listener, error) {
	if path != "" {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			return nil, err
		}
		l.SetUnlinkOnClose(false)
		return l, nil
	}
	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		return nil, fmt.Errorf("inherited socket (fd 3): %w", err)
	}
	return l, nil
}

// openLog points the shim's stderr, and so its logs and any crash, at the
// "log" fifo containerd reads in the bundle (the working directory). A
// shim started by hand has none and logs to its own stderr.
func openLog(ctx context.Context) {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, err := fifo.OpenFifoDup2(octx, "log", unix.O_WRONLY, 0o700, int(os.Stderr.Fd()))
	if err != nil {
		return
	}
	// The dup on fd 2 is what is used from here on.
	f.Close()
	log.L.Logger.SetOutput(os.Stderr)
}

// connTracker is the server's handshaker: it counts the connections the
// inner handshaker accepted that are still open, so that the shim can
// wait for containerd to hang up before it stops serving. (A wrapping
// listener would not do: the same-user handshake needs the *net.UnixConn.)
type connTracker struct {
	inner ttrpc.Handshaker
	mu    sync.Mutex
	// open counts accepted connections not yet closed; zero is signalled
	// by closing idle, which is replaced when a connection opens. Both
	// guarded by mu.
	open int
	idle chan struct{}
}

func newConnTracker(inner ttrpc.Handshaker) *connTracker {
	idle := make(chan struct{})
	close(idle)
	return &connTracker{inner: inner, idle: idle}
}

// Handshake runs the inner handshake and tracks the connection it admits.
func (t *connTracker) Handshake(ctx context.Context, conn net.Conn) (net.Conn, any, error) {
	c, auth, err := t.inner.Handshake(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	t.mu.Lock()
	if t.open == 0 {
		t.idle = make(chan struct{})
	}
	t.open++
	t.mu.Unlock()
	return &trackedConn{Conn: c, t: t}, auth, nil
}

func (t *connTracker) closed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open--
	if t.open == 0 {
		close(t.idle)
	}
}

// waitIdle returns once no accepted connection is open, or after d.
func (t *connTracker) waitIdle(ctx context.Context, d time.Duration) {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-idle:
	case <-timer.C:
		log.G(ctx).Warn("exiting with a client still connected")
	case <-ctx.Done():
	}
}

// trackedConn tells its tracker when it is first closed.
type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.t.closed)
	return err
}
