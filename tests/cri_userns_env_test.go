package tests

// Helpers of the user namespace tests (cri_userns_test.go): their env,
// pods, volumes, and the checks seen from inside (CRI log, ExecSync) and
// from the host (stat, /proc).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsEnv is newCRIEnv for the user namespace tests, with the runcs
// that have a handler of their own (1.2 and later). It skips on
// containerd 1.6, whose CRI plugin has no user namespace support. The
// pods need a runc of 1.3 or later (see runsHostNetworkUserns); without
// one it skips, or fails under SHIM_TEST_STRICT=1 (make test, CI:
// install-deps.sh has built them there, so their absence is a broken
// setup, not a reason to run without these tests).
func usernsEnv(t *testing.T) (*criEnv, []matrixRunc) {
	t.Helper()
	requireRoot(t)
	if v := defaultDaemonVersion(t); v.legacy() {
		t.Skipf("containerd %s: its CRI plugin has no user namespace support (it never reads UsernsOptions; containerd 1.7 and 2.0 added it)", v.name)
	}
	runcs := matrixRuncs()
	if len(runcs) == 0 || !runsHostNetworkUserns(runcs[len(runcs)-1]) {
		msg := fmt.Sprintf("no runc 1.3 or later at %s (found %v): pods with a user namespace need a runc with idmapped mounts "+
			"(Debian's runc 1.1.5 has none) that can join the host's namespaces from the pod's (runc 1.2 cannot); tests/install-deps.sh builds them",
			filepath.Join(shimtestRoot(), "runc-v*/runc"), runcs)
		if os.Getenv("SHIM_TEST_STRICT") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return newCRIEnv(t), runcs
}

// runsHostNetworkUserns reports whether r can start the containers of a
// host-network pod with a user namespace: they join the pod's user
// namespace and the host's uts and network namespaces, which belong to
// the host's user namespace. runc 1.2 joins the user namespace first and
// then may not join the others ("failed to setns into uts namespace:
// Operation not permitted", seen as "can't get final child's PID from
// pipe: EOF"); runc 1.3 joins them as nsenter(8) does (runc#4492, in
// its 1.3.0 changelog).
func runsHostNetworkUserns(r matrixRunc) bool {
	n, _ := parseVersion(r.version)
	return !versionLess(n, [3]int{1, 3, 0})
}

// newestRuncHandler is the handler of the newest runc of runcs
// (usernsEnv made sure that it runs the pods).
func (e *criEnv) newestRuncHandler(runcs []matrixRunc) string {
	return runcHandlerName(runcs[len(runcs)-1].version)
}

// withUserns gives a pod a user namespace of its own (mode POD) with
// these mappings, as the kubelet does for hostUsers: false.
func withUserns(uids, gids []*runtimeapi.IDMapping) podOption {
	return func(c *runtimeapi.PodSandboxConfig) {
		c.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
			Mode: runtimeapi.NamespaceMode_POD, Uids: uids, Gids: gids,
		}
	}
}

// idRange maps length ids from container to host.
func idRange(container, host, length uint32) []*runtimeapi.IDMapping {
	return []*runtimeapi.IDMapping{{ContainerId: container, HostId: host, Length: length}}
}

// withMounts adds volumes (host path -> container path) to a container.
func withMounts(mounts ...*runtimeapi.Mount) ctrOption {
	return func(c *runtimeapi.ContainerConfig) { c.Mounts = append(c.Mounts, mounts...) }
}

func withReadonlyRootfs(c *runtimeapi.ContainerConfig) {
	c.Linux.SecurityContext.ReadonlyRootfs = true
}

