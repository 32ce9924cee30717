// Package lcexec is the helper of the shim's libcontainer exec engine: it
// runs one process in a container that runc created, as `runc exec
// --detach --process` does, through libcontainer and without runc's
// command line. It is linked only into the helper binary
// (cmd/containerd-shim-sandbox-v2-exec), never into the daemon:
// libcontainer's container-side init is C (nsenter, cgo), and every
// libcontainer this module can use (runc >= 1.4.3, which containerd's
// dependencies require) starts that init from a sealed copy of its own
// process's binary, so the process that calls Run must be the one holding
// nsenter.
//
// What the helper keeps of runc's exec: the container's state is read by
// libcontainer.Load from runc's own state.json (written by runc 1.1 to
// 1.5, the versions the test matrix covers); the init is a sealed copy
// of the helper (libcontainer's exeseal: overlayfs or memfd, the
// CVE-2019-5736 protection); seccomp, namespaces, cgroups, AppArmor and
// SELinux labels come from the container's config; capabilities, user,
// additional gids, rlimits, no_new_privileges, env and cwd from the
// process spec (process.go), which comes through a pipe from the shim
// (--process-fd) where runc reads a file. Errors are written to the log file as runc
// writes them (JSON lines, level "error"), which is where the shim reads
// a failed runtime call's words.
package lcexec

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
)

// Request is one exec: the container id under the runtime's root, the
// process to run, and the files runc's exec takes as flags.
type Request struct {
	Root          string
	ID            string
	Process       *specs.Process
	PidFile       string // written once the process runs
	ConsoleSocket string // for a terminal: where the pty master is sent
}

// Main runs the helper's command line: `exec --root R --process-fd N
// --pid-file P [--log L] [--console-socket S] ID`, with the process spec
// as JSON on fd N, read up to EOF (the shim passes a pipe as fd 3; by
// hand, `--process-fd 3 3<process.json`). It returns the exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	var req Request
	var logPath string
	processFD := -1
	fs.StringVar(&req.Root, "root", "", "runc's state root")
	fs.IntVar(&processFD, "process-fd", -1, "fd to read the process spec (JSON) from, up to EOF")
	fs.StringVar(&req.PidFile, "pid-file", "", "where to write the pid")
	fs.StringVar(&req.ConsoleSocket, "console-socket", "", "console socket for a terminal")
	fs.StringVar(&logPath, "log", "", "JSON log file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "exec: want one container id")
		return 2
	}
	req.ID = fs.Arg(0)
	logrus.SetFormatter(&logrus.JSONFormatter{})
	logrus.SetLevel(logrus.InfoLevel)
	logrus.SetOutput(os.Stderr)
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		logrus.SetOutput(f)
	}
	// Read first, once the log can say what failed: the shim waits for
	// its write to be read, and the fd must be closed before
	// libcontainer starts its init, which would inherit it.
	spec, err := readProcess(processFD)
	if err == nil {
		req.Process = spec
		err = Exec(req)
	}
	if err != nil {
		logrus.Error(err)
		// runc says it on its stderr too, which is the exec's stderr.
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Exec runs req's process in its container and writes its pid file. The
// process is started detached: it is a child of the helper's parent's
// subreaper once the helper exits, as with `runc exec --detach`.
func Exec(req Request) error {
	spec := req.Process
	if spec == nil {
		return errors.New("no process spec")
	}
	lp, err := Process(spec)
	if err != nil {
		return err
	}
	c, err := libcontainer.Load(req.Root, req.ID)
	if err != nil {
		return err
	}
	status, err := c.Status()
	if err != nil {
		return err
	}
	switch status {
	case libcontainer.Stopped:
		return errors.New("cannot exec in a stopped container")
	case libcontainer.Paused:
		return errors.New("cannot exec in a paused container")
	}
	// The init takes the level as logrus numbers it.
	lp.LogLevel = strconv.Itoa(int(logrus.GetLevel()))
	if spec.Terminal {
		if req.ConsoleSocket == "" {
			return errors.New("a terminal needs a console socket")
		}
		sock, err := dialConsole(req.ConsoleSocket)
		if err != nil {
			return err
		}
		defer sock.Close()
		lp.ConsoleSocket = sock
	} else {
		lp.Stdin, lp.Stdout, lp.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if err := c.Run(lp); err != nil {
		return err
	}
	pid, err := lp.Pid()
	if err != nil {
		return err
	}
	if req.PidFile == "" {
		return nil
	}
	return writePidFile(req.PidFile, pid)
}

// readProcess reads a process spec from fd up to EOF and closes fd, so
// that it is not inherited by the init libcontainer starts.
func readProcess(fd int) (*specs.Process, error) {
	if fd < 0 {
		return nil, errors.New("no process spec: --process-fd is required")
	}
	f := os.NewFile(uintptr(fd), "process-fd")
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read process spec from fd %d: %w", fd, err)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("process spec on fd %d: empty", fd)
	}
	var p specs.Process
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("process spec on fd %d: %w", fd, err)
	}
	return &p, nil
}

// dialConsole connects to the shim's console socket; libcontainer's init
// sends the pty master over it.
func dialConsole(path string) (*os.File, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("console socket %s is not a unix socket", path)
	}
	return uc.File()
}

// writePidFile writes pid so that no reader sees a partial file: a
// temporary file beside it, renamed into place.
func writePidFile(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
