package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestPodShimNoLeaks: a long-lived pod shim runs many short containers,
// one after another. Afterwards it holds no more file descriptors than
// before, no more mounts exist, and its only child is the container that
// stayed (no zombies, no stray runc or logger processes).
func TestPodShimNoLeaks(t *testing.T) {
	e := newDefaultEnv(t)
	holder := e.run(ctrSpec{id: "holder", pod: "leakpod", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	holder.waitOutput(t, "ready\n", time.Minute)
	shim := holder.shimPid()
	nsBundles := filepath.Join(e.d.state, "io.containerd.runtime.v2.task", e.ns)

	cycle := func(i int) {
		t.Helper()
		id := fmt.Sprintf("cycle%d", i)
		r := e.run(ctrSpec{id: id, pod: "leakpod", args: []string{"echo", id}})
		if code := r.wait(time.Minute); code != 0 {
			t.Fatalf("%s: exit code = %d, want 0", id, code)
		}
		r.delete()
		if got, want := string(r.stdout.Bytes()), id+"\n"; got != want {
			t.Fatalf("%s: stdout = %q, want %q", id, got, want)
		}
	}
	// Warm up: the first containers may open what the shim keeps for its
	// lifetime (a log, a cgroup file, an event connection).
	for i := range 3 {
		cycle(i)
	}
	baseFDs := openFDs(shim)
	baseMounts := mountsUnder(nsBundles)

	const n = 25
	for i := 3; i < 3+n; i++ {
		cycle(i)
	}

	// A leak grows with the cycles; a couple of fds may come and go with
	// the garbage collector (an os.Process pidfd is closed by a finalizer
	// in the upstream runc shim), hence the constant slack.
	const slack = 2
	var fds map[string]string
	if !pollUntil(10*time.Second, func() bool {
		fds = openFDs(shim)
		return len(fds) <= len(baseFDs)+slack
	}) {
		t.Errorf("shim %d has %d open fds after %d create/delete cycles, %d before; new ones: %v",
			shim, len(fds), n, len(baseFDs), newFDs(baseFDs, fds))
	}
	if got := mountsUnder(nsBundles); !slices.Equal(got, baseMounts) {
		t.Errorf("mounts under the namespace's bundles = %v, want %v (the holder's rootfs only)", got, baseMounts)
	}
	var children []proc
	if !pollUntil(10*time.Second, func() bool {
		children = childrenOf(shim)
		return len(children) == 1 && children[0].pid == int(holder.task.Pid())
	}) {
		t.Errorf("children of shim %d = %v, want only the holder's init %d", shim, children, holder.task.Pid())
	}

	holder.kill(syscall.SIGKILL)
	if code := holder.wait(time.Minute); code != 137 {
		t.Errorf("holder exit code = %d, want 137", code)
	}
	holder.delete()
	assertShimExits(t, shim, "the pod's shim, after its last task was deleted")
}

// openFDs maps each open fd of pid to what it points at.
func openFDs(pid int) map[string]string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	fds := make(map[string]string, len(entries))
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil {
			fds[e.Name()] = target
		}
	}
	return fds
}

// newFDs lists the fds in after that are not in before, with targets.
func newFDs(before, after map[string]string) []string {
	var out []string
	for fd, target := range after {
		if before[fd] != target {
			out = append(out, fd+" -> "+target)
		}
	}
	slices.Sort(out)
	return out
}

// childrenOf returns the processes whose parent is pid.
func childrenOf(pid int) []proc {
	var out []proc
	for _, p := range listProcs() {
		if p.ppid == pid {
			out = append(out, p)
		}
	}
	return out
}
