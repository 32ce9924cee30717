package tests

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// TestContainerdRestart: restarting containerd does not disturb a running
// pod. The daemon finds the shim again (bootstrap.json on 2.x, the address
// file on 1.6): the task is still Running, its output keeps flowing, a new
// container of the pod joins the same shim, and kill/wait/delete work.
func TestContainerdRestart(t *testing.T) {
	requireRoot(t)
	for _, v := range daemonVersions() {
		t.Run(v.name, func(t *testing.T) { testContainerdRestart(t, newEnv(t, v)) })
	}
}

func testContainerdRestart(t *testing.T, e *env) {
	r := e.run(ctrSpec{id: "survivor", pod: "restartpod", args: []string{"sh", "-c",
		`i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done`}})
	r.waitOutput(t, "tick-1\n", time.Minute)
	shim := r.shimPid()

	if err := e.d.restart(); err != nil {
		t.Fatalf("restart containerd %s: %v\n%s", e.d.version.name, err, e.d.logTail(0, 16<<10))
	}
	// The Wait stream of the old connection ended with the daemon.
	exitC, err := r.task.Wait(e.ctx)
	if err != nil {
		t.Fatalf("wait on %s after restart: %v", r.id, err)
	}
	r.exitC = exitC

	if got := r.status(); got != client.Running {
		t.Fatalf("status after restart = %q, want %q", got, client.Running)
	}
	if !alive(shim) {
		t.Fatalf("shim %d died with containerd", shim)
	}
	n := lastTick(r.stdout.Bytes())
	r.waitOutput(t, fmt.Sprintf("tick-%d\n", n+2), time.Minute)

	joiner := e.run(ctrSpec{id: "joiner", pod: "restartpod", args: []string{"sh", "-c", "echo joined; exec sleep 1000"}})
	joiner.waitOutput(t, "joined\n", time.Minute)
	if got := joiner.shimPid(); got != shim {
		t.Errorf("container created after the restart runs under shim %d, want the pod's shim %d", got, shim)
	}
	for _, x := range []*running{joiner, r} {
		x.kill(syscall.SIGKILL)
		if code := x.wait(time.Minute); code != 137 {
			t.Errorf("%s: exit code after SIGKILL = %d, want 137", x.id, code)
		}
		x.delete()
	}
	assertShimExits(t, shim, "the pod's shim, after its last task was deleted")
}
