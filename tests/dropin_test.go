package tests

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// TestDropInGroupSwitch: containers grouped by the runc shim's own
// annotation, io.containerd.runc.v2.group, outside CRI (containerd runs
// `start` for each of them), on a daemon of the test's own, while this
// shim and the runc shim replace each other as containerd-shim-runc-v2:
//
//   - runc shim to this shim: a container added to a group the runc shim
//     serves is handed to that runc shim by this shim's `start`, which
//     tells it from this shim by the claim it does not know: containerd
//     2.0-2.2, which read a plain address as task API v2, get the JSON
//     answer for v3, all 2.x's runc shim serves (2.3+ get a v3
//     BootstrapResult anyway, 1.6's runc shim serves v2). A container
//     outside the group gets this shim.
//   - and back: the runc shim's `start` hands a container added to a
//     group this shim serves to this shim; when this shim dies, the runc
//     shim's `delete` cleans up its bundles (its runtime file and
//     options.json, which containerd 1.6's runc shim requires) and the
//     tasks exit with 137.
func TestDropInGroupSwitch(t *testing.T) {
	requireDropIn(t)
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	shim := shimUnderTest(t)
	d, err := startDaemon(v, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range d.teardown() {
			t.Errorf("LEAK: %s", p)
		}
	})
	e := newEnvOn(t, d, testTimeout)
	runcName := filepath.Join(d.bin, shimBinaryName(runcRuntime))
	ready := []string{"sh", "-c", "echo ready; exec sleep 1000"}
	run := func(t *testing.T, id, group string) *running {
		t.Helper()
		s := ctrSpec{id: id, runtime: runcRuntime, args: ready}
		if group != "" {
			s.opts = []oci.SpecOpts{oci.WithAnnotations(map[string]string{"io.containerd.runc.v2.group": group})}
		}
		r := e.sub(t).run(s)
		r.waitOutput(t, "ready\n", time.Minute)
		return r
	}
	// The task API containerd speaks to either shim of the group: 2.x's
	// runc shim serves only v3, 1.6's only v2.
	wantAPI := 3
	if v.legacy() {
		wantAPI = 2
	}
	checkAPI := func(t *testing.T, id string) {
		t.Helper()
		if _, got, err := shimAddress(e.bundleDir(id)); err != nil || got != wantAPI {
			t.Errorf("task API containerd %s speaks to the shim of %s: v%d (%v), want v%d", v.name, id, got, err, wantAPI)
		}
	}
	stop := func(t *testing.T, rs ...*running) {
		t.Helper()
		for _, r := range rs {
			r.e = e.sub(t)
			r.kill(syscall.SIGKILL)
			if code := r.wait(time.Minute); code != 137 {
				t.Errorf("%s: exit code after SIGKILL = %d, want 137", r.id, code)
			}
			r.delete()
		}
	}

	t.Run("runc shim to this shim", func(t *testing.T) {
		g1 := run(t, "g1", "grp")
		runcShim := parentOf(int(g1.task.Pid()))
		requireRuns(t, runcShim, v.runcShim(), "g1's shim")
		runcSocket, _, err := shimAddress(e.bundleDir("g1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := replaceExecutable(shim, runcName); err != nil {
			t.Fatal(err)
		}
		g2 := run(t, "g2", "grp")
		if got := parentOf(int(g2.task.Pid())); got != runcShim {
			t.Errorf("g2 runs under pid %d %q, want its group's runc shim %d", got, cmdlineOf(got), runcShim)
		}
		checkAPI(t, "g2")
		solo := run(t, "solo", "")
		requireRuns(t, parentOf(int(solo.task.Pid())), shim, "solo's shim")

		stop(t, g2, solo, g1)
		assertShimExits(t, runcShim, "the group's runc shim, after its last task was deleted")
		// The runc shim removes its socket on exit through the address
		// file in its first task's bundle, which containerd has deleted
		// by then.
		if path := strings.TrimPrefix(runcSocket, "unix://"); os.Remove(path) == nil {
			t.Logf("the runc shim left its socket %s behind", path)
		}
	})

	t.Run("and back", func(t *testing.T) {
		h1 := run(t, "h1", "back")
		ours := parentOf(int(h1.task.Pid()))
		requireRuns(t, ours, shim, "h1's shim")
		socket, _, err := shimAddress(e.bundleDir("h1"))
		if err != nil {
			t.Fatal(err)
		}
		if err := replaceExecutable(v.runcShim(), runcName); err != nil {
			t.Fatal(err)
		}
		h2 := run(t, "h2", "back")
		if got := parentOf(int(h2.task.Pid())); got != ours {
			t.Errorf("h2 runs under pid %d %q, want its group's shim %d (this shim)", got, cmdlineOf(got), ours)
		}
		checkAPI(t, "h2")

		inits := []int{int(h1.task.Pid()), int(h2.task.Pid())}
		events := subscribe(t, e.sub(t))
		logFrom := d.logSize()
		if err := syscall.Kill(ours, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// containerd publishes the TaskExit the dead shim's `delete`
		// answered (255 when it failed).
		for _, id := range []string{"h1", "h2"} {
			var exits []taskEvent
			if !pollUntil(30*time.Second, func() bool { exits = events.exits(id); return len(exits) > 0 }) {
				t.Errorf("%s: no TaskExit within 30s of its shim's death", id)
			} else if exits[0].exitStatus != 137 {
				t.Errorf("%s: TaskExit status %d after its shim died, want 137 (the runc shim's delete)", id, exits[0].exitStatus)
			}
		}
		events.streamErrors(t)
		if left := reapOrphans(inits, 30*time.Second); len(left) > 0 {
			t.Errorf("h1 and h2's processes %v still alive after their shim died", describe(left))
		}
		for _, id := range []string{"h1", "h2"} {
			if _, err := os.Stat(filepath.Join("/run/containerd/runc", e.ns, id)); !os.IsNotExist(err) {
				t.Errorf("runc's state of %s after the runc shim's delete: %v, want none", id, err)
			}
			if m := mountsIn(filepath.Join(e.bundleDir(id), "rootfs")); len(m) > 0 {
				t.Errorf("mounts left in %s's bundle: %v", id, m)
			}
		}
		log := d.logTail(logFrom, 1<<20)
		if strings.Contains(log, "failed to delete dead shim") || strings.Contains(log, "failed to clean up after shim disconnected") {
			t.Errorf("the runc shim could not delete this shim's dead tasks:\n%s", log)
		}
		// containerd deleted the tasks with their dead shim.
		for _, r := range []*running{h1, h2} {
			if err := r.container.Delete(e.ctx, client.WithSnapshotCleanup); err != nil {
				t.Errorf("delete container %s: %v", r.id, err)
			}
		}
		// A SIGKILLed shim cannot remove its socket.
		_ = os.Remove(strings.TrimPrefix(socket, "unix://"))
	})
}
