package ociruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// conformanceRuncs are the runc binaries the conformance test runs: the
// one on PATH (Debian 12's 1.1.5 in CI) and the matrix that
// tests/install-deps.sh builds under /opt/shimtest, or the colon-separated
// list in SHIM_TEST_RUNC_BINARIES.
func conformanceRuncs(t *testing.T) []string {
	t.Helper()
	if list := os.Getenv("SHIM_TEST_RUNC_BINARIES"); list != "" {
		return strings.Split(list, ":")
	}
	var out []string
	if p, err := exec.LookPath("runc"); err == nil {
		out = append(out, p)
	}
	matrix, _ := filepath.Glob("/opt/shimtest/runc-v*/runc")
	return append(out, matrix...)
}

// observed is what a container's lifecycle left behind, the same whichever
// way it was started and deleted.
type observed struct {
	Hooks       []string // hooks that ran, in order
	Notify      string   // NOTIFY_SOCKET as the container saw it
	CgroupsLeft []string // cgroup directories still there after delete
	StateLeft   bool     // runc's state directory still there
	InitAlive   bool     // the container's init still running
}

// conformanceCase is one container: its spec edits and environment.
type conformanceCase struct {
	name   string
	hooks  bool // poststart and poststop hooks that log to the host
	notify bool // NOTIFY_SOCKET set in the shim's environment
	// skipped are the runc verbs the direct mode must save.
	skipped []string
}

// TestConformanceDirectVersusBinary runs each container lifecycle once
// through the direct paths and once through the runc binary, with every
// runc of the matrix, and compares what is observable: hooks that ran,
// NOTIFY_SOCKET, cgroups and state removed, no process left. It also
// checks which runc verbs the direct mode really saved.
func TestConformanceDirectVersusBinary(t *testing.T) {
	testutil.NeedRoot(t)
	runcs := conformanceRuncs(t)
	if len(runcs) == 0 {
		t.Fatal("no runc on PATH and no matrix under /opt/shimtest: run tests/install-deps.sh")
	}
	t.Cleanup(func() {
		parents, _ := filepath.Glob("/sys/fs/cgroup/*/shimtest-conformance")
		unified, _ := filepath.Glob("/sys/fs/cgroup/unified/shimtest-conformance")
		for _, p := range append(parents, unified...) {
			_ = unix.Rmdir(p)
		}
	})
	cases := []conformanceCase{
		{name: "plain", skipped: []string{"start", "delete"}},
		{name: "hooks", hooks: true},
		// go-runc strips NOTIFY_SOCKET from runc's environment, for
		// the runc shim too: runc start never waits for READY=1, and
		// the container never sees the socket.
		{name: "notify", notify: true, skipped: []string{"start", "delete"}},
	}
	for _, binary := range runcs {
		version := runcVersion(t, binary)
		t.Run(version, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					viaBinary, binaryVerbs := runLifecycle(t, binary, tc, false)
					viaDirect, directVerbs := runLifecycle(t, binary, tc, true)
					if !equalObserved(viaBinary, viaDirect) {
						t.Errorf("runc %s, %s: direct paths left %+v, the binary %+v", version, tc.name, viaDirect, viaBinary)
					}
					if want := []string{"create", "start", "delete"}; !slices.Equal(binaryVerbs, want) {
						t.Errorf("binary mode ran %q, want %q", binaryVerbs, want)
					}
					want := slices.DeleteFunc(slices.Clone(binaryVerbs), func(v string) bool { return slices.Contains(tc.skipped, v) })
					if !slices.Equal(directVerbs, want) {
						t.Errorf("direct mode ran %q, want %q (runc %s)", directVerbs, want, version)
					}
					t.Logf("runc %s %s: binary %q, direct %q, observed %+v", version, tc.name, binaryVerbs, directVerbs, viaDirect)
				})
			}
		})
	}
}

func equalObserved(a, b observed) bool {
	return slices.Equal(a.Hooks, b.Hooks) && a.Notify == b.Notify && slices.Equal(a.CgroupsLeft, b.CgroupsLeft) &&
		a.StateLeft == b.StateLeft && a.InitAlive == b.InitAlive
}

func runcVersion(t *testing.T, binary string) string {
	t.Helper()
	v, err := (&runc.Runc{Command: binary}).Version(context.Background())
	if err != nil || v.Runc == "" {
		t.Fatalf("%s --version: %q, %v", binary, v.Runc, err)
	}
	return v.Runc
}

