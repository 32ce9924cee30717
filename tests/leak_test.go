package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPodShimNoLeaks: a long-lived pod shim runs many short containers,
// one after another, each with several execs. Afterwards it holds no more
// file descriptors and threads than after the warm-up, no more mounts
// exist, and its only child is the container that stayed (no zombies, no
// stray runc or logger processes).
//
// Threads stand in for goroutines (the shim has no debug endpoint, and
// its goroutines cannot be counted from outside): Go keeps a thread for
// every goroutine blocked in a system call and never ends an idle one, so
// the count is the high-water mark of blocking calls. A goroutine left
// blocked in a read, an open of a fifo or a wait4 by each container or
// exec holds a thread for good and adds one per cycle, 25 to 100 here (10
// to 40 in the v2 guest, SHIM_TEST_LEAK_CYCLES); a
// goroutine left waiting on a channel or the poller is not seen (the fds
// it holds are, when it holds any).
func TestPodShimNoLeaks(t *testing.T) {
	e := newDefaultEnv(t)
	holder := e.run(ctrSpec{id: "holder", pod: "leakpod", args: []string{"sh", "-c", "echo ready; exec sleep 1000"}})
	holder.waitOutput(t, "ready\n", time.Minute)
	shim := holder.shimPid()
	nsBundles := filepath.Join(e.d.state, "io.containerd.runtime.v2.task", e.ns)

	const execs = 3 // per container
	cycle := func(i int) {
		t.Helper()
		id := fmt.Sprintf("cycle%d", i)
		r := e.run(ctrSpec{id: id, pod: "leakpod", args: []string{"sh", "-c", "echo " + id + "; exec sleep 1000"}})
		r.waitOutput(t, id+"\n", time.Minute)
		for j := range execs {
			execID := fmt.Sprintf("%s-x%d", id, j)
			x := r.exec(t, execID, []string{"sh", "-c", "echo " + execID + "; exit " + strconv.Itoa(j)}, nil)
			if code := x.finish(t, e); code != uint32(j) {
				t.Fatalf("exec %s: exit code = %d, want %d", execID, code, j)
			}
			switch got, want := string(x.stdout.Bytes()), execID+"\n"; {
			case got == want:
			case got == "" && !isSandboxRuntime() &&
				knownDifference(t, e.d.version.name, "fast-exec-stdout-dropped", "the runc shim delivered none of exec %s's stdout", execID):
			default:
				t.Fatalf("exec %s: stdout = %q, want %q", execID, got, want)
			}
		}
		r.kill(syscall.SIGKILL)
		if code := r.wait(time.Minute); code != 137 {
			t.Fatalf("%s: exit code = %d, want 137", id, code)
		}
		r.delete()
	}
	// Warm up: the first containers and execs may open what the shim
	// keeps for its lifetime (a log, a cgroup file, an event connection)
	// and start the threads its busiest moment needs.
	for i := range 3 {
		cycle(i)
	}
	baseFDs := openFDs(shim)
	baseThreads := threadsOf(shim)
	if baseThreads < 0 {
		t.Fatalf("cannot read the threads of shim %d", shim)
	}
	baseMounts := mountsUnder(nsBundles)

	// SHIM_TEST_LEAK_CYCLES overrides the count: the cgroup v2 guest runs
	// 10, under software emulation (a leak of one per cycle still clears
	// the slacks below by far).
	n := countFromEnv(t, "SHIM_TEST_LEAK_CYCLES", 25)
	for i := 3; i < 3+n; i++ {
		cycle(i)
	}

	// A leak grows with the cycles (n containers, n*execs execs); a
	// couple of fds may come and go with the garbage collector (an
	// os.Process pidfd is closed by a finalizer in the upstream runc
	// shim), and a cycle may meet a few more blocking calls at once than
	// the warm-up did (the reaper's wait4, a fifo open, runc's output),
	// hence the constant slacks, well below n.
	const fdSlack, threadSlack = 2, 4
	var fds map[string]string
	if !pollUntil(10*time.Second, func() bool {
		fds = openFDs(shim)
		return len(fds) <= len(baseFDs)+fdSlack
	}) {
		added := newFDs(baseFDs, fds)
		onlyPidfds := !slices.ContainsFunc(added, func(fd string) bool { return !strings.HasSuffix(fd, "-> anon_inode:[pidfd]") })
		if !onlyPidfds || !knownDifference(t, e.d.version.name, "pidfds-held-until-gc",
			"%d pidfds more than after the warm-up: %v", len(fds)-len(baseFDs), added) {
			t.Errorf("shim %d has %d open fds after %d cycles of create/start/%d execs/delete, %d after the warm-up; new ones: %v",
				shim, len(fds), n, execs, len(baseFDs), added)
		}
	}
	var threads int
	if !pollUntil(10*time.Second, func() bool {
		threads = threadsOf(shim)
		return threads <= baseThreads+threadSlack
	}) {
		t.Errorf("shim %d has %d threads after %d cycles of create/start/%d execs/delete, %d after the warm-up (slack %d): a goroutine blocked in a system call per container or exec?",
			shim, threads, n, execs, baseThreads, threadSlack)
	}
	t.Logf("shim %d: %d fds, %d threads after the warm-up; %d fds, %d threads after %d cycles", shim, len(baseFDs), baseThreads, len(fds), threads, n)
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

// threadsOf returns the number of threads of pid (the Threads line of
// /proc/<pid>/status), or -1 when it cannot be read.
func threadsOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return -1
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
