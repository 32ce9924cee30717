package ociruntime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
// binary. "" when the running binary cannot be found.
func execHelperPath() string {
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(self), ExecHelperName)
}

// helperCovers reports whether the helper does all that opts asks: a
// detached exec with stdio or a console socket, a pid file and a log.
// A pidfd socket, a Started channel (foreground exec) or extra runc
// arguments run the binary.
func helperCovers(opts *runc.ExecOpts) bool {
	return opts != nil && opts.Detach && opts.PidfdSocket == nil && opts.Started == nil && len(opts.ExtraArgs) == 0
}

// execHelper runs an exec through the libcontainer helper (package
// lcexec): `runc exec --detach` without runc's parent process. It is the
// same call, with the same files: the process spec as a JSON file, the
// pid file, runc's JSON log for the error's words, the console socket for
// a terminal, and opts.IO as the helper's stdio, which the helper hands
// to the process. The helper is started and reaped through go-runc's
// Monitor (the shim's reaper), as every runc command is.
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
	f, err := os.CreateTemp("", "lcexec-process")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	args := []string{"--root", r.client.Root, "--process", f.Name()}
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
	if opts != nil && opts.IO != nil {
		opts.IO.Set(cmd)
	}
	ec, err := runc.Monitor.Start(cmd)
	if err != nil {
		return err
	}
	if opts != nil && opts.IO != nil {
		if c, ok := opts.IO.(runc.StartCloser); ok {
			if err := c.CloseAfterStart(); err != nil {
				return err
			}
		}
	}
	status, err := runc.Monitor.Wait(cmd, ec)
	if err == nil && status != 0 {
		err = fmt.Errorf("%s did not terminate successfully: %w", ExecHelperName, &runc.ExitError{Status: status})
	}
	return err
}