// runLifecycle creates, starts, waits for and deletes one container that
// runs `sh -c 'echo $NOTIFY_SOCKET >/out/notify'`, through a wrapper that
// logs runc's verbs, and returns what it left and the verbs run.
func runLifecycle(t *testing.T, binary string, tc conformanceCase, direct bool) (observed, []string) {
	t.Helper()
	dir := t.TempDir()
	id := fmt.Sprintf("conf-%s-%v-%d", tc.name, direct, time.Now().UnixNano())
	bundle, out := filepath.Join(dir, "bundle"), filepath.Join(dir, "out")
	for _, d := range []string{bundle, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeBundle(t, binary, bundle, out, id, tc.hooks)
	calls := filepath.Join(dir, "calls")
	wrapper := filepath.Join(dir, "runc")
	script := "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in create|start|delete) echo \"$a\" >>" + calls + "; break;; esac; done\nexec " + binary + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if tc.notify {
		// A socket that would get READY=1 if runc saw it.
		sock := filepath.Join(dir, "notify.sock")
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", sock)
	} else {
		t.Setenv("NOTIFY_SOCKET", "")
	}

	root := filepath.Join(dir, "state")
	r := New(Options{BinaryName: wrapper, Root: root}, "ns", bundle)
	r.direct = direct
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nullIO, err := runc.NewNullIO()
	if err != nil {
		t.Fatal(err)
	}
	defer nullIO.Close()
	pidFile := filepath.Join(dir, "init.pid")
	if err := r.Create(ctx, id, bundle, &runc.CreateOpts{IO: nullIO, PidFile: pidFile}); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = r.client.Delete(context.Background(), id, &runc.DeleteOpts{Force: true}) })
	st, err := readRuncState(r.stateDir(id))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(data), &pid); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	if err := r.Start(ctx, id, pidfd); err != nil {
		t.Fatalf("start: %v", err)
	}
	// The init is runc's child, reparented to whoever reaps here; its
	// pidfd polls readable once it has exited.
	// Poll is not restarted after a signal (Go's preemption signal or
	// a SIGCHLD lands here), so EINTR polls again until the deadline.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds()))
		if errors.Is(err, unix.EINTR) && time.Now().Before(deadline) {
			continue
		}
		if err != nil || n != 1 {
			t.Fatalf("the container did not exit: %d, %v", n, err)
		}
		break
	}
	if err := r.Delete(ctx, id, true); err != nil {
		t.Fatalf("delete: %v", err)
	}

	var o observed
	if data, err := os.ReadFile(filepath.Join(out, "hooks")); err == nil {
		o.Hooks = strings.Fields(string(data))
	}
	if data, err := os.ReadFile(filepath.Join(out, "notify")); err == nil {
		o.Notify = strings.TrimSpace(string(data))
	} else {
		t.Errorf("the container did not run: %v", err)
	}
	for _, p := range st.CgroupPaths {
		if _, err := os.Stat(p); err == nil && !slices.Contains(o.CgroupsLeft, p) {
			o.CgroupsLeft = append(o.CgroupsLeft, p)
		}
	}
	slices.Sort(o.CgroupsLeft)
	_, err = os.Stat(r.stateDir(id))
	o.StateLeft = !errors.Is(err, os.ErrNotExist)
	o.InitAlive = unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil && !zombie(pid)
	verbs, _ := os.ReadFile(calls)
	if tc.hooks && !slices.Equal(o.Hooks, []string{"poststart", "poststop"}) {
		t.Errorf("hooks that ran: %q, want poststart then poststop", o.Hooks)
	}
	if o.Notify != "" {
		t.Errorf("NOTIFY_SOCKET in the container: %q, want none (go-runc strips it)", o.Notify)
	}
	return o, strings.Fields(string(verbs))
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// writeBundle writes a bundle for id: runc's own default spec (`runc
// spec`), a busybox rootfs, out bind-mounted at /out, a cgroup of its own,
// and with hooks a poststart and a poststop hook that log to out.
func writeBundle(t *testing.T, binary, bundle, out, id string, hooks bool) {
	t.Helper()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is needed: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", "sh")); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command(binary, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, o)
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/bin/sh", "-c", "echo $NOTIFY_SOCKET >/out/notify"}
	spec.Root.Readonly = false
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/out", Type: "bind", Source: out, Options: []string{"rbind", "rw"}})
	spec.Linux.CgroupsPath = "/shimtest-conformance/" + id
	if hooks {
		hook := func(name string) specs.Hook {
			return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo " + name + " >>" + filepath.Join(out, "hooks")}}
		}
		spec.Hooks = &specs.Hooks{Poststart: []specs.Hook{hook("poststart")}, Poststop: []specs.Hook{hook("poststop")}}
	}
	data, err = json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}
