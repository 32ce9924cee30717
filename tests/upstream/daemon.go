package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/ctrd"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/procfs"
)

// testNamespace is the namespace every test of integration/client uses.
const testNamespace = "testing"

// daemon is the private containerd one runtime's run talks to: root,
// state, sockets, config and log under dir, and dir/bin first on its PATH
// with copies of the shims and runc-fp. Copies, so that a process whose
// /proc/<pid>/exe is in bin is one of this run's and nothing else's.
type daemon struct {
	dir     string
	bin     string
	address string
	logPath string

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd.Wait has returned
}

// startDaemon starts the containerd in containerdDir with the files in
// bins (name -> source) copied into dir/bin, and waits until it serves.
func startDaemon(dir, containerdDir string, bins map[string]string) (*daemon, error) {
	d := &daemon{
		dir:     dir,
		bin:     filepath.Join(dir, "bin"),
		address: filepath.Join(dir, "containerd.sock"),
		logPath: filepath.Join(dir, "containerd.log"),
	}
	if err := os.MkdirAll(d.bin, 0o755); err != nil {
		return nil, err
	}
	for name, src := range bins {
		if err := copyExecutable(src, filepath.Join(d.bin, name)); err != nil {
			return nil, err
		}
	}
	configPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(d.config()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(containerdDir, "containerd"), "--config", configPath, "--log-level", "debug")
	d.cmd.Env = d.env(containerdDir)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group, so a ^C reaches this program, which stops
	// the daemon in order; and it goes when this program dies.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	d.exited = make(chan struct{})
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.waitServing(ctx); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// config is the daemon's config: the e2e suite's (ctrd.DisabledPlugins:
// no CRI, no NRI, whose socket is global) with this run's paths.
func (d *daemon) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\n")
	fmt.Fprintf(&b, "root = %q\n", filepath.Join(d.dir, "root"))
	fmt.Fprintf(&b, "state = %q\n", filepath.Join(d.dir, "state"))
	var disabled []string
	for _, p := range ctrd.DisabledPlugins(3) {
		disabled = append(disabled, fmt.Sprintf("%q", p))
	}
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n\n", strings.Join(disabled, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n", d.address)
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n\n", d.address+".ttrpc")
	fmt.Fprintf(&b, "[plugins]\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %q\n", filepath.Join(d.dir, "opt"))
	return b.String()
}

// env is this program's environment with bin and the containerd
// directory first on PATH, and nothing that would point containerd, a
// shim or the test binary at another daemon.
func (d *daemon) env(containerdDir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "PATH", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER",
			"NOTIFY_SOCKET", "TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "MAX_SHIM_VERSION",
			"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy",
			"SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR", "TEST_RUNTIME", "TEST_SNAPSHOTTER", "RUNC_FLAVOR":
			continue
		}
		env = append(env, kv)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return append(env, "PATH="+d.bin+":"+containerdDir+":"+path)
}

// waitServing polls until the daemon answers on its socket, or exits.
func (d *daemon) waitServing(ctx context.Context) error {
	var last error
	for {
		select {
		case <-d.exited:
			return fmt.Errorf("containerd exited (log: %s)", d.logPath)
		case <-ctx.Done():
			return fmt.Errorf("containerd not serving: %v (last error: %v; log: %s)", ctx.Err(), last, d.logPath)
		case <-time.After(50 * time.Millisecond):
		}
		c, err := client.New(d.address, client.WithTimeout(5*time.Second))
		if err != nil {
			last = err
			continue
		}
		ok, err := c.IsServing(ctx)
		c.Close()
		if ok {
			return nil
		}
		last = err
	}
}

// cleanup deletes what the tests left in their namespace (a failed test
// may leave containers), then reports it. Each string names one leftover.
func (d *daemon) cleanup() []string {
	c, err := client.New(d.address, client.WithTimeout(5*time.Second))
	if err != nil {
		return []string{fmt.Sprintf("connect to containerd for cleanup: %v", err)}
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), testNamespace), time.Minute)
	defer cancel()
	var left []string
	for _, id := range ctrd.DeleteAll(ctx, c) {
		left = append(left, "container "+id)
	}
	return left
}

// shimPids returns the live processes whose executable is in d.bin: this
// run's shims (and a runc-fp, should one hang).
func (d *daemon) shimPids() []int {
	var pids []int
	for _, p := range procfs.List() {
		if p.State != 'Z' && filepath.Dir(procfs.Exe(p.Pid)) == d.bin {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

// waitShims waits up to timeout for this run's shims to exit, as they
// must once their tasks are deleted, and returns those still alive.
func (d *daemon) waitShims(timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		pids := d.shimPids()
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends containerd (SIGTERM, SIGKILL after 15s). Only the process
// started here is signalled.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// teardown kills this run's processes left (by pid: only those whose
// executable is in d.bin), unmounts what is mounted under dir, and
// removes dir but for the logs when keepLogs. Each string names one
// leftover it had to remove.
func (d *daemon) teardown(keepLogs bool) []string {
	var left []string
	for _, pid := range d.shimPids() {
		left = append(left, fmt.Sprintf("process %d (%s) still running after containerd stopped; killed", pid, procfs.Exe(pid)))
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(d.dir))
	// Deepest first.
	for i := len(mounts) - 1; i >= 0; i-- {
		left = append(left, "mount "+mounts[i].Mountpoint)
		if err := unix.Unmount(mounts[i].Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			left = append(left, fmt.Sprintf("unmount %s: %v", mounts[i].Mountpoint, err))
		}
	}
	keep := map[string]bool{}
	if keepLogs {
		keep = map[string]bool{"containerd.log": true, "test.log": true, "test.json": true, "mirror.log": true}
	}
	entries, _ := os.ReadDir(d.dir)
	for _, e := range entries {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(d.dir, e.Name())); err != nil {
				left = append(left, fmt.Sprintf("remove %s: %v", filepath.Join(d.dir, e.Name()), err))
			}
		}
	}
	if !keepLogs {
		_ = os.Remove(d.dir)
	}
	return left
}

func copyExecutable(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}