// runUsernsPod runs pod name with handler and a user namespace mapping
// usernsSize ids from host id hostID, for uids and gids.
//
// containerd 2.2 refuses such a pod: it pins a pod's user namespace from
// the pod's network namespace, which a host-network pod has none of
// (containerd#12518 changed that; 2.4.2 has it). The suite has no CNI
// for pod networks, so on 2.2 the test skips, after checking that the
// refusal is that one and came before any shim was started (it is the
// same for both runtimes).
func (e *criEnv) runUsernsPod(handler, name string, hostID uint32) *criPod {
	e.t.Helper()
	m := idRange(0, hostID, usernsSize)
	p, err := e.runPodWith(handler, e.podConfig(name, withUserns(m, m)))
	const noNetns = "failed to pin user namespace: failed to open netns(): open : no such file or directory"
	if err != nil && e.d.version.name == "2.2" && strings.Contains(err.Error(), noNetns) {
		if shims := e.d.shimPids(""); len(shims) != 0 {
			e.t.Errorf("shims of the daemon after the refused pod: %v, want none", describe(shims))
		}
		e.t.Skipf("containerd %s does not run host-network pods with a user namespace (containerd#12518 came later), and the suite has no CNI for a pod network: %v",
			e.d.version.name, err)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// usernsVolumes makes two host directories for volumes, with parents
// anyone may search: open (0777, anyone may write) and closed (root's,
// 0755). The test removes them.
func usernsVolumes(t *testing.T) (open, closed string) {
	t.Helper()
	var dirs []string
	for _, mode := range []os.FileMode{0o777, 0o755} {
		d, err := os.MkdirTemp("", "shimtest-userns-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		// MkdirTemp makes it 0700; chmod is not subject to the umask.
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	return dirs[0], dirs[1]
}

// execResult runs cmd in container id with ExecSync and returns its
// result, failing t only when the call itself fails.
func (e *criEnv) execResult(id string, cmd ...string) *runtimeapi.ExecSyncResponse {
	e.t.Helper()
	resp, err := e.d.rt.ExecSync(e.ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 10})
	if err != nil {
		e.t.Fatalf("ExecSync %q in %s: %v", cmd, id, err)
	}
	return resp
}

// wantExec runs cmd and checks its exit code, stdout and stderr.
func (e *criEnv) wantExec(id string, code int32, stdout, stderr string, cmd ...string) {
	e.t.Helper()
	r := e.execResult(id, cmd...)
	if r.ExitCode != code || string(r.Stdout) != stdout || string(r.Stderr) != stderr {
		e.t.Errorf("exec %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q",
			cmd, r.ExitCode, r.Stdout, r.Stderr, code, stdout, stderr)
	}
}

// wantOwner checks that path, seen from the host, exists and belongs to
// uid:gid.
func wantOwner(t *testing.T, what, path string, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid {
		t.Errorf("%s %s: owner %d:%d seen from the host, want %d:%d", what, path, st.Uid, st.Gid, uid, gid)
	}
}

// wantNoFile checks that path does not exist.
func wantNoFile(t *testing.T, what, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s: %s exists (lstat: %v), want none", what, path, err)
	}
}

// procIDs returns the Uid: or Gid: line of /proc/pid/status (real,
// effective, saved, fs), as the host sees them.
func procIDs(t *testing.T, pid int, field string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("/proc/%d/status: no %s line", pid, field)
	return ""
}

// userNS is the user namespace of pid, as /proc/pid/ns/user names it.
func userNS(t *testing.T, pid int) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// idMapLine is a line of /proc/<pid>/uid_map or gid_map.
func idMapLine(container, host, length uint32) string {
	return fmt.Sprintf("%10d %10d %10d", container, host, length)
}

// wantLog checks a container's CRI log messages, stream by stream.
func wantLog(t *testing.T, path string, stdout, stderr []string) {
	t.Helper()
	msgs := criLogMessages(readCRILog(t, path))
	if !slices.Equal(msgs["stdout"], stdout) || !slices.Equal(msgs["stderr"], stderr) {
		t.Errorf("CRI log %s: stdout %q, stderr %q; want stdout %q, stderr %q", path, msgs["stdout"], msgs["stderr"], stdout, stderr)
	}
}

// wantIdmappedRootfs checks the mounts the snapshotter hands over for
// container id's rootfs: uidmap and gidmap options mapping root to
// hostID (only the first range: containerd.WithRemapperLabels), and lower
// layers that stay root's on disk (idmapped when mounted, not chowned),
// so the image's /bin/busybox is root's on disk and hostID's through the
// container's root seen from the host.
func (e *criEnv) wantIdmappedRootfs(id string, pid int, hostID uint32) {
	t := e.t
	t.Helper()
	mounts, err := e.d.client.SnapshotService(snapshotter).Mounts(e.ctx, id)
	if err != nil {
		t.Fatalf("rootfs mounts of %s: %v", id, err)
	}
	if len(mounts) != 1 {
		t.Fatalf("rootfs mounts of %s: %+v, want one overlay", id, mounts)
	}
	opts := mounts[0].Options
	mapping := fmt.Sprintf("0:%d:%d", hostID, usernsSize)
	for _, want := range []string{"uidmap=" + mapping, "gidmap=" + mapping} {
		if !slices.Contains(opts, want) {
			t.Errorf("rootfs mount of %s: options %q, want %q", id, opts, want)
		}
	}
	var lowers []string
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			lowers = append(lowers, strings.Split(v, ":")...)
		}
	}
	var found bool
	for _, l := range lowers {
		if _, err := os.Lstat(filepath.Join(l, "bin/busybox")); err == nil {
			wantOwner(t, "the image's /bin/busybox on disk (lower layer)", filepath.Join(l, "bin/busybox"), 0, 0)
			found = true
		}
	}
	if !found {
		t.Errorf("rootfs mount of %s: no lower layer %q holds bin/busybox", id, lowers)
	}
	wantOwner(t, "the image's /bin/busybox through the container's root", fmt.Sprintf("/proc/%d/root/bin/busybox", pid), hostID, hostID)
}

