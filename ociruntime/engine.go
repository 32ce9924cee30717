package ociruntime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The runtime engines an Options.Engine may name.
const (
	// EngineRunc runs the runtime binary for every call (the default,
	// also meant by "").
	EngineRunc = "runc"
	// EngineLibcontainer runs an exec through the shim's libcontainer
	// helper instead of `runc exec`; every other call still runs the
	// binary.
	EngineLibcontainer = "libcontainer"
)

// ExecHelperName is the libcontainer engine's helper binary
// (cmd/containerd-shim-sandbox-v2-exec), looked up beside the shim's own
// binary.
const ExecHelperName = "containerd-shim-sandbox-v2-exec"

// ValidEngine reports whether name is an engine this package knows.
func ValidEngine(name string) bool {
	return name == "" || name == EngineRunc || name == EngineLibcontainer
}

// execHelperPath is where the helper is installed: beside the running
// binary. "" when the running binary cannot be found. Looked up once per
// process, not once per container (New): the helper belongs beside the
// binary this process started from, and os.Executable is a readlink of
// /proc/self/exe each time.
var execHelperPath = sync.OnceValue(func() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(self), ExecHelperName)
})

// helperCovers reports whether the helper does all that opts asks: a
// detached exec with stdio or a console socket, a pid file and a log.
// A pidfd socket, a Started channel (foreground exec) or extra runc
// arguments run the binary.
func helperCovers(opts *runc.ExecOpts) bool {
	return opts != nil && opts.Detach && opts.PidfdSocket == nil && opts.Started == nil && len(opts.ExtraArgs) == 0
}

// execHelper runs an exec through the libcontainer helper (package
// lcexec): `runc exec --detach` without runc's parent process. It is the
// same call, with the same files: the process spec as JSON, the pid
// file, runc's JSON log for the error's words, the console socket for a
// terminal, and opts.IO as the helper's stdio, which the helper hands to
// the process. The spec goes through a pipe, the helper's fd 3
// (--process-fd), not a file: nothing is left in $TMPDIR by a shim that
// dies mid-exec, and no file is written and removed per exec. The
// helper is started and reaped through go-runc's Monitor (the shim's
// reaper), as every runc command is.
//
// The exec'd process is not the helper's child but its parent's (the
// init's nsenter clones with CLONE_PARENT), and outlives the helper: the
// shim, a child subreaper, reaps it, as after `runc exec --detach`.
func (r *Runc) execHelper(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts, logPath string) error {
	if r.helper == "" {
		return fmt.Errorf("exec engine %s: helper %s not found beside the shim", EngineLibcontainer, ExecHelperName)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe for the process spec: %w", err)
	}
	// The first of ExtraFiles is the child's fd 3.
	args := []string{"--root", r.client.Root, "--process-fd", "3"}
	if logPath != "" {
		args = append(args, "--log", logPath)
	}
	if opts != nil && opts.PidFile != "" {
		args = append(args, "--pid-file", opts.PidFile)
	}
	if opts != nil && opts.ConsoleSocket != nil {
		args = append(args, "--console-socket", opts.ConsoleSocket.Path())
	}
	args = append(args, id)
	cmd := exec.CommandContext(ctx, r.helper, args...)
	cmd.Dir = r.client.WorkDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{pr}
	if opts != nil && opts.IO != nil {
		opts.IO.Set(cmd)
	}
	ec, err := runc.Monitor.Start(cmd)
	// Only the helper holds the read end from here: once it exits, a
	// write it left unread fails (EPIPE) instead of blocking.
	pr.Close()
	if err != nil {
		pw.Close()
		return err
	}
	wait := feed(pw, data)
	if opts != nil && opts.IO != nil {
		if c, ok := opts.IO.(runc.StartCloser); ok {
			if err := c.CloseAfterStart(); err != nil {
				// Returns unwaited, as go-runc's Exec does; closing the
				// pipe may cut the helper's spec short, failing it too.
				wait()
				return err
			}
		}
	}
	status, err := runc.Monitor.Wait(cmd, ec)
	werr := wait()
	if err == nil && status != 0 {
		err = fmt.Errorf("%s did not terminate successfully: %w", ExecHelperName, &runc.ExitError{Status: status})
	}
	if err == nil && werr != nil {
		err = fmt.Errorf("write the process spec to %s: %w", ExecHelperName, werr)
	}
	return err
}

// feed writes data to w and closes it, from a goroutine, so that a spec
// larger than the pipe's buffer (64 KiB, less for a user over
// pipe-user-pages-soft) cannot block the caller while the reader starts.
// The returned wait closes w, which ends a write still blocked on a
// reader that will not read (the helper failed first), and waits for
// the goroutine; it returns the write's error. Call it exactly once.
func feed(w *os.File, data []byte) (wait func() error) {
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		// Close here, not only in wait: the reader reads up to EOF.
		w.Close()
		done <- err
	}()
	return func() error {
		w.Close()
		return <-done
	}
}
