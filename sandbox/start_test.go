package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// shortDir returns a fresh directory with a short path, so that socket
// paths in it stay under sun_path's 108 bytes.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestGroupID(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{name: "no annotations", annotations: nil, want: "c1"},
		{name: "unrelated annotation", annotations: map[string]string{"foo": "bar"}, want: "c1"},
		{name: "group", annotations: map[string]string{annotationGroup: "g1"}, want: "g1"},
		{name: "sandbox id", annotations: map[string]string{annotationSandboxID: "pod1"}, want: "pod1"},
		// The runc shim's order: the group annotation first.
		{name: "group over sandbox id", annotations: map[string]string{annotationSandboxID: "pod1", annotationGroup: "g1"}, want: "g1"},
		{name: "empty group falls to sandbox id", annotations: map[string]string{annotationSandboxID: "pod1", annotationGroup: ""}, want: "pod1"},
		{name: "empty sandbox id falls to group", annotations: map[string]string{annotationSandboxID: "", annotationGroup: "g1"}, want: "g1"},
		{name: "empty both", annotations: map[string]string{annotationSandboxID: "", annotationGroup: ""}, want: "c1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := groupID(tt.annotations, "c1"); got != tt.want {
				t.Errorf("groupID: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSocketPath(t *testing.T) {
	const (
		dir  = DefaultSocketDir
		addr = "/run/containerd/containerd.sock"
	)
	base := socketPath(dir, addr, "k8s.io", "pod1")
	if again := socketPath(dir, addr, "k8s.io", "pod1"); again != base {
		t.Errorf("not stable: %q then %q", base, again)
	}
	if filepath.Dir(base) != dir {
		t.Errorf("socket %q not directly under %q", base, dir)
	}
	if len(base) > socketPathLimit {
		t.Errorf("socket path is %d bytes, over %d", len(base), socketPathLimit)
	}
	// The longest name the hash can give in the default dir.
	if want := len(dir) + 1 + 64; len(base) != want {
		t.Errorf("socket path length: got %d, want %d", len(base), want)
	}
	others := []struct {
		name                 string
		addr, namespace, grp string
	}{
		{"other containerd", "/tmp/private/containerd.sock", "k8s.io", "pod1"},
		{"other namespace", addr, "default", "pod1"},
		{"other group", addr, "k8s.io", "pod2"},
	}
	seen := map[string]string{base: "base"}
	for _, o := range others {
		p := socketPath(dir, o.addr, o.namespace, o.grp)
		if prev, ok := seen[p]; ok {
			t.Errorf("%s: same socket as %s: %q", o.name, prev, p)
		}
		seen[p] = o.name
	}
	if got := socketPath("/other/dir", addr, "k8s.io", "pod1"); filepath.Dir(got) != "/other/dir" || filepath.Base(got) != filepath.Base(base) {
		t.Errorf("socket dir not honoured: got %q", got)
	}
}

func statMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func TestListenOrFind(t *testing.T) {
	dir := filepath.Join(shortDir(t), "d")
	path := filepath.Join(dir, "sock")

	l, err := listenOrFind(context.Background(), path, "c1", nil)
	if err != nil {
		t.Fatalf("first listenOrFind: %v", err)
	}
	if m := statMode(t, dir); m.Perm() != 0o700 || !m.IsDir() {
		t.Errorf("socket dir mode: got %v, want drwx------", m)
	}
	if m := statMode(t, path); m&os.ModeSocket == 0 || m.Perm() != 0o600 {
		t.Errorf("socket mode: got %v, want a socket with 0600", m)
	}

	if _, err := listenOrFind(context.Background(), path, "c1", nil); !errors.Is(err, errShimRunning) {
		t.Errorf("listenOrFind with a live listener: got %v, want errShimRunning", err)
	}

	// The shim died: its socket file stays (unlink on close is off) and
	// nobody answers on it.
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket file gone after Close (%v); the stale case is not tested", err)
	}
	l2, err := listenOrFind(context.Background(), path, "c1", nil)
	if err != nil {
		t.Fatalf("listenOrFind over a stale socket: %v", err)
	}
	defer l2.Close()
	checkServes(t, l2, path)
}