// wantStartRefused checks a user namespace pod (of host ids from hostID)
// whose containers cannot start: its pause process runs as hostID, a
// container is created but StartContainer fails with an error holding
// want; the container is then exited with StartError (exit code 128) and
// the error as its message, and has no task, no bundle and no process;
// the pod's shim runs only the pause process. Then the container and the
// pod are removed: nothing is left of them (leftovers), no shim of the
// daemon either.
func (e *criEnv) wantStartRefused(p *criPod, hostID uint32, want string) {
	t := e.t
	t.Helper()
	pause := e.taskPid(p.id)
	h := strconv.FormatUint(uint64(hostID), 10)
	if got, ids := procIDs(t, pause, "Uid"), strings.Join([]string{h, h, h, h}, " "); got != ids {
		t.Errorf("pause process seen from the host: Uid %s, want %s", got, ids)
	}
	const marker = "4242026"
	id := p.create("app", []string{"sleep", marker})
	_, err := e.d.rt.StartContainer(e.ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("StartContainer: %v; want an error with %q", err, want)
	}
	st := e.status(id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 128 || st.Reason != "StartError" || !strings.Contains(st.Message, want) {
		t.Errorf("container after the refused start: state %v, exit code %d, reason %q, message %q; want EXITED, 128, StartError and the error",
			st.State, st.ExitCode, st.Reason, st.Message)
	}
	if pid := e.taskPidIfAny(id); pid != 0 {
		t.Errorf("refused container has a task, pid %d", pid)
	}
	wantNoFile(t, "the refused container's bundle", e.bundleDir(id))
	if pids := procsWithArgs("sleep", marker); len(pids) != 0 {
		t.Errorf("refused container's process runs: %v", describe(pids))
	}
	shim := e.shimOf(p.id)
	if got := shimChildren(shim); !slices.Equal(got, []int{pause}) {
		t.Errorf("children of the pod's shim %d: %v, want only the pause process %d", shim, describe(got), pause)
	}
	e.removeContainer(id)
	p.remove()
	if shims := e.d.shimPids(""); len(shims) != 0 {
		t.Errorf("shims of the daemon after the pod's removal: %v, want none", describe(shims))
	}
}
