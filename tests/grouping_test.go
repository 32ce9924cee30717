package tests

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// TestPodShimGrouping: containers sharing io.kubernetes.cri.sandbox-id run
// under exactly one shim, two pods under two, and a container without the
// annotation under its own. A pod's shim outlives the deletion of all but
// its last task (and keeps serving the one left), then exits once that one
// is deleted.
func TestPodShimGrouping(t *testing.T) {
	e := newDefaultEnv(t)
	start := func(id, pod string) *running {
		r := e.run(ctrSpec{id: id, pod: pod, args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
		r.waitOutput(t, "ready\n", time.Minute)
		return r
	}
	var podA, podB []*running
	for i := range 3 {
		podA = append(podA, start(fmt.Sprintf("a%d", i), "pod-a"))
	}
	for i := range 2 {
		podB = append(podB, start(fmt.Sprintf("b%d", i), "pod-b"))
	}
	solo := start("solo", "")

	shimA, shimB, shimSolo := podA[0].shimPid(), podB[0].shimPid(), solo.shimPid()
	for _, tc := range []struct {
		rs   []*running
		want int
	}{{podA, shimA}, {podB, shimB}} {
		for _, r := range tc.rs {
			if got := r.shimPid(); got != tc.want {
				t.Errorf("container %s: shim %d, want %d (its pod's shim)", r.id, got, tc.want)
			}
		}
	}
	if shimA == shimB || shimA == shimSolo || shimB == shimSolo {
		t.Errorf("shims: pod-a %d, pod-b %d, solo %d; want three distinct processes", shimA, shimB, shimSolo)
	}
	want := []int{shimA, shimB, shimSolo}
	slices.Sort(want)
	if got := e.d.shimPids(e.ns); !slices.Equal(got, want) {
		t.Errorf("shim processes of the namespace = %v, want %v", describe(got), want)
	}

	stop := func(r *running) {
		t.Helper()
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Errorf("%s: exit code after SIGKILL = %d, want 137", r.id, code)
		}
		r.delete()
	}

	stop(solo)
	assertShimExits(t, shimSolo, "solo's shim, after its only task was deleted")

	stop(podA[0])
	stop(podA[1])
	if !alive(shimA) {
		t.Fatalf("pod-a's shim %d exited after 2 of its 3 tasks were deleted", shimA)
	}
	if got := podA[2].status(); got != client.Running {
		t.Errorf("a2 status after deleting a0 and a1 = %q, want %q", got, client.Running)
	}
	if got := podA[2].shimPid(); got != shimA {
		t.Errorf("a2: shim %d, want %d", got, shimA)
	}
	if !alive(shimB) {
		t.Errorf("pod-b's shim %d exited while pod-b's tasks run", shimB)
	}
	stop(podA[2])
	assertShimExits(t, shimA, "pod-a's shim, after its last task was deleted")

	for _, r := range podB {
		stop(r)
	}
	assertShimExits(t, shimB, "pod-b's shim, after its last task was deleted")
}

// assertShimExits polls until pid has exited (a zombie counts: the suite
// reaps it), failing t after 20s.
func assertShimExits(t *testing.T, pid int, what string) {
	t.Helper()
	if !pollUntil(20*time.Second, func() bool { return !alive(pid) }) {
		t.Errorf("%s (pid %d %q) still running after 20s", what, pid, cmdlineOf(pid))
	}
}
