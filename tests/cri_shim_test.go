package tests

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// shimChildren returns the live children of shim, sorted.
func shimChildren(shim int) []int {
	var pids []int
	for _, p := range listProcs() {
		if p.ppid == shim && p.state != 'Z' {
			pids = append(pids, p.pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// TestCRIOneShimPerPod: a pod of a pause container and three app
// containers runs under exactly one shim process, whose only children are
// those four init processes; a second pod runs under a second shim, and
// the daemon has no other. Shutdown semantics: containerd sends Shutdown
// after each task delete, so the pod's shim must stay while any task of
// the pod is left (here: as each app container is removed, then with the
// pause container alone) and exit once the pod's last task is gone.
// After RemovePodSandbox nothing of the pod remains (see leftovers), and
// the other pod is undisturbed.
func TestCRIOneShimPerPod(t *testing.T) {
	e := newCRIEnv(t)
	a := e.runPod("pod-a")
	var apps []string
	for i := range 3 {
		apps = append(apps, a.run(fmt.Sprintf("app%d", i), []string{"sleep", "1000"}))
	}
	b := e.runPod("pod-b")
	bApp := b.run("app", []string{"sleep", "1000"})

	shimA, shimB := e.shimOf(a.id), e.shimOf(b.id)
	for _, id := range apps {
		if got := e.shimOf(id); got != shimA {
			t.Errorf("pod-a container %s: shim %d, want the pod's shim %d", id, got, shimA)
		}
	}
	if got := e.shimOf(bApp); got != shimB {
		t.Errorf("pod-b container: shim %d, want the pod's shim %d", got, shimB)
	}
	if shimA == shimB {
		t.Fatalf("pod-a and pod-b share shim %d", shimA)
	}
	want := []int{shimA, shimB}
	slices.Sort(want)
	if got := e.d.shimPids(""); !slices.Equal(got, want) {
		t.Errorf("shim processes of the daemon = %v, want exactly the two pods' %v", describe(got), want)
	}
	inits := []int{e.taskPid(a.id)}
	for _, id := range apps {
		inits = append(inits, e.taskPid(id))
	}
	slices.Sort(inits)
	if got := shimChildren(shimA); !slices.Equal(got, inits) {
		t.Errorf("children of pod-a's shim %d = %v, want the 4 init processes (pause + 3) %v", shimA, describe(got), inits)
	}
	t.Logf("pod-a: 1 shim (pid %d) with %d children (pause + 3 apps); pod-b: 1 shim (pid %d) with %d children", shimA, len(shimChildren(shimA)), shimB, len(shimChildren(shimB)))

	for i, id := range apps {
		e.stopContainer(id, 0)
		e.removeContainer(id)
		if !alive(shimA) {
			t.Fatalf("pod-a's shim %d exited after %d of its 3 app containers were removed (pause still running)", shimA, i+1)
		}
		if got := shimChildren(shimA); len(got) != 3-i {
			t.Errorf("children of pod-a's shim after removing %d app containers: %v, want %d", i+1, describe(got), 3-i)
		}
	}
	a.containers = nil
	// The pause container alone still holds the shim.
	if st, err := e.d.rt.PodSandboxStatus(e.ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: a.id}); err != nil || st.GetStatus().GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod-a with only its pause container: %v, %v; want SANDBOX_READY", st.GetStatus().GetState(), err)
	}
	// StopPodSandbox stops and deletes the pause task, the pod's last:
	// the shim exits then, before RemovePodSandbox.
	if _, err := e.d.rt.StopPodSandbox(e.ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: a.id}); err != nil {
		t.Fatalf("StopPodSandbox pod-a: %v", err)
	}
	assertShimExits(t, shimA, "pod-a's shim, after StopPodSandbox deleted the pod's last task")
	a.removeWithApps(apps)

	if !alive(shimB) {
		t.Fatalf("pod-b's shim %d exited when pod-a was removed", shimB)
	}
	if got := e.execSync(bApp, 10, "echo", "b alive"); string(got) != "b alive\n" {
		t.Errorf("pod-b exec after pod-a's removal: %q", got)
	}
	if got := e.d.shimPids(""); !slices.Equal(got, []int{shimB}) {
		t.Errorf("shims after pod-a's removal = %v, want only pod-b's %d", describe(got), shimB)
	}
	// The leftover check must see a live pod: every kind of trace it
	// looks for is there while pod-b runs.
	ids := []string{b.id, bApp}
	pids := []int{e.taskPid(b.id), e.taskPid(bApp), shimB}
	traces := b.leftovers(ids, pids)
	t.Logf("pod-b running: the leftover check sees %d traces of it (processes, mounts, directories, fifos, socket, objects)", len(traces))
	live := strings.Join(traces, "\n")
	for _, kind := range []string{"process ", "mount ", "directory ", "fifo ", "shim socket ", "containerd container ", "snapshot ", "CRI container ", "CRI pod sandbox "} {
		if !strings.Contains(live, kind) {
			t.Errorf("leftover check on the running pod-b finds no %q; it found:\n%s", kind, live)
		}
	}
	b.remove()
	assertShimExits(t, shimB, "pod-b's shim, after RemovePodSandbox")
}

// removeWithApps is remove, with the leftover check also covering app
// containers that were already removed (their ids were dropped from
// p.containers so remove does not look them up in CRI).
func (p *criPod) removeWithApps(removed []string) {
	p.e.t.Helper()
	p.remove()
	var left []string
	for _, id := range removed {
		left = append(left, p.leftovers([]string{id}, nil)...)
	}
	if len(left) > 0 {
		p.e.t.Errorf("pod %s: left behind of its removed containers: %v", p.name, left)
	}
}

// TestCRISharedPIDNamespace: in a pod that shares one PID namespace
// (shareProcessNamespace), the pause process (in the shim sandboxer's
// mode, the pod holder) is pid 1 of every container, each container sees
// the others' processes, and when a container's main process exits, the
// processes it left behind are killed with it (the kernel does not do
// it: the namespace's init, pause, lives on).
func TestCRISharedPIDNamespace(t *testing.T) { testCRISharedPIDNamespace(t, newCRIEnv(t)) }

// testCRISharedPIDNamespace is TestCRISharedPIDNamespace on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRISharedPIDNamespace(t *testing.T, e *criEnv) {
	p := e.runPod("sharedpid", withSharedPID)
	keeper := p.run("keeper", []string{"sleep", "1001"})
	holder := p.podPid()
	want := "/pause\x00"
	if p.sandboxer {
		want = strings.Join(cmdlineOf(holder), "\x00") + "\x00"
	}
	if got := e.execSync(keeper, 10, "cat", "/proc/1/cmdline"); string(got) != want {
		t.Errorf("pid 1 seen by a container of the shared-PID pod: %q, want the pod's process %d's %q", got, holder, want)
	}
	if got, want := nsOf(t, e.taskPid(keeper), "pid"), nsOf(t, holder, "pid"); got != want {
		t.Errorf("keeper's PID namespace %s, want the pod process %d's %s", got, holder, want)
	}
	if got := nsPidOf(holder); got != "1" {
		t.Errorf("the pod process %d is pid %q in its own PID namespace, want 1", holder, got)
	}
	// A main process that starts a background sleep and exits.
	leaver := p.run("leaver", []string{"sh", "-c", "sleep 1002 & echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done"})
	waitLogLine(t, p.logPath("leaver"), "started", 30*time.Second)
	if got := e.execSync(keeper, 10, "sh", "-c", "ps -o args | grep -c '^sleep 1002'"); string(got) != "1\n" {
		t.Errorf("keeper sees %q processes 'sleep 1002' of the other container, want 1", got)
	}
	e.execSync(leaver, 10, "touch", "/tmp/go")
	st := e.waitState(leaver, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	if st.ExitCode != 0 {
		t.Errorf("leaver exit code %d, want 0", st.ExitCode)
	}
	if !pollUntil(10*time.Second, func() bool { return len(procsWithArgs("sleep", "1002")) == 0 }) {
		t.Errorf("the exited container's background process is still running: %v", describe(procsWithArgs("sleep", "1002")))
	}
	if len(procsWithArgs("sleep", "1001")) != 1 {
		t.Errorf("the other container's process is gone: want 'sleep 1001' still running")
	}
	p.remove()
}
