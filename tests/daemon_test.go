package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// daemon is one private containerd: its own root, state, sockets, config
// and log under dir, and a bin directory first on its PATH holding copies
// of the shim under test and of the runc shim of the same containerd
// version. Copies, so that a process whose /proc/<pid>/exe is in bin is a
// shim of this daemon and of nothing else.
type daemon struct {
	version daemonVersion
	dir     string // private temp dir; everything below is inside it
	bin     string // first on containerd's PATH
	rootfs  string // a busybox rootfs for `ctr run --rootfs`
	daemonPaths
	configPath string
	logPath    string

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read after exited is closed
	client  *client.Client
}

// startDaemon starts containerd version v with the shim at shim (may be
// "" when the runtime under test is the runc shim) and waits until it
// serves.
func startDaemon(v daemonVersion, shim string) (d *daemon, err error) {
	dir, err := os.MkdirTemp("", "shimtest-")
	if err != nil {
		return nil, err
	}
	d = &daemon{
		version: v,
		dir:     dir,
		bin:     filepath.Join(dir, "bin"),
		rootfs:  filepath.Join(dir, "rootfs"),
		daemonPaths: daemonPaths{
			root:         filepath.Join(dir, "root"),
			state:        filepath.Join(dir, "state"),
			address:      filepath.Join(dir, "containerd.sock"),
			ttrpcAddress: filepath.Join(dir, "containerd.sock.ttrpc"),
			opt:          filepath.Join(dir, "opt"),
		},
		configPath: filepath.Join(dir, "config.toml"),
		logPath:    filepath.Join(dir, "containerd.log"),
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("start containerd %s in %s: %w\n%s", v.name, dir, err, d.logTail(0, 8<<10))
			_ = d.stop()
		}
	}()
	if err := os.MkdirAll(d.bin, 0o755); err != nil {
		return d, err
	}
	if err := copyExecutable(v.runcShim(), filepath.Join(d.bin, shimBinaryName(runcRuntime))); err != nil {
		return d, err
	}
	if shim != "" {
		if err := copyExecutable(shim, filepath.Join(d.bin, shimBinaryName(sandboxRuntime))); err != nil {
			return d, err
		}
		if err := installExecHelper(shim, d.bin); err != nil {
			return d, err
		}
	}
	if err := image.BuildRootfs(d.rootfs, image.BusyboxPath); err != nil {
		return d, err
	}
	cfg, err := daemonConfig(v.configVersion, d.daemonPaths)
	if err != nil {
		return d, err
	}
	if err := os.WriteFile(d.configPath, []byte(cfg), 0o644); err != nil {
		return d, err
	}
	if err := d.launch(); err != nil {
		return d, err
	}
	return d, nil
}

// launch starts the containerd process, appending to the log, and waits
// until it serves. The client is created on the first launch only: after
// a restart the same gRPC client reconnects, so that objects the tests
// hold (tasks, containers) keep working as they would for a real user.
func (d *daemon) launch() error {
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()

	cmd := exec.Command(d.version.containerd(), "--config", d.configPath, "--log-level", "debug")
	cmd.Env = daemonEnv(d.bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a ^C to `go test` reaches the test binary,
	// which then stops the daemon in order, not containerd directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	d.cmd, d.exited = cmd, exited
	go func() {
		d.waitErr = cmd.Wait()
		close(exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.waitServing(ctx)
}

// restart stops containerd and starts it again on the same root, state
// and sockets; shims and containers keep running meanwhile.
func (d *daemon) restart() error {
	if err := d.signalStop(); err != nil {
		return err
	}
	return d.launch()
}

// daemonEnv is the test binary's environment with bin first on PATH and
// nothing that would point containerd or a shim elsewhere.
func daemonEnv(bin string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "PATH", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "NOTIFY_SOCKET",
			"TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION":
			continue
		}
		env = append(env, kv)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return append(env, "PATH="+bin+":"+path)
}

// waitServing polls until the daemon answers on its socket, or exits.
func (d *daemon) waitServing(ctx context.Context) error {
	var last error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("containerd exited: %v", d.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("containerd not serving: %v (last error: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(d.address); err != nil {
			last = err
			continue
		}
		if d.client != nil {
			if ok, err := d.client.IsServing(ctx); !ok {
				last = err
				continue
			}
			return nil
		}
		c, err := client.New(d.address, client.WithTimeout(5*time.Second))
		if err != nil {
			last = err
			continue
		}
		if ok, err := c.IsServing(ctx); !ok {
			last = err
			c.Close()
			continue
		}
		d.client = c
		return nil
	}
}

// stop stops containerd (SIGTERM, then SIGKILL after 15s) and closes the
// client. Only the process started here is signalled.
func (d *daemon) stop() error {
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
	return d.signalStop()
}

// signalStop ends the containerd process (SIGTERM, SIGKILL after 15s).
func (d *daemon) signalStop() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("containerd %s ignored SIGTERM for 15s; killed", d.version.name)
	}
	var exit *exec.ExitError
	if d.waitErr != nil && !errors.As(d.waitErr, &exit) {
		return d.waitErr
	}
	return nil
}

// shimPids returns the live shim processes of this daemon: their
// executable is in d.bin (only this daemon's shims run from there) and,
// when ns is not "", an argument equals ns. The pids are sorted.
func (d *daemon) shimPids(ns string) []int {
	var pids []int
	for _, p := range listProcs() {
		if p.state == 'Z' || filepath.Dir(exeOf(p.pid)) != d.bin {
			continue
		}
		if ns == "" || slices.Contains(cmdlineOf(p.pid), ns) {
			pids = append(pids, p.pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// ctr runs the daemon's matching ctr against it in namespace ns and
// returns stdout, stderr and ctr's exit code (-1 if it did not exit).
func (d *daemon) ctr(ctx context.Context, ns string, args ...string) (stdout, stderr []byte, code int, err error) {
	full := append([]string{"--address", d.address, "--namespace", ns}, args...)
	cmd := exec.CommandContext(ctx, d.version.ctr(), full...)
	cmd.Env = daemonEnv(d.bin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.Bytes(), errb.Bytes(), exit.ExitCode(), nil
	}
	if err != nil {
		return out.Bytes(), errb.Bytes(), -1, err
	}
	return out.Bytes(), errb.Bytes(), 0, nil
}

// logSize is the current length of the daemon log, to print only what a
// test added to it.
func (d *daemon) logSize() int64 {
	fi, err := os.Stat(d.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the daemon log from offset from, at most max bytes (the
// last ones).
func (d *daemon) logTail(from int64, max int64) string {
	f, err := os.Open(d.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := d.logSize()
	if size-from > max {
		from = size - max
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	data, _ := io.ReadAll(f)
	return fmt.Sprintf("--- containerd %s log (%s, from byte %d) ---\n%s--- end of log ---", d.version.name, d.logPath, from, data)
}

func copyExecutable(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}
