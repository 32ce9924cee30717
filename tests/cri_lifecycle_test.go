package tests

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIRuntimeHandler: the CRI plugin reports the runtime ready, serves
// the pod with the shipped handler, and the pod's sandbox container uses
// the local pause image and the handler's runtime type (the runtime under
// test, or io.containerd.runc.v2 for a drop-in), served by its shim.
func TestCRIRuntimeHandler(t *testing.T) {
	e := newCRIEnv(t)
	resp, err := e.d.rt.Version(e.ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	t.Logf("CRI runtime %s %s, API %s", resp.RuntimeName, resp.RuntimeVersion, resp.RuntimeApiVersion)

	p := e.runPod("handler")
	st, err := e.d.rt.PodSandboxStatus(e.ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.id})
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	if got := st.GetStatus().GetState(); got != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod state = %v, want SANDBOX_READY", got)
	}
	if got := st.GetStatus().GetRuntimeHandler(); got != e.d.handler {
		t.Errorf("pod runtime handler = %q, want %q", got, e.d.handler)
	}
	c, err := e.d.client.LoadContainer(e.ctx, p.id)
	if err != nil {
		t.Fatalf("load the sandbox container %s: %v", p.id, err)
	}
	info, err := c.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Image != pauseImageRef {
		t.Errorf("sandbox container image = %q, want the local pause image %q", info.Image, pauseImageRef)
	}
	if info.Runtime.Name != e.d.runtimeType {
		t.Errorf("sandbox container runtime = %q, want %q", info.Runtime.Name, e.d.runtimeType)
	}
	pause := e.taskPid(p.id)
	// Start returns once runc init has been released (its exec fifo
	// read), which is before its execve of /pause has finished: for both
	// shims the cmdline may read empty for a moment.
	var got []string
	if !pollUntil(10*time.Second, func() bool {
		got = cmdlineOf(pause)
		return len(got) == 1 && got[0] == "/pause"
	}) {
		t.Errorf("sandbox process %d cmdline = %q, want [/pause]", pause, got)
	}
	e.shimOf(p.id)
	p.remove()
}

// TestCRIImagesLocal: both images are known to CRI without a pull, and a
// pull cannot reach any registry (every host points at a closed loopback
// port), so the suite provably never pulls.
func TestCRIImagesLocal(t *testing.T) {
	e := newCRIEnv(t)
	for _, ref := range []string{imageRef, pauseImageRef} {
		resp, err := e.d.images.ImageStatus(e.ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil || resp.GetImage() == nil {
			t.Errorf("ImageStatus %s = %v, %v; want the imported image", ref, resp.GetImage(), err)
			continue
		}
		if !slices.Contains(resp.GetImage().GetRepoTags(), ref) {
			t.Errorf("image %s: repo tags %v", ref, resp.GetImage().GetRepoTags())
		}
	}
	const missing = "docker.io/library/busybox:shimtest-not-here"
	_, err := e.d.images.PullImage(e.ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: missing}})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("PullImage %s = %v, want an error naming the closed loopback registry 127.0.0.1:9", missing, err)
	}
}

// TestCRIContainerLifecycle: create, start, status while running and
// after exit (exit code, reason, timestamps in order), remove; an exit 0
// is "Completed", anything else "Error".
func TestCRIContainerLifecycle(t *testing.T) { testCRIContainerLifecycle(t, newCRIEnv(t)) }