// checkServes dials path and checks l accepts the connection.
func checkServes(t *testing.T, l *net.UnixListener, path string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	if err := l.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on the new listener: %v", err)
	}
	a.Close()
}

func TestListenOrFindReplacesStale(t *testing.T) {
	tests := []struct {
		name  string
		stale func(t *testing.T, path string)
	}{
		{
			name: "socket of a closed listener",
			stale: func(t *testing.T, path string) {
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				l.SetUnlinkOnClose(false)
				l.Close()
			},
		},
		{
			name: "regular file",
			stale: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("junk"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "sock")
			tt.stale(t, path)
			l, err := listenOrFind(context.Background(), path, "c1", nil)
			if err != nil {
				t.Fatalf("listenOrFind: %v", err)
			}
			defer l.Close()
			checkServes(t, l, path)
		})
	}
}

// TestListenOrFindBusyShim: a shim that listens but does not take the
// connection in time (its backlog is full, so connect fails with EAGAIN)
// is the pod's shim, busy: start fails as Unavailable and leaves its
// socket, rather than give the pod a second shim.
func TestListenOrFindBusyShim(t *testing.T) {
	path := filepath.Join(shortDir(t), "sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// Backlog 0, never accepted: fill it until a connect would block.
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	full := false
	for range 16 {
		c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(c)
		if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); errors.Is(err, unix.EAGAIN) {
			full = true
			break
		} else if err != nil {
			t.Fatalf("fill the backlog: %v", err)
		}
	}
	if !full {
		t.Fatal("the listener's backlog never filled")
	}
	l, err := listenOrFind(context.Background(), path, "c1", nil)
	if err == nil {
		l.Close()
		t.Fatal("listenOrFind took the socket of a busy shim")
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("listenOrFind: got %v, want Unavailable", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		t.Errorf("the busy shim's socket: stat %v, mode %o; want it kept", err, st.Mode)
	}
}

func TestListenOrFindErrors(t *testing.T) {
	dir := shortDir(t)
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{name: "path over sun_path", path: filepath.Join(dir, strings.Repeat("x", 120))},
		{name: "dir is a file", path: filepath.Join(file, "sock")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := listenOrFind(context.Background(), tt.path, "c1", nil)
			if err == nil {
				l.Close()
				t.Fatal("listenOrFind: got nil error")
			}
			if errors.Is(err, errShimRunning) {
				t.Errorf("got errShimRunning, want a real error")
			}
		})
	}
}

// TestStartShimFindsRunningShim: for a pod whose shim is running,
// StartShim starts nothing, answers with its address and records it in
// the bundle.
func TestStartShimFindsRunningShim(t *testing.T) {
	sockDir := shortDir(t)
	tests := []struct {
		name        string
		annotations map[string]string
		group       string
	}{
		{name: "own shim", annotations: nil, group: "c1"},
		{name: "pod shim by sandbox id", annotations: map[string]string{annotationSandboxID: "pod1"}, group: "pod1"},
		{name: "pod shim by group", annotations: map[string]string{annotationGroup: "g1"}, group: "g1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := newBundle(t, tt.annotations)
			path := socketPath(sockDir, "/run/c.sock", "ns", tt.group)
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			shim, err := StartShim(context.Background(), StartConfig{
				ID:          "c1",
				Namespace:   "ns",
				Bundle:      bundle,
				GRPCAddress: "/run/c.sock",
				SocketDir:   sockDir,
				Executable:  "/nonexistent/must-not-be-started",
			})
			if err != nil {
				t.Fatalf("StartShim: %v", err)
			}
			addr := shim.Address
			if want := "unix://" + path; addr != want || shim.TaskAPI != 0 {
				t.Errorf("shim: got %+v, want address %q, task API 0", shim, want)
			}
			data, err := os.ReadFile(filepath.Join(bundle, "address"))
			if err != nil || string(data) != addr {
				t.Errorf("address file: got (%q, %v), want %q", data, err, addr)
			}
		})
	}
}

