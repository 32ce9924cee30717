package sandbox

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/cgroups"
)

// Grouping annotations: containers naming the same group share one shim.
// groupID reads them in the runc shim's order, so that both shims derive
// the same socket for a container and each finds a pod the other started
// (an operator switching between them: README "Drop-in for an existing
// node").
const (
	annotationSandboxID = "io.kubernetes.cri.sandbox-id"
	annotationGroup     = "io.containerd.runc.v2.group"
)

// DefaultSocketDir is where sockets go when containerd does not say
// (every containerd before 2.3).
const DefaultSocketDir = "/run/containerd/s"

// socketPathLimit is sun_path's size less its NUL.
const socketPathLimit = 107

// StartConfig is what the `start` action knows about the container
// containerd wants a shim for.
type StartConfig struct {
	ID        string
	Namespace string
	// Bundle is the container's bundle (the action's working directory).
	Bundle string
	// GRPCAddress and TTRPCAddress are containerd's sockets.
	GRPCAddress  string
	TTRPCAddress string
	SocketDir    string
	Debug        bool
	// ShimCgroup, from the runtime options, is where the new shim goes.
	ShimCgroup string
	// Executable is this binary, started again as the shim daemon.
	Executable string
	// Claim asks the live shim on conn to hold itself for the container
	// (Manager.Claim over the shim's socket); nil only dials.
	Claim ClaimFunc
	// TaskAPI asks a live shim that is not this one which task API it
	// serves; nil assumes both, as this shim does.
	TaskAPI TaskAPIFunc
}

// Shim is the shim StartShim found or started for a container.
type Shim struct {
	// Address is the shim's socket, unix://path.
	Address string
	// TaskAPI is 3 when the shim is another one, found at the pod's
	// socket, that serves task API v3 only (containerd 2.x's runc shim);
	// 0 when it serves v2, as this shim (which serves both) and 1.x's
	// runc shim do.
	TaskAPI int
}

// StartShim returns the shim serving the container's pod, starting the
// shim when it is not running. For the second and later containers of a
// pod it only reads config.json and dials a socket.
//
// The shim found may be another one: containerd's runc shim derives the
// same socket for the same pod, so after an operator puts this binary in
// its place, a pod the runc shim started keeps getting its new containers
// from that shim, as a runc shim upgrade would have it.
func StartShim(ctx context.Context, cfg StartConfig) (Shim, error) {
	group := cfg.ID
	if s, err := readSpec(cfg.Bundle); err == nil {
		group = groupID(s.Annotations, cfg.ID)
	}
	dir := cfg.SocketDir
	if dir == "" {
		dir = DefaultSocketDir
	}
	path := socketPath(dir, cfg.GRPCAddress, cfg.Namespace, group)
	address := "unix://" + path
	l, err := listenOrFind(ctx, path, cfg.ID, cfg.Claim)
	if errors.Is(err, errShimRunning) {
		shim := Shim{Address: address}
		if errors.Is(err, errOtherShim) {
			shim.TaskAPI = otherTaskAPI(ctx, path, cfg.TaskAPI)
		}
		return shim, writeAddressFile(cfg.Bundle, address)
	}
	if err != nil {
		return Shim{}, err
	}
	defer l.Close()
	if err := startDaemon(ctx, cfg, l); err != nil {
		os.Remove(path)
		return Shim{}, err
	}
	return Shim{Address: address}, writeAddressFile(cfg.Bundle, address)
}

// groupID is the group a container belongs to: the group annotation,
// else its pod, else its own id. An empty value counts as absent (the
// runc shim would group every container with an empty one in the
// namespace into one shim).
func groupID(annotations map[string]string, id string) string {
	if g := annotations[annotationGroup]; g != "" {
		return g
	}
	if g := annotations[annotationSandboxID]; g != "" {
		return g
	}
	return id
}

// socketPath hashes containerd's address, the namespace and the group, as
// the runc shim does, so that private containerds sharing the socket
// directory never collide and the path stays short.
func socketPath(dir, containerdAddress, namespace, group string) string {
	sum := sha256.Sum256([]byte(filepath.Join(containerdAddress, namespace, group)))
	return filepath.Join(dir, fmt.Sprintf("%x", sum))
}

