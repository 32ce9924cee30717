package main

import (
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

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/ctrd"
)

// daemon is the bench's private containerd: root, state, sockets, config
// and log all inside dir, and dir/bin first on its PATH holding copies of
// both shims. Copies, so that a process whose /proc/PID/exe is in bin is a
// shim of this run and of nothing else.
type daemon struct {
	dir    string
	bin    string
	sock   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait has returned
	client *client.Client
	// cri is the CRI plugins' part of the config (cri_daemon.go); "" for
	// a daemon with CRI disabled.
	cri string
}

// startDaemon copies the shims into dir/bin, writes a config (schema 3;
// with cri, that CRI part and the CRI plugins enabled) and starts
// containerd from containerdDir, waiting until it serves.
func startDaemon(ctx context.Context, dir, containerdDir string, shims map[string]string, cri string) (*daemon, error) {
	d := &daemon{
		dir:  dir,
		bin:  filepath.Join(dir, "bin"),
		sock: filepath.Join(dir, "containerd.sock"),
		log:  filepath.Join(dir, "containerd.log"),
		cri:  cri,
	}
	if err := os.MkdirAll(d.bin, 0o755); err != nil {
		return nil, err
	}
	for name, src := range shims {
		if err := copyFile(src, filepath.Join(d.bin, name)); err != nil {
			return nil, fmt.Errorf("install shim %s: %w", name, err)
		}
	}
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(d.config()), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	d.cmd = exec.Command(filepath.Join(containerdDir, "containerd"), "--config", config)
	d.cmd.Env = d.env()
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group, so a ^C reaches the bench only, which then
	// stops the daemon itself; and it dies with the bench.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	d.exited = make(chan struct{})
	go func() {
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	if err := d.waitServing(ctx); err != nil {
		return d, fmt.Errorf("%w\n%s", err, d.logTail(4<<10))
	}
	return d, nil
}

// state is the daemon's state directory; task bundles live below it.
func (d *daemon) state() string { return filepath.Join(d.dir, "state") }

func (d *daemon) config() string {
	// The bench's daemon is a 2.4.2 with a version 3 config.
	disabled := ctrd.DisabledPlugins(3)
	if d.cri != "" {
		disabled = slices.DeleteFunc(disabled, func(p string) bool { return slices.Contains(criPlugins, p) })
	}
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\n", filepath.Join(d.dir, "root"), d.state())
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n", strings.Join(quoted, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n", d.sock)
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n", d.sock+".ttrpc")
	fmt.Fprintf(&b, "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = %q\n", filepath.Join(d.dir, "opt"))
	b.WriteString(d.cri)
	return b.String()
}

// env is the bench's environment with bin first on PATH and nothing that
// would point containerd or a shim at another daemon.
func (d *daemon) env() []string {
	env := []string{}
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if key == "PATH" || strings.HasPrefix(key, "CONTAINERD_") || key == "NOTIFY_SOCKET" ||
			key == "TTRPC_ADDRESS" || key == "GRPC_ADDRESS" || key == "NAMESPACE" || key == "MAX_SHIM_VERSION" {
			continue
		}
		env = append(env, kv)
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	return append(env, "PATH="+d.bin+":"+path)
}

func (d *daemon) waitServing(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-d.exited:
			return errors.New("containerd exited during startup")
		case <-ctx.Done():
			return fmt.Errorf("containerd not serving on %s: %w (last error: %v)", d.sock, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(d.sock); err != nil {
			last = err
			continue
		}
		c, err := client.New(d.sock, client.WithTimeout(5*time.Second))
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

// stop closes the client and ends the containerd process started here
// (SIGTERM, SIGKILL after 15s).
func (d *daemon) stop() error {
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return errors.New("containerd ignored SIGTERM for 15s; killed")
	}
}

// logTail returns the last max bytes of the daemon's log.
func (d *daemon) logTail(max int64) string {
	f, err := os.Open(d.log)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return fmt.Sprintf("--- %s (tail) ---\n%s--- end ---", d.log, data)
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// lookPath finds name on the PATH of env.
func lookPath(name string, env []string) (string, error) {
	for _, kv := range env {
		if path, ok := strings.CutPrefix(kv, "PATH="); ok {
			for _, dir := range filepath.SplitList(path) {
				p := filepath.Join(dir, name)
				if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s not found on the daemon's PATH (tests/install-deps.sh installs it)", name)
}
