package tests

import (
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestLifecycle is the basic lifecycle against every containerd
// generation the shim serves (1.6 speaks only the legacy start protocol,
// 2.2 the legacy one with JSON, 2.4.2 the bootstrap protobuf): ctr run,
// echo and exit codes through the Go client, and one pod of three
// containers under one shim.
func TestLifecycle(t *testing.T) {
	requireRoot(t)
	for _, v := range daemonVersions() {
		t.Run(v.name, func(t *testing.T) {
			e := newEnv(t, v)
			t.Run("ctr-run-echo", func(t *testing.T) { testCtrRunEcho(t, e.sub(t)) })
			t.Run("client-echo", func(t *testing.T) { testEcho(t, e.sub(t), "echo1") })
			t.Run("exit-code", func(t *testing.T) {
				for _, code := range []uint32{0, 3} {
					testExitCode(t, e.sub(t), fmt.Sprintf("exit%d", code), code)
				}
			})
			t.Run("pod-of-three", func(t *testing.T) { testPodOfThree(t, e.sub(t), "pod1") })
			t.Run("task-api-version", func(t *testing.T) { testTaskAPIVersion(t, e.sub(t)) })
		})
	}
}

// testCtrRunEcho: `ctr run --rm --runtime R --rootfs DIR t1 /bin/echo hi`
// prints exactly "hi\n" and exits 0.
func testCtrRunEcho(t *testing.T, e *env) {
	args := append([]string{"run", "--rm"}, ctrRuntimeArgs(t)...)
	stdout, stderr, code, err := e.d.ctr(e.ctx, e.ns, append(args, "--rootfs", e.d.rootfs, "t1", "/bin/echo", "hi")...)
	if err != nil {
		t.Fatalf("ctr run: %v (stderr %q)", err, stderr)
	}
	if code != 0 {
		t.Fatalf("ctr run exit code = %d, want 0 (stdout %q, stderr %q)", code, stdout, stderr)
	}
	if got, want := string(stdout), "hi\n"; got != want {
		t.Fatalf("ctr run stdout = %q, want %q (stderr %q)", got, want, stderr)
	}
}

// testEcho: echo through the Go client with fifo IO; exact bytes on
// stdout, nothing on stderr, exit 0.
func testEcho(t *testing.T, e *env, id string) {
	r := e.run(ctrSpec{id: id, args: []string{"/bin/echo", "hello", "world"}})
	if code := r.wait(time.Minute); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	r.delete()
	if got, want := string(r.stdout.Bytes()), "hello world\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got := r.stderr.Bytes(); len(got) != 0 {
		t.Errorf("stderr = %q, want empty", got)
	}
}

func testExitCode(t *testing.T, e *env, id string, code uint32) {
	t.Helper()
	r := e.run(ctrSpec{id: id, args: []string{"sh", "-c", fmt.Sprintf("exit %d", code)}})
	if got := r.wait(time.Minute); got != code {
		t.Errorf("%s: exit code = %d, want %d", id, got, code)
	}
	r.delete()
}

// testPodOfThree: three containers annotated with one pod id run under
// exactly one shim process, each prints its own output, and SIGKILL gives
// exit code 137 (128+9).
func testPodOfThree(t *testing.T, e *env, pod string) {
	var rs []*running
	for i := range 3 {
		id := fmt.Sprintf("%s-c%d", pod, i)
		r := e.run(ctrSpec{id: id, pod: pod, args: []string{"sh", "-c", "echo ready-" + id + "; exec sleep 1000"}})
		rs = append(rs, r)
		r.waitOutput(t, "ready-"+id+"\n", time.Minute)
	}
	for _, r := range rs {
		// The image was unpacked with overlayfs, so containerd sends the
		// shim an overlay mount, which it must mount at <bundle>/rootfs.
		rootfs := filepath.Join(e.bundleDir(r.id), "rootfs")
		if got := mountsIn(rootfs); len(got) != 1 || got[0].point != rootfs || got[0].fstype != "overlay" {
			t.Errorf("%s: mounts at %s = %+v, want one overlay", r.id, rootfs, got)
		}
	}
	shim := rs[0].shimPid()
	for _, r := range rs[1:] {
		if got := r.shimPid(); got != shim {
			t.Errorf("container %s is served by shim %d, want %d (the pod's shim)", r.id, got, shim)
		}
	}
	// The shim of the previous subtest exits on its own time after its
	// last delete (ttrpc's Shutdown polls idle connections every 200 ms);
	// wait for that with a deadline.
	var got []int
	if !pollUntil(20*time.Second, func() bool { got = e.d.shimPids(e.ns); return slices.Equal(got, []int{shim}) }) {
		t.Errorf("shim processes of namespace %s = %v, want [%d]", e.ns, describe(got), shim)
	}
	for _, r := range rs {
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Errorf("%s: exit code after SIGKILL = %d, want 137", r.id, code)
		}
		r.delete()
		if got, want := string(r.stdout.Bytes()), "ready-"+r.id+"\n"; got != want {
			t.Errorf("%s: stdout = %q, want %q", r.id, got, want)
		}
		if got := mountsUnder(e.bundleDir(r.id)); len(got) != 0 {
			t.Errorf("%s: mounts left in its bundle after delete: %v", r.id, got)
		}
	}
}

// testTaskAPIVersion: which task API version the daemon settled on with
// the shim, as containerd recorded it in the bundle. This shim answers a
// 2.3+ caller's BootstrapParams with a v3 BootstrapResult and an older
// caller with the plain address (task API v2, which every daemon speaks);
// the upstream runc shim of each version answers with v3 JSON on 2.x.
func testTaskAPIVersion(t *testing.T, e *env) {
	want := map[string]map[string]int{
		sandboxRuntime: {"2.4.2": 3, "2.2": 2, "1.6": 2},
		runcRuntime:    {"2.4.2": 3, "2.2": 3, "1.6": 2},
	}[runtimeUnderTest()][e.d.version.name]
	if want == 0 {
		t.Skipf("no expectation for runtime %s on containerd %s", runtimeUnderTest(), e.d.version.name)
	}
	r := e.run(ctrSpec{id: "apiversion", args: []string{"true"}})
	_, got, err := shimAddress(e.bundleDir(r.id))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("task API version in the bundle = %d, want %d", got, want)
	}
	if code := r.wait(time.Minute); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	r.delete()
}