var errShimRunning = errors.New("shim already running")

// errOtherShim wraps errShimRunning when the running shim did not know
// the claim: another shim (the runc shim) or an older build of this one.
var errOtherShim = fmt.Errorf("%w, one that does not take claims", errShimRunning)

// TaskAPIFunc asks the shim on conn whether it serves task API v2, and
// closes conn: it returns 3 when the shim serves v3 only, else 0.
type TaskAPIFunc func(ctx context.Context, conn net.Conn) (int, error)

// otherTaskAPI asks the shim on path which task API it serves, with ask.
// Anything that goes wrong answers 0 (both): the caller then answers as
// for this shim, which was all it did before it asked.
func otherTaskAPI(ctx context.Context, path string, ask TaskAPIFunc) int {
	if ask == nil {
		return 0
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return 0
	}
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	v, err := ask(cctx, c)
	if err != nil {
		return 0
	}
	return v
}

// ClaimFunc asks the shim on conn to hold itself for container id (see
// Manager.Claim), and closes conn. It returns errdefs.ErrUnavailable when
// the shim is exiting or closed the connection, errdefs.ErrNotImplemented
// from a shim that predates claims.
type ClaimFunc func(ctx context.Context, conn net.Conn, id string) error

// claimTimeout bounds the claim. A shim `start` has just started answers
// once it serves (its log fifo opened, well within this); a shim that does
// not answer in time is handed out as it was before claims existed.
const claimTimeout = 10 * time.Second

// listenOrFind binds the socket, or reports errShimRunning when a live shim
// owns it and took claim for container id. A socket nobody answers on is
// stale (its shim died) and is replaced, as is the socket of a shim that
// refuses the claim because it is exiting: that shim has decided, under
// this same lock, to exit, and never serves the container.
//
// Concurrent starts for one pod are serialised by a flock on the socket
// directory: without it, a caller dialing between another's bind and
// listen is refused, takes the socket for stale, removes it and binds its
// own, and the pod gets two shims. A shim decides to exit under the same
// flock (Manager.WaitExit), so it never does between the dial and the
// claim. The lock is held for a bind, or a dial and a claim, never across
// the daemon's start.
func listenOrFind(ctx context.Context, path, id string, claim ClaimFunc) (*net.UnixListener, error) {
	if len(path) > socketPathLimit {
		return nil, fmt.Errorf("socket path %q is over %d bytes", path, socketPathLimit)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	for attempt := 0; attempt < 2; attempt++ {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			l.SetUnlinkOnClose(false)
			if err := os.Chmod(path, 0o600); err != nil {
				l.Close()
				return nil, err
			}
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen on %q: %w", path, err)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		switch {
		case err == nil:
			switch claimShim(ctx, c, id, claim) {
			case claimTaken:
				return nil, errShimRunning
			case claimUnknown:
				return nil, errOtherShim
			}
		case !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, os.ErrNotExist):
			// Someone listens but did not take the connection (a full
			// backlog: EAGAIN; or a timeout): the pod's shim, busy.
			// Taking its socket would give the pod a second shim.
			return nil, fmt.Errorf("find the pod's shim at %q: %w: %w", path, err, errdefs.ErrUnavailable)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket %q: %w", path, err)
		}
	}
	return nil, fmt.Errorf("listen on %q: socket keeps reappearing", path)
}

// claimAnswer is what a running shim made of a claim.
type claimAnswer int

const (
	// claimTaken: the shim holds itself for the container, or did not
	// answer in time, or no claim was asked.
	claimTaken claimAnswer = iota
	// claimUnknown: the shim does not know claims (NotImplemented): the
	// runc shim, or a build of this one that predates them.
	claimUnknown
	// claimRefused: the shim is exiting or closed the connection.
	claimRefused
)

// claimShim claims container id from the shim on c and closes c. A shim
// may be handed out unless it refused; one that predates claims, or does
// not answer in time, is handed out as before claims existed. Nothing is
// logged: containerd reads `start`'s stderr together with its stdout as
// the answer.
func claimShim(ctx context.Context, c net.Conn, id string, claim ClaimFunc) claimAnswer {
	if claim == nil {
		c.Close()
		return claimTaken
	}
	cctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	err := claim(cctx, c, id)
	switch {
	case errdefs.IsUnavailable(err):
		return claimRefused
	case errdefs.IsNotImplemented(err):
		return claimUnknown
	}
	return claimTaken
}