// TestStartShimFindsOtherShim: a shim at the pod's socket that does not
// take claims (the runc shim) is handed out, and asked which task API it
// serves; one that takes the claim (this shim) is not asked. Neither is
// started over.
func TestStartShimFindsOtherShim(t *testing.T) {
	sockDir := shortDir(t)
	notImplemented := func(context.Context, net.Conn, string) error { return errdefs.ErrNotImplemented }
	claimed := func(context.Context, net.Conn, string) error { return nil }
	tests := []struct {
		name      string
		claim     ClaimFunc
		answer    int   // what the TaskAPIFunc says
		answerErr error // and its error
		wantAsked bool
		want      int
	}{
		{name: "runc shim of containerd 2.x", claim: notImplemented, answer: 3, wantAsked: true, want: 3},
		{name: "shim serving v2", claim: notImplemented, answer: 0, wantAsked: true, want: 0},
		{name: "question fails", claim: notImplemented, answer: 3, answerErr: errors.New("broken"), wantAsked: true, want: 0},
		{name: "this shim", claim: claimed, answer: 3, wantAsked: false, want: 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			group := fmt.Sprintf("pod%d", i)
			path := socketPath(sockDir, "/run/c.sock", "ns", group)
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			asked := false
			shim, err := StartShim(context.Background(), StartConfig{
				ID:          "c1",
				Namespace:   "ns",
				Bundle:      newBundle(t, map[string]string{annotationSandboxID: group}),
				GRPCAddress: "/run/c.sock",
				SocketDir:   sockDir,
				Executable:  "/nonexistent/must-not-be-started",
				Claim: func(ctx context.Context, c net.Conn, id string) error {
					defer c.Close()
					return tt.claim(ctx, c, id)
				},
				TaskAPI: func(_ context.Context, c net.Conn) (int, error) {
					c.Close()
					asked = true
					return tt.answer, tt.answerErr
				},
			})
			if err != nil {
				t.Fatalf("StartShim: %v", err)
			}
			if want := (Shim{Address: "unix://" + path, TaskAPI: tt.want}); shim != want {
				t.Errorf("StartShim: got %+v, want %+v", shim, want)
			}
			if asked != tt.wantAsked {
				t.Errorf("task API asked: got %v, want %v", asked, tt.wantAsked)
			}
		})
	}
}

