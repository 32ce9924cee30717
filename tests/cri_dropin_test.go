package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/cri"
)

// runtimePathIgnored is why a runtime_path drop-in is not tested on
// containerd 1.6; TestCRIDropInRuntimePathIgnored shows it.
const runtimePathIgnored = "containerd 1.6 reads runtime_path but creates every CRI task without it " +
	"(containerd#8207, fixed for 1.7 by #8453; its 1.6 backport #8454 is not in 1.6.20): " +
	"every pod runs under containerd-shim-runc-v2 found on PATH; use SHIM_TEST_DROPIN=PATH"

// requireDropIn skips t unless SHIM_TEST_DROPIN installs this shim in
// the runc shim's place, and returns how.
func requireDropIn(t *testing.T) dropIn {
	t.Helper()
	m, err := dropInMode()
	if err != nil {
		t.Fatal(err)
	}
	if m == noDropIn {
		t.Skip("SHIM_TEST_DROPIN is unset: this shim serves its own runtime type in this run")
	}
	return m
}

// digestOf returns the SHA-256 of the file at path: /proc/<pid>/exe reads
// the executable the process runs even when its path was replaced since.
func digestOf(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// requireRuns fails t unless process pid runs the executable at want
// (its bytes, whatever its path says).
func requireRuns(t *testing.T, pid int, want, what string) {
	t.Helper()
	got, err := digestOf(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatalf("%s (pid %d): %v", what, pid, err)
	}
	w, err := digestOf(want)
	if err != nil {
		t.Fatal(err)
	}
	if got != w {
		t.Fatalf("%s (pid %d, %s) runs an executable with sha256 %s, want %s's %s", what, pid, exeOf(pid), got, want, w)
	}
}

// TestCRIDropIn: with this shim installed in the runc shim's place (by
// runtime_path or on PATH, SHIM_TEST_DROPIN), a pod run with the default
// handler is recorded by containerd under io.containerd.runc.v2, yet its
// one shim runs this shim's executable (its bytes, and `-v` names this
// shim's runtime). With runtime_path, containerd records that path as
// the shim's binary. On containerd 2.x, the CRI plugin probed the
// handler's features through this shim's -info, which answers the
// features the runc shim's -info answers.
func TestCRIDropIn(t *testing.T) {
	mode := requireDropIn(t)
	e := newCRIEnv(t)
	p := e.runPod("dropin")
	app := p.run("app", []string{"sleep", "1000"})

	for _, id := range []string{p.id, app} {
		c, err := e.d.client.LoadContainer(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Runtime.Name != runcRuntime {
			t.Errorf("container %s: runtime %q, want %q (the drop-in keeps the runc shim's type)", id, info.Runtime.Name, runcRuntime)
		}
	}
	shim := e.shimOf(p.id)
	if got := e.shimOf(app); got != shim {
		t.Errorf("app container: shim %d, want the pod's shim %d", got, shim)
	}
	requireRuns(t, shim, shimUnderTest(t), "the pod's shim")
	out, err := exec.Command(fmt.Sprintf("/proc/%d/exe", shim), "-v").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Runtime: "+sandboxRuntime) {
		t.Errorf("the pod's shim's executable -v: %q (%v), want its runtime %s", out, err, sandboxRuntime)
	}
	t.Logf("drop-in by %s on containerd %s: pod %s served by shim %d, %s, whose -v says:\n%s", mode, e.d.version.name, p.id, shim, exeOf(shim), out)

	switch mode {
	case dropInRuntimePath:
		// containerd records the binary it ran `start` with in the
		// bundle, for the `delete` of a dead shim. It ran it for the
		// pause container; containerd 2.x hands later containers of the
		// pod to a pod shim that speaks task API v3 (this shim to 2.3+)
		// without running `start`, and a dead shim's `delete` for those
		// is then the binary of the runtime type's name, the runc shim
		// (containerd#10811), which the runc shim's bundle files this
		// shim writes serve (sandbox/bundle.go).
		data, err := os.ReadFile(filepath.Join(e.bundleDir(p.id), "shim-binary-path"))
		if err != nil || string(data) != e.d.shimExe {
			t.Errorf("the pause container's shim-binary-path: (%q, %v), want %s", data, err, e.d.shimExe)
		}
	case dropInPATH:
		entries, err := os.ReadDir(e.d.bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if en.Name() != shimBinaryName(runcRuntime) {
				t.Errorf("bin %s holds %s: with a PATH drop-in it holds this shim as %s only", e.d.bin, en.Name(), shimBinaryName(runcRuntime))
			}
		}
	}

	if !e.d.version.legacy() {
		checkHandlerFeatures(t, e)
	}
	p.remove()
}

// checkHandlerFeatures: CRI lists the default handler with the features
// it probed through the handler's shim binary's -info, and that -info
// answers, for the table's options, the features containerd's runc shim
// answers.
func checkHandlerFeatures(t *testing.T, e *criEnv) {
	t.Helper()
	st, err := e.d.rt.Status(e.ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var probed *runtimeapi.RuntimeHandler
	for _, h := range st.GetRuntimeHandlers() {
		if h.GetName() == "runc" {
			probed = h
		}
	}
	if probed == nil || probed.GetFeatures() == nil {
		t.Errorf("CRI Status runtime handlers %v: want runc with features (probed through -info)", st.GetRuntimeHandlers())
	} else {
		t.Logf("CRI handler runc: recursive read-only mounts %v, user namespaces %v", probed.GetFeatures().GetRecursiveReadOnlyMounts(), probed.GetFeatures().GetUserNamespaces())
	}

	opts, err := typeurl.MarshalAnyToProto(&options.Options{BinaryName: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := proto.Marshal(opts)
	if err != nil {
		t.Fatal(err)
	}
	info := func(binary string) *features.Features {
		t.Helper()
		cmd := exec.Command(binary, "-info")
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Env = daemonEnv(e.d.bin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s -info: %v", binary, err)
		}
		var ri apitypes.RuntimeInfo
		if err := proto.Unmarshal(out, &ri); err != nil {
			t.Fatalf("%s -info: %v", binary, err)
		}
		if ri.GetFeatures() == nil {
			t.Fatalf("%s -info: no features", binary)
		}
		v, err := typeurl.UnmarshalAny(ri.GetFeatures())
		if err != nil {
			t.Fatalf("%s -info features: %v", binary, err)
		}
		f, ok := v.(*features.Features)
		if !ok {
			t.Fatalf("%s -info features: %T", binary, v)
		}
		return f
	}
	ours, err := json.Marshal(info(e.d.shimExe))
	if err != nil {
		t.Fatal(err)
	}
	runcs, err := json.Marshal(info(e.d.version.runcShim()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, runcs) {
		t.Errorf("-info features differ:\n this shim: %s\n runc shim: %s", ours, runcs)
	}
}

// replaceExecutable puts a copy of src at dst the way a package manager
// does, by a rename over it: a process running the old dst keeps its
// executable.
func replaceExecutable(src, dst string) error {
	tmp := dst + ".new"
	if err := copyExecutable(src, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// reapOrphans waits for pids, processes a killed shim left to the test
// binary (the child subreaper) that something else killed since, and
// reaps them; it returns those still alive after timeout. A pid that is
// not (yet) this process's child counts as gone only once it is gone
// from /proc: a SIGKILLed Go shim shows its leader as a zombie while its
// other threads still exit, and its children become the subreaper's only
// when the last one has (ECHILD before that is not "gone").
func reapOrphans(pids []int, timeout time.Duration) []int {
	var left []int
	pollUntil(timeout, func() bool {
		left = left[:0]
		for _, pid := range pids {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if got == pid {
				continue
			}
			if err == unix.ECHILD {
				if _, err := readProc(pid); err != nil {
					continue
				}
			}
			left = append(left, pid)
		}
		return len(left) == 0
	})
	return left
}

// TestCRIDropInSwitch: an operator switches a node running pods under
// the runc shim to this shim by installing it as containerd-shim-runc-v2
// in the runc shim's place (README "Drop-in for an existing node") and
// restarting containerd. On a CRI daemon of its own that starts with the
// runc shim:
//
//   - a pod whose runc shim survived the switch keeps it: containerd
//     reconnects, and a container added to the pod is handed to that same
//     shim by this shim's `start` (containerd 2.0-2.2 must be told to
//     speak task API v3 to it, which is all the runc shim of 2.x serves);
//   - a pod whose runc shim died during the switch is cleaned up by this
//     shim's `delete`, which containerd now runs for the runc shim's
//     bundles: the containers are killed (exit 137), runc forgets them,
//     their rootfs is unmounted, and the pod is then removed cleanly;
//   - a new pod runs under this shim.
func TestCRIDropInSwitch(t *testing.T) {
	requireDropIn(t)
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	shim := shimUnderTest(t)
	name := "cri-switch-" + v.name
	d := startOwnCRIDaemon(t, v, name, criInstall{runtimeType: runcRuntime})
	e := newCRIEnvOn(t, d)
	runcShim := filepath.Join(d.bin, shimBinaryName(runcRuntime))

	a := e.runPod("kept")
	a1 := a.run("a1", []string{"sleep", "1000"})
	b := e.runPod("lost")
	b1 := b.run("b1", []string{"sleep", "1000"})
	shimA, shimB := e.shimOf(a.id), e.shimOf(b.id)
	requireRuns(t, shimA, v.runcShim(), "pod kept's shim before the switch")
	orphans := []int{e.taskPid(b.id), e.taskPid(b1)}
	bundlesB := []string{e.bundleDir(b.id), e.bundleDir(b1)}

	// The switch, with pod lost's runc shim dying meanwhile.
	if err := d.signalStop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(shimB, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(10*time.Second, func() bool { return !alive(shimB) }) {
		t.Fatalf("pod lost's runc shim %d survived SIGKILL", shimB)
	}
	reapShims()
	if err := replaceExecutable(shim, runcShim); err != nil {
		t.Fatal(err)
	}
	logFrom := d.logSize()
	if err := d.launch(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cri.WaitRuntimeReady(ctx, d.rt); err != nil {
		t.Fatal(err)
	}

	t.Run("dead runc shim cleaned up by this shim's delete", func(t *testing.T) {
		if left := reapOrphans(orphans, 30*time.Second); len(left) > 0 {
			t.Errorf("pod lost's processes %v still alive 30s after containerd came back (its runc shim is dead)", describe(left))
		}
		// containerd cleans dead shims up while it loads them, before
		// the CRI plugin recovers, which finds the task gone and reports
		// 255 "Unknown" whatever the delete answered.
		st := e.sub(t).waitState(b1, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
		t.Logf("b1 after the switch: exited, code %d, reason %q", st.GetExitCode(), st.GetReason())
		log := d.logTail(logFrom, 1<<20)
		if n := strings.Count(log, "cleaning up dead shim"); n < 2 {
			t.Errorf("containerd's log since the restart says %d times that it is cleaning up a dead shim, want 2 (pod lost's two tasks)", n)
		}
		if strings.Contains(log, "failed to delete dead shim") || strings.Contains(log, "failed to clean up after shim disconnected") {
			t.Errorf("containerd could not delete the dead shim's tasks:\n%s", log)
		}
		for _, id := range []string{b.id, b1} {
			if _, err := os.Stat(filepath.Join("/run/containerd/runc", criNamespace, id)); !os.IsNotExist(err) {
				t.Errorf("runc's state of %s after the delete: %v, want none", id, err)
			}
		}
		for _, bundle := range bundlesB {
			if m := mountsIn(filepath.Join(bundle, "rootfs")); len(m) > 0 {
				t.Errorf("mounts left at %s/rootfs: %v", bundle, m)
			}
		}
		// The runc shim was SIGKILLed: its socket file stays, and nothing
		// answers on it (neither shim's delete removes a dead shim's
		// socket).
		if c, err := net.Dial("unix", b.shimSocket); err == nil {
			c.Close()
			t.Errorf("pod lost's shim socket %s answers", b.shimSocket)
		}
		_ = os.Remove(b.shimSocket)
	})

	t.Run("surviving runc shim serves a new container of its pod", func(t *testing.T) {
		e := e.sub(t)
		a2 := a.run("a2", []string{"sleep", "1000"})
		if got := parentOf(e.taskPid(a2)); got != shimA {
			t.Errorf("a2 runs under pid %d %q, want pod kept's runc shim %d", got, cmdlineOf(got), shimA)
		}
		// The runc shim of 2.x serves task API v3 only, 1.6's v2 only.
		want := 3
		if v.legacy() {
			want = 2
		}
		if _, got, err := shimAddress(e.bundleDir(a2)); err != nil || got != want {
			t.Errorf("task API containerd speaks to the runc shim for a2: v%d (%v), want v%d", got, err, want)
		}
		for _, id := range []string{a1, a2} {
			if got := e.execSync(id, 10, "echo", "hi"); string(got) != "hi\n" {
				t.Errorf("exec in %s: %q", id, got)
			}
		}
	})

	t.Run("new pod runs under this shim", func(t *testing.T) {
		e := e.sub(t)
		c := e.runPod("new")
		c.run("c1", []string{"sleep", "1000"})
		requireRuns(t, e.shimOf(c.id), shim, "pod new's shim")
		c.remove()
	})

	a.remove()
	assertShimExits(t, shimA, "pod kept's runc shim, after RemovePodSandbox")
	b.remove()
}

// TestCRIDropInRuntimePathIgnored: on containerd 1.6 a runtime_path
// drop-in does not take: with the shipped drop-in table naming this shim
// as the default handler's runtime_path, the pod's sandbox and its
// container both run under the runc shim the daemon finds on its PATH,
// and this shim is never run. So 1.6 nodes need the PATH method (README).
// On a CRI daemon of its own, in the drop-in lanes on 1.6.
func TestCRIDropInRuntimePathIgnored(t *testing.T) {
	requireDropIn(t)
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if !v.legacy() {
		t.Skipf("containerd %s honours runtime_path (TestCRIDropIn in a runtime_path lane)", v.name)
	}
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	shim := shimUnderTest(t)
	name := "cri-runtime-path-" + v.name
	inst := criInstall{shim: shim, runtimeType: runcRuntime, dropIn: dropInRuntimePath}
	d := startOwnCRIDaemon(t, v, name, inst)
	// What the suite's helpers check: the pods' shims run the runc shim.
	d.shimExe = filepath.Join(d.bin, shimBinaryName(runcRuntime))
	e := newCRIEnvOn(t, d)
	p := e.runPod("ignored")
	app := p.run("app", []string{"sleep", "1000"})
	for _, id := range []string{p.id, app} {
		requireRuns(t, e.shimOf(id), v.runcShim(), id+"'s shim")
		// Where containerd records the binary it ran `start` with.
		if data, err := os.ReadFile(filepath.Join(e.bundleDir(id), "shim-binary-path")); err == nil && string(data) != d.shimExe {
			t.Errorf("%s's shim-binary-path: %q, want %s or none", id, data, d.shimExe)
		}
	}
	if !strings.Contains(d.logTail(0, 1<<20), "Path:"+e.d.daemon.bin) {
		t.Errorf("containerd %s's log does not show the CRI plugin read runtime_path %s", v.name, filepath.Join(d.bin, shimBinaryName(sandboxRuntime)))
	}
	t.Log(runtimePathIgnored)
	p.remove()
}

// startOwnCRIDaemon starts a CRI daemon for this test only, registered as
// name in suite.daemons until the test ends, when it is torn down and
// everything it left fails the test.
func startOwnCRIDaemon(t *testing.T, v daemonVersion, name string, inst criInstall) *criDaemon {
	t.Helper()
	d, err := startCRIDaemon(v, name, inst, imageArchive(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		suite.mu.Lock()
		delete(suite.daemons, name)
		suite.mu.Unlock()
		for _, p := range d.teardown() {
			t.Errorf("LEAK: %s", p)
		}
	})
	return d
}