// testCRIContainerLifecycle is TestCRIContainerLifecycle on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIContainerLifecycle(t *testing.T, e *criEnv) {
	p := e.runPod("lifecycle")
	for _, tc := range []struct {
		name   string
		code   int32
		reason string
	}{
		{"exit0", 0, "Completed"},
		{"exit3", 3, "Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			p.e = e
			began := time.Now()
			// It runs until an exec creates /tmp/go: no race between the
			// running-state check and its exit.
			id := p.create(tc.name, []string{"sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit " + strconv.Itoa(int(tc.code))})
			if st := e.status(id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED {
				t.Errorf("state after CreateContainer = %v, want CONTAINER_CREATED", st.State)
			}
			e.start(id)
			st := e.waitState(id, runtimeapi.ContainerState_CONTAINER_RUNNING, 30*time.Second)
			if st.StartedAt == 0 || st.FinishedAt != 0 {
				t.Errorf("running: startedAt %d finishedAt %d, want set and unset", st.StartedAt, st.FinishedAt)
			}
			e.execSync(id, 10, "touch", "/tmp/go")
			st = e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
			ended := time.Now()
			if st.ExitCode != tc.code || st.Reason != tc.reason {
				t.Errorf("exited: code %d reason %q, want %d %q", st.ExitCode, st.Reason, tc.code, tc.reason)
			}
			ts := []int64{began.UnixNano(), st.CreatedAt, st.StartedAt, st.FinishedAt, ended.UnixNano()}
			for i := 1; i < len(ts); i++ {
				if ts[i] < ts[i-1] {
					t.Errorf("timestamps out of order: began %d created %d started %d finished %d ended %d", ts[0], ts[1], ts[2], ts[3], ts[4])
					break
				}
			}
			e.removeContainer(id)
			if _, err := e.d.rt.ContainerStatus(e.ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id}); err == nil {
				t.Errorf("ContainerStatus after RemoveContainer succeeded, want NotFound")
			}
		})
	}
	p.e = e
	p.remove()
}

// TestCRIStopGracePeriod: StopContainer sends SIGTERM and, if the
// container is still running when the grace period ends, SIGKILL.
func TestCRIStopGracePeriod(t *testing.T) { testCRIStopGracePeriod(t, newCRIEnv(t)) }

// testCRIStopGracePeriod is TestCRIStopGracePeriod on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIStopGracePeriod(t *testing.T, e *criEnv) {
	p := e.runPod("stop")
	const grace = 2
	// The shell is pid 1 of its PID namespace: only a signal it has a
	// handler for reaches it. `wait` returns for the trap at once.
	loop := "echo ready; while :; do sleep 1 & wait $!; done"
	exits := p.run("exits", []string{"sh", "-c", "trap 'echo got TERM; exit 42' TERM; " + loop})
	ignores := p.run("ignores", []string{"sh", "-c", "trap 'echo got TERM, staying' TERM; " + loop})
	for _, name := range []string{"exits", "ignores"} {
		waitLogLine(t, p.logPath(name), "ready", 30*time.Second)
	}

	if took := e.stopContainer(exits, grace); took >= grace*time.Second {
		t.Errorf("StopContainer of a container that exits on SIGTERM took %v, want less than its %ds grace period", took, grace)
	}
	st := e.status(exits)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 42 || st.Reason != "Error" {
		t.Errorf("after SIGTERM: state %v code %d reason %q, want EXITED 42 Error", st.State, st.ExitCode, st.Reason)
	}
	waitLogLine(t, p.logPath("exits"), "got TERM", 10*time.Second)

	if took := e.stopContainer(ignores, grace); took < grace*time.Second {
		t.Errorf("StopContainer of a container that survives SIGTERM returned after %v, before its %ds grace period", took, grace)
	}
	st = e.status(ignores)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Errorf("after the grace period: state %v code %d reason %q, want EXITED 137 (SIGKILL)", st.State, st.ExitCode, st.Reason)
	}
	waitLogLine(t, p.logPath("ignores"), "got TERM, staying", 10*time.Second)

	// A stopped container stops again at once and is removed.
	e.stopContainer(exits, grace)
	e.removeContainer(exits)
	e.removeContainer(ignores)
	p.remove()
}

// TestCRIShippedRuntimeOptions: a pod runs with the shipped handler,
// whose runtime table has an options table (BinaryName, SystemdCgroup).
// CRI turns that table into runc's options only for runtime_type
// io.containerd.runc.v2; for any other runtime_type it sends
// runtimeoptions.v1.Options with the table as TOML in ConfigBody
// (containerd 1.7+; 1.6 sends it empty), which the shim must accept.
func TestCRIShippedRuntimeOptions(t *testing.T) { testCRIShippedRuntimeOptions(t, newCRIEnv(t)) }

// testCRIShippedRuntimeOptions is TestCRIShippedRuntimeOptions on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIShippedRuntimeOptions(t *testing.T, e *criEnv) {
	p := e.runPod("options")
	id := p.run("app", []string{"sh", "-c", "echo hi"})
	e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	waitLogLine(t, p.logPath("app"), "hi", 10*time.Second)
	p.remove()
}