// TestStartShimStartsDaemon: with no shim for the pod, StartShim binds the
// socket and starts the executable with containerd's flags, in the
// bundle, in its own process group, with the listener as fd 3.
func TestStartShimStartsDaemon(t *testing.T) {
	dir := shortDir(t)
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "shim.sh")
	body := `#!/bin/sh
{
  echo "args=$*"
  echo "cwd=$(pwd)"
  echo "ttrpc=$TTRPC_ADDRESS"
  echo "fd3=$(readlink /proc/self/fd/3)"
  echo "pid=$$"
  echo "pgid=$(cut -d' ' -f5 /proc/$$/stat)"
} > "$FAKE_SHIM_OUT.tmp"
mv "$FAKE_SHIM_OUT.tmp" "$FAKE_SHIM_OUT"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_SHIM_OUT", out)
	bundle := newBundle(t, nil)
	sockDir := filepath.Join(dir, "s")
	shim, err := StartShim(context.Background(), StartConfig{
		ID:           "c1",
		Namespace:    "ns",
		Bundle:       bundle,
		GRPCAddress:  "/run/c.sock",
		TTRPCAddress: "/run/c.sock.ttrpc",
		SocketDir:    sockDir,
		Debug:        true,
		Executable:   script,
	})
	if err != nil {
		t.Fatalf("StartShim: %v", err)
	}
	path := socketPath(sockDir, "/run/c.sock", "ns", "c1")
	addr := shim.Address
	if addr != "unix://"+path || shim.TaskAPI != 0 {
		t.Errorf("shim: got %+v, want address %q, task API 0", shim, "unix://"+path)
	}
	testutil.WaitFor(t, 10*time.Second, "the fake shim's report", func() bool {
		_, err := os.Stat(out)
		return err == nil
	})
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	if pid, err := strconv.Atoi(got["pid"]); err == nil {
		// The daemon was released, not waited for; reap it here.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}
	want := map[string]string{
		"args":  "-namespace ns -id c1 -address /run/c.sock -debug",
		"cwd":   bundle,
		"ttrpc": "/run/c.sock.ttrpc",
		"pgid":  got["pid"],
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("daemon %s: got %q, want %q", k, got[k], v)
		}
	}
	if !strings.HasPrefix(got["fd3"], "socket:") {
		t.Errorf("daemon fd 3: got %q, want the listening socket", got["fd3"])
	}
	if data, err := os.ReadFile(filepath.Join(bundle, "address")); err != nil || string(data) != addr {
		t.Errorf("address file: got (%q, %v), want %q", data, err, addr)
	}
	if m := statMode(t, path); m&os.ModeSocket == 0 {
		t.Errorf("socket file after start: mode %v", m)
	}
}

// TestStartShimExecFailureRemovesSocket: a daemon that cannot start leaves
// no socket behind for the next start to trip on.
func TestStartShimExecFailureRemovesSocket(t *testing.T) {
	sockDir := shortDir(t)
	_, err := StartShim(context.Background(), StartConfig{
		ID: "c1", Namespace: "ns", Bundle: newBundle(t, nil), GRPCAddress: "/run/c.sock",
		SocketDir: sockDir, Executable: "/nonexistent/shim",
	})
	if err == nil {
		t.Fatal("StartShim with a missing executable: got nil error")
	}
	if _, err := os.Lstat(socketPath(sockDir, "/run/c.sock", "ns", "c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after a failed start: %v", err)
	}
}

func TestWriteAddressFile(t *testing.T) {
	if err := writeAddressFile("", "unix:///x"); err != nil {
		t.Errorf("no bundle: got %v, want nil", err)
	}
	dir := t.TempDir()
	for _, addr := range []string{"unix:///first", "unix:///second"} {
		if err := writeAddressFile(dir, addr); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(filepath.Join(dir, "address")); err != nil || string(data) != addr {
			t.Errorf("address file: got (%q, %v), want %q", data, err, addr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".address")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}

func TestAdjustOOMScore(t *testing.T) {
	child := testutil.StartSleeper(t)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", os.Getppid()))
	if err != nil {
		t.Fatal(err)
	}
	parent, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := adjustOOMScore(child.Process.Pid); err != nil {
		t.Fatalf("adjustOOMScore: %v", err)
	}
	data, err = os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := parent + 1
	if parent >= 1000 {
		want = parent
	}
	if got, _ := strconv.Atoi(strings.TrimSpace(string(data))); got != want {
		t.Errorf("oom_score_adj: got %d, want %d", got, want)
	}
}

// TestDaemonEnv: the daemon runs with one P unless the node chose
// GOMAXPROCS: containerd's lone GOMAXPROCS=2 is replaced; a value of the
// node's (first, before containerd's) is kept, alone.
func TestDaemonEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"none", []string{"PATH=/bin"}, []string{"PATH=/bin", "TTRPC_ADDRESS=/t", "GOMAXPROCS=1"}},
		{"containerd's", []string{"PATH=/bin", "GOMAXPROCS=2"}, []string{"PATH=/bin", "TTRPC_ADDRESS=/t", "GOMAXPROCS=1"}},
		{"the node's and containerd's", []string{"GOMAXPROCS=4", "PATH=/bin", "GOMAXPROCS=2"}, []string{"PATH=/bin", "TTRPC_ADDRESS=/t", "GOMAXPROCS=4"}},
		{"the node's 2 and containerd's", []string{"GOMAXPROCS=2", "GOMAXPROCS=2"}, []string{"TTRPC_ADDRESS=/t", "GOMAXPROCS=2"}},
		{"a lone other value", []string{"GOMAXPROCS=3"}, []string{"TTRPC_ADDRESS=/t", "GOMAXPROCS=3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.env)
			if got := daemonEnv(in, "/t"); !slices.Equal(got, tc.want) {
				t.Errorf("daemonEnv(%v) = %v, want %v", tc.env, got, tc.want)
			}
			if !slices.Equal(in, tc.env) {
				t.Errorf("daemonEnv changed its input: %v", in)
			}
		})
	}
}