// lockDir takes an exclusive flock on dir and returns its release.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open socket dir: %w", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock socket dir: %w", err)
	}
	// Closing the fd releases the lock.
	return func() { unix.Close(fd) }, nil
}

// daemonEnv is the daemon's environment: the start helper's (containerd's),
// with TTRPC_ADDRESS, and GOMAXPROCS=1 unless the node chose GOMAXPROCS.
//
// containerd appends GOMAXPROCS=2 to every shim's environment, after its
// own (core/runtime/v2/command.go; the runc shim also defaults to 2), and
// Go reads the first of duplicate variables. So a lone GOMAXPROCS=2 is
// containerd's default, replaced here; a node's own setting (in
// containerd's environment, so first) is kept.
//
// One P is a measured choice (issue 15): the daemon's work is waiting on
// fds, children and runc, and each P costs memory for the pod's lifetime
// (its allocation cache, and the threads that run it).
//
// GOGC is left as it is (Go's 100, or the node's): containerd's shims set
// 40, and 25 and 40 were measured here against 100 in the CRI bench (10
// pods each, after the idle trim learnt to run under CRI's metrics
// polling): the shim's USS per pod moved within the noise (4.06, 3.99,
// 4.22 MiB), and below Go's first collection goal a lower setting makes
// an idle pod collect, which costs the collector's metadata (+0.45 MiB
// USS per pod in the node bench, +0.57 MiB for the pod holder).
func daemonEnv(env []string, ttrpcAddress string) []string {
	var procs []string
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
			procs = append(procs, v)
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "TTRPC_ADDRESS="+ttrpcAddress)
	if len(procs) == 0 || (len(procs) == 1 && procs[0] == containerdGOMAXPROCS) {
		return append(out, "GOMAXPROCS=1")
	}
	return append(out, "GOMAXPROCS="+procs[0])
}

// containerdGOMAXPROCS is the value containerd gives every shim.
const containerdGOMAXPROCS = "2"

// startDaemon starts this binary as the pod's shim, serving on l (its fd
// 3), in its own process group so containerd's signals to the start
// helper's group do not reach it.
func startDaemon(ctx context.Context, cfg StartConfig, l *net.UnixListener) error {
	f, err := l.File()
	if err != nil {
		return err
	}
	defer f.Close()
	args := []string{"-namespace", cfg.Namespace, "-id", cfg.ID, "-address", cfg.GRPCAddress}
	if cfg.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(cfg.Executable, args...)
	cmd.Dir = cfg.Bundle
	cmd.Env = daemonEnv(os.Environ(), cfg.TTRPCAddress)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start shim daemon: %w", err)
	}
	pid := cmd.Process.Pid
	// The start helper exits right after this; the daemon is reparented
	// and never waited for here.
	_ = cmd.Process.Release()
	if cfg.ShimCgroup != "" {
		if err := cgroups.PlaceProcess(cgroups.DefaultRoot, cfg.ShimCgroup, pid); err != nil {
			syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("place shim in cgroup %q: %w", cfg.ShimCgroup, err)
		}
	}
	// Best effort, and silent: containerd reads the start action's stderr
	// together with its stdout as the answer, so a log line here would
	// corrupt the address (or BootstrapResult) it parses.
	_ = adjustOOMScore(pid)
	return nil
}

// adjustOOMScore makes the shim a slightly likelier OOM victim than
// containerd (its parent's score + 1), never a less likely one: raising a
// score needs no privilege, lowering needs CAP_SYS_RESOURCE.
func adjustOOMScore(pid int) error {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", os.Getppid()))
	if err != nil {
		return err
	}
	score, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return err
	}
	if score >= 1000 {
		return nil
	}
	return os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(strconv.Itoa(score+1)), 0)
}

// writeAddressFile records the shim address in the bundle, where
// containerd 1.6 looks for it when it reconnects after a restart.
func writeAddressFile(bundle, address string) error {
	if bundle == "" {
		return nil
	}
	if err := writeFileAtomic(bundle, "address", []byte(address)); err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}
