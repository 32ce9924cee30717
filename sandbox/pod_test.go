package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

// The test binary is the pod holder too, as the shim binary is: the
// Manager re-executes it with HolderArg (see cmd's init and main), and
// RunHolder needs the main thread. The tests lock it too: a goroutine
// that joins a pod's namespaces and ends locked (inNamespaces) ends its
// thread, except the main thread, which the runtime parks in those
// namespaces for good, and /proc/self/ns, the main thread's, then showed
// the pod's (TestHostNetworkPodKeepsHostname failed 1 run in 12).
func init() {
	runtime.LockOSThread()
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HolderArg {
		os.Exit(RunHolder(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// podHarness is a Manager with a real reaper, whose holder is this test
// binary.
type podHarness struct {
	m   *Manager
	pub *fakePublisher
	// r is the Manager's reaper, which reaps every child of the test
	// process: a test's own child is started and waited for through it.
	r      *reaper.Reaper
	bundle string
	t      *testing.T
}

func newPodHarness(t *testing.T) *podHarness {
	t.Helper()
	testutil.NeedRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &podHarness{pub: &fakePublisher{}, r: reaper.NewReaper(), bundle: t.TempDir(), t: t}
	h.m = NewManager(context.Background(), Config{
		Namespace:        "testns",
		Publisher:        h.pub,
		Reaper:           h.r,
		HolderExecutable: exe,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.m.ShutdownSandbox(ctx, "pod1")
		if err := h.m.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

// startPod creates and starts pod1, a host-network pod with no config,
// and returns its status.
func (h *podHarness) startPod(ctx context.Context) PodStatus {
	h.t.Helper()
	if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle}); err != nil {
		h.t.Fatal(err)
	}
	st, err := h.m.StartSandbox(ctx, "pod1")
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// newNetNS returns a network namespace bound at a file, as CRI makes
// them: a child cloned with CLONE_NEWNET, its /proc/<pid>/ns/net
// bind-mounted, the child then killed.
func newNetNS(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), path, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(path, unix.MNT_DETACH) })
	return path
}

func nsIno(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// inNamespaces runs fn on a thread that joined pid's namespaces of the
// given kinds; the thread is thrown away after.
func inNamespaces(t *testing.T, pid int, kinds map[string]int, fn func() string) string {
	t.Helper()
	out := make(chan string, 1)
	go func() {
		// Never unlocked: the thread dies with the goroutine.
		runtime.LockOSThread()
		for name, flag := range kinds {
			fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				out <- "error: " + err.Error()
				return
			}
			err = unix.Setns(fd, flag)
			unix.Close(fd)
			if err != nil {
				out <- "error: setns " + name + ": " + err.Error()
				return
			}
		}
		out <- fn()
	}()
	return <-out
}

func podConfig(t *testing.T, c *cri.PodSandboxConfig) []byte {
	t.Helper()
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPodLifecycle(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	netns := newNetNS(t)
	cfg := podConfig(t, &cri.PodSandboxConfig{
		Metadata:  &cri.PodSandboxMetadata{Name: "p", Uid: "u", Namespace: "default"},
		Hostname:  "podhost",
		DnsConfig: &cri.DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"svc.local"}, Options: []string{"ndots:5"}},
		Linux: &cri.LinuxPodSandboxConfig{
			Sysctls: map[string]string{"kernel.shmmni": "1234"},
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{
				Pid: cri.NamespaceMode_POD,
			}},
		},
	})
	if err := h.m.Claim(ctx, "pod1"); err != nil {
		t.Fatal(err)
	}
	req := CreateSandboxRequest{ID: "pod1", Bundle: h.bundle, NetNS: netns, Config: cfg}
	for i := range 2 {
		if err := h.m.CreateSandbox(ctx, req); err != nil {
			t.Fatalf("CreateSandbox #%d: %v", i+1, err)
		}
	}
	h.m.life.mu.Lock()
	claims := len(h.m.life.claims)
	h.m.life.mu.Unlock()
	if claims != 0 {
		t.Errorf("claims after CreateSandbox: got %d, want 0 (consumed)", claims)
	}
	if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod2", Bundle: h.bundle}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("CreateSandbox of a second pod: got %v, want AlreadyExists", err)
	}
	if _, err := h.m.SandboxStatus(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("SandboxStatus of an unknown id: got %v, want NotFound", err)
	}

	st, err := h.m.StartSandbox(ctx, "pod1")
	if err != nil {
		t.Fatalf("StartSandbox: %v", err)
	}
	again, err := h.m.StartSandbox(ctx, "pod1")
	if err != nil || again.Pid != st.Pid || !again.CreatedAt.Equal(st.CreatedAt) {
		t.Errorf("StartSandbox again: got %d %v %v, want the same pid %d and created_at", again.Pid, again.CreatedAt, err, st.Pid)
	}
	pid := st.Pid
	if got, want := nsIno(t, fmt.Sprintf("/proc/%d/ns/net", pid)), nsIno(t, netns); got != want {
		t.Errorf("holder netns inode: got %d, want %d (netns_path)", got, want)
	}
	for _, ns := range []string{"ipc", "uts", "pid"} {
		if nsIno(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)) == nsIno(t, "/proc/self/ns/"+ns) {
			t.Errorf("holder %s namespace is the shim's, want a new one", ns)
		}
	}
	hostname := inNamespaces(t, pid, map[string]int{"uts": unix.CLONE_NEWUTS}, func() string {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return err.Error()
		}
		return unix.ByteSliceToString(u.Nodename[:])
	})
	if hostname != "podhost" {
		t.Errorf("holder hostname: got %q, want podhost", hostname)
	}
	shmmni := inNamespaces(t, pid, map[string]int{"ipc": unix.CLONE_NEWIPC}, func() string {
		b, err := os.ReadFile("/proc/sys/kernel/shmmni")
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(string(b))
	})
	if shmmni != "1234" {
		t.Errorf("kernel.shmmni in the pod: got %q, want 1234", shmmni)
	}
	if s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); !strings.Contains(string(s), "CapEff:\t0000000000000000") {
		t.Errorf("holder keeps capabilities:\n%s", s)
	}

	// The files.
	files := podFiles{dir: filepath.Join(h.bundle, podDirName)}
	for path, want := range map[string]string{
		files.hostname(): "podhost\n",
		files.resolv():   "search svc.local\nnameserver 10.0.0.10\noptions ndots:5\n",
	} {
		if got, _ := os.ReadFile(path); string(got) != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
	if hosts, _ := os.ReadFile(files.hosts()); !strings.Contains(string(hosts), "podhost") {
		t.Errorf("hosts does not name the hostname: %q", hosts)
	}
	if !mounted(files.shm()) {
		t.Errorf("%s is not a mount", files.shm())
	}
	rec, ok, err := readRecord(h.bundle)
	if err != nil || !ok || rec.Pid != pid || rec.State != "ready" || rec.Config.Hostname != "podhost" {
		t.Errorf("pod record: got %+v %v %v, want pid %d ready", rec, ok, err, pid)
	}

	// Task API for the sandbox id (containerd after a restart).
	if _, taskPid, err := h.m.Connect(ctx, "pod1"); err != nil || taskPid != pid {
		t.Errorf("Connect(pod1): got %d %v, want %d", taskPid, err, pid)
	}
	if pids, err := h.m.Pids(ctx, "pod1"); err != nil || len(pids) != 1 || pids[0] != pid {
		t.Errorf("Pids(pod1): got %v %v, want [%d]", pids, err, pid)
	}

	// The shim stays for the pod after a task Shutdown.
	h.m.Shutdown(ctx)
	h.m.life.mu.Lock()
	may := h.m.mayExitLocked()
	h.m.life.mu.Unlock()
	if may {
		t.Error("shim may exit while it holds the pod")
	}

	waited := make(chan PodStatus, 1)
	go func() {
		st, _ := h.m.WaitSandbox(ctx, "pod1")
		waited <- st
	}()
	if err := h.m.StopSandbox(ctx, "pod1", time.Second); err != nil {
		t.Fatalf("StopSandbox: %v", err)
	}
	select {
	case st := <-waited:
		if st.State != PodStopped || st.ExitedAt.IsZero() {
			t.Errorf("WaitSandbox: got %+v, want stopped with exited_at", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitSandbox did not return after StopSandbox")
	}
	if err := h.m.StopSandbox(ctx, "pod1", 0); err != nil {
		t.Errorf("StopSandbox again: %v", err)
	}
	if st, err := h.m.WaitSandbox(ctx, "pod1"); err != nil || st.State != PodStopped {
		t.Errorf("WaitSandbox after the end: got %+v %v", st, err)
	}
	testutil.WaitFor(t, 5*time.Second, "TaskExit for pod1", func() bool {
		for _, e := range h.pub.all() {
			if x, ok := e.event.(*eventstypes.TaskExit); ok && x.ID == "pod1" && x.Pid == uint32(pid) {
				return true
			}
		}
		return false
	})
	if _, err := h.m.StartSandbox(ctx, "pod1"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("StartSandbox of a stopped pod: got %v, want FailedPrecondition", err)
	}

	for i := range 2 {
		if err := h.m.ShutdownSandbox(ctx, "pod1"); err != nil {
			t.Fatalf("ShutdownSandbox #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(files.dir); !os.IsNotExist(err) {
		t.Errorf("pod files left after ShutdownSandbox: %v", err)
	}
	if _, ok, _ := readRecord(h.bundle); ok {
		t.Error("pod record left after ShutdownSandbox")
	}
	h.m.life.mu.Lock()
	may = h.m.mayExitLocked()
	h.m.life.mu.Unlock()
	if !may {
		t.Error("shim may not exit after ShutdownSandbox")
	}
}

func TestPodHolderExitEndsPod(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	st := h.startPod(ctx)
	// Host network (no netns_path): the holder keeps the shim's.
	if nsIno(t, fmt.Sprintf("/proc/%d/ns/net", st.Pid)) != nsIno(t, "/proc/self/ns/net") {
		t.Error("holder of a pod without netns_path left the host network namespace")
	}
	if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got, err := h.m.WaitSandbox(ctx, "pod1")
	if err != nil || got.State != PodStopped || got.ExitStatus != 137 {
		t.Errorf("WaitSandbox after the holder was killed: got %+v %v, want stopped, 137", got, err)
	}
}

func TestPodCleanupAfterDeadShim(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	st := h.startPod(ctx)
	// What `delete` does once the shim is gone.
	for i := range 2 {
		res, err := Cleanup(ctx, "testns", "pod1", h.bundle)
		if err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
		if i == 0 && res.Pid != st.Pid {
			t.Errorf("Cleanup: got pid %d, want the holder's %d", res.Pid, st.Pid)
		}
	}
	if got, err := h.m.WaitSandbox(ctx, "pod1"); err != nil || got.State != PodStopped {
		t.Errorf("holder after Cleanup: got %+v %v, want it ended", got, err)
	}
	files := podFiles{dir: filepath.Join(h.bundle, podDirName)}
	if _, err := os.Stat(files.dir); !os.IsNotExist(err) {
		t.Errorf("pod files left after Cleanup: %v", err)
	}
}

func TestPodMountsInjected(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeConfig(t, dir, map[string]string{annotationSandboxID: "pod1"})
	// A user's /etc/hosts and the default /dev/shm tmpfs.
	data, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	raw["mounts"] = []map[string]any{
		{"destination": "/etc/hosts", "type": "bind", "source": "/mine"},
		{"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
	}
	data, _ = json.Marshal(raw)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sp, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.m.addPodMounts(dir, sp); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(filepath.Join(dir, "config.json"))
	var got struct {
		Mounts []struct{ Destination, Type, Source string }
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	files := podFiles{dir: filepath.Join(h.bundle, podDirName)}
	want := map[string]string{
		"/etc/hosts":       "/mine",
		"/dev/shm":         files.shm(),
		"/etc/hostname":    files.hostname(),
		"/etc/resolv.conf": files.resolv(),
	}
	if len(got.Mounts) != len(want) {
		t.Errorf("mounts: got %+v, want %v", got.Mounts, want)
	}
	for _, m := range got.Mounts {
		if want[m.Destination] != m.Source {
			t.Errorf("mount %s: got source %q, want %q", m.Destination, m.Source, want[m.Destination])
		}
	}
	if _, ok := raw["root"]; !ok {
		t.Fatal("test config has no root")
	}
	if !strings.Contains(string(data), `"root"`) {
		t.Error("rewriting the mounts lost the rest of config.json")
	}

	// Another pod's container is left alone.
	other := t.TempDir()
	writeConfig(t, other, map[string]string{annotationSandboxID: "pod9"})
	before, _ := os.ReadFile(filepath.Join(other, "config.json"))
	sp, _ = readSpec(other)
	if err := h.m.addPodMounts(other, sp); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(other, "config.json")); string(after) != string(before) {
		t.Error("another pod's container got this pod's mounts")
	}
}

// TestPodHolderReapsOrphans: the holder is PID 1 of the pod's PID
// namespace, where orphans are reparented (the shim, a subreaper, is
// outside it); it reaps them as pause does, so none stays a zombie.
func TestPodHolderReapsOrphans(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	st := h.startPod(ctx)
	// A shell in the pod's PID namespace starts an orphan-to-be and
	// exits; the orphan lives a second.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's pid_for_children changes
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", st.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWPID); err != nil {
			errc <- err
			return
		}
		// Through the reaper: exec.Cmd's own wait lost the shell's exit
		// to it (ECHILD, 1 run in 24).
		cmd := exec.Command("sh", "-c", "sleep 1 >/dev/null 2>&1 &")
		ch, err := h.r.Start(cmd)
		if err != nil {
			errc <- err
			return
		}
		if status, err := h.r.Wait(cmd, ch); err != nil || status != 0 {
			errc <- fmt.Errorf("sh: status %d, %v", status, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	children := func() string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", st.Pid, st.Pid))
		return strings.TrimSpace(string(b))
	}
	var orphan string
	testutil.WaitFor(t, 5*time.Second, "the orphan reparented to the holder", func() bool {
		orphan = children()
		return orphan != ""
	})
	testutil.WaitFor(t, 10*time.Second, "the orphan reaped by the holder", func() bool {
		_, err := os.Stat("/proc/" + orphan)
		return children() == "" && os.IsNotExist(err)
	})
}

// TestPodStateTable walks StartSandbox and StopSandbox over the pod's
// states (a ready pod's are in TestPodLifecycle).
func TestPodStateTable(t *testing.T) {
	type outcome int
	const (
		ok outcome = iota
		failedPrecondition
	)
	tests := []struct {
		state       PodState
		start, stop outcome
	}{
		{PodCreated, ok, ok},
		{PodStarting, failedPrecondition, failedPrecondition},
		{PodStopped, failedPrecondition, ok},
		{PodShutdown, failedPrecondition, ok},
	}
	check := func(t *testing.T, op string, err error, want outcome) {
		t.Helper()
		switch {
		case want == ok && err != nil:
			t.Errorf("%s: got %v, want success", op, err)
		case want == failedPrecondition && !errdefs.IsFailedPrecondition(err):
			t.Errorf("%s: got %v, want FailedPrecondition", op, err)
		}
	}
	for _, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			ctx := context.Background()
			for _, op := range []string{"start", "stop"} {
				h := newPodHarness(t)
				if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle}); err != nil {
					t.Fatal(err)
				}
				p, _ := h.m.lookupPod("pod1", "test")
				p.mu.Lock()
				p.state = tt.state
				p.mu.Unlock()
				if op == "start" {
					_, err := h.m.StartSandbox(ctx, "pod1")
					check(t, op, err, tt.start)
				} else {
					check(t, op, h.m.StopSandbox(ctx, "pod1", time.Second), tt.stop)
				}
				p.mu.Lock()
				if p.state == PodStarting || p.state == PodShutdown {
					// Forced states: the harness's shutdown then releases
					// what CreateSandbox made.
					p.state = PodCreated
				}
				p.mu.Unlock()
			}
		})
	}
}

// TestShutdownAfterFailedCreate: containerd answers a failed
// CreateSandbox with ShutdownSandbox; with no pod made, the shim must
// still be free to go.
func TestShutdownAfterFailedCreate(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	if err := h.m.Claim(ctx, "pod1"); err != nil {
		t.Fatal(err)
	}
	err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle, Config: []byte{0x12, 0x05, 'a'}})
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("CreateSandbox with a broken config: got %v, want InvalidArgument", err)
	}
	// The claim stays until CreateSandbox gets past validation, as a
	// task Create's does; drop it as ClaimTTL would.
	h.m.life.mu.Lock()
	delete(h.m.life.claims, "pod1")
	h.m.life.mu.Unlock()
	if err := h.m.ShutdownSandbox(ctx, "pod1"); !errdefs.IsNotFound(err) {
		t.Errorf("ShutdownSandbox without a pod: got %v, want NotFound", err)
	}
	h.m.life.mu.Lock()
	may := h.m.mayExitLocked()
	h.m.life.mu.Unlock()
	if !may {
		t.Error("shim may not exit after ShutdownSandbox of a pod never made")
	}
}
