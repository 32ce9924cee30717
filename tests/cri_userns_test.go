package tests

// Kubernetes user namespaces (KEP-127: a pod with hostUsers: false)
// through CRI, as the kubelet asks for them: the pod's
// LinuxSandboxSecurityContext carries UsernsOptions{Mode: POD, Uids,
// Gids}, every container repeats them. What containerd 2.x then does
// (internal/cri/server, core/runtime/v2/task_manager.go):
//
//   - Status reports per runtime handler Features.UserNamespaces: true
//     only if the shim's -info lists the "user" namespace and
//     mountExtensions.idmap.enabled, i.e. the runc of the handler is 1.2
//     or later;
//   - the overlay snapshotter gives the pod's and the containers' rootfs
//     mounts uidmap=/gidmap= options: the image's lower layers are to be
//     mounted idmapped (on disk they stay root's), which the shim does;
//   - /etc/hosts, /etc/hostname and /etc/resolv.conf are bind mounts with
//     uid and gid mappings in the OCI spec, which runc makes idmapped;
//   - before a task with such mounts is created containerd runs the
//     shim's -info and refuses the create ("idmap mounts not supported")
//     when the runtime's features lack idmap: Debian's runc 1.1.5, which
//     the shipped handler names.
//
// The suite's pods use the host network (there is no CNI here), which
// containerd allows with a user namespace since containerd#12518
// (KEP-5607; the pod's /sys is a bind mount then): 2.4.2 does, 2.2 does
// not (runUsernsPod).
//
// The shipped handler runs runc 1.1.5; so that pods can use a user
// namespace, criConfig adds one handler per runc of the runc matrix (1.2
// and later; install-deps.sh builds them), the shipped table cloned with
// BinaryName naming that runc (runcHandlerTables).

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsSize is the length of a pod's id range, as the kubelet allocates
// them (65536 ids from a multiple of 65536).
const usernsSize = 65536

// usernsHostID is the first host id of range k: each test uses its own k,
// so that no two pods of the suite share host ids and a file's host owner
// names the test that made it.
func usernsHostID(k uint32) uint32 { return k * usernsSize }

// The ranges (k) of the tests; TestCRIUsernsPod uses one per runc.
const (
	usernsRangePod          = 16 // + the runc's index
	usernsRangeReadonly     = 24
	usernsRangeMultiple     = 25
	usernsRangeOldRunc      = 26
	usernsRangeMultipleGIDs = 27
	usernsRangeShipped      = 28
)

// TestCRIUsernsRuntimeFeatures: CRI's Status reports, per runtime
// handler, UserNamespaces true for the handlers whose runc is 1.2 or
// later and false for the shipped one (Debian's runc 1.1.5); both from a
// successful introspection (Features set), i.e. from the shim's -info.
func TestCRIUsernsRuntimeFeatures(t *testing.T) {
	e, runcs := usernsEnv(t)
	resp, err := e.d.rt.Status(e.ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	handlers := map[string]*runtimeapi.RuntimeHandlerFeatures{}
	for _, h := range resp.GetRuntimeHandlers() {
		handlers[h.GetName()] = h.GetFeatures()
	}
	want := map[string]bool{}
	for _, r := range runcs {
		want[runcHandlerName(r.version)] = true
	}
	if v, old := pathRunc(t); old {
		want[e.d.handler] = false
		want[runcHandlerName(v)] = false
	} else {
		t.Logf("the runc on PATH is %s, not 1.1: the shipped handler %q is not checked", v, e.d.handler)
	}
	for name, userns := range want {
		f, ok := handlers[name]
		switch {
		case !ok:
			t.Errorf("Status: no runtime handler %q (handlers: %v)", name, slices.Sorted(maps.Keys(handlers)))
		case f == nil:
			t.Errorf("handler %q: no features: containerd could not introspect the runtime (its -info); see the daemon's log", name)
		case f.GetUserNamespaces() != userns:
			t.Errorf("handler %q: UserNamespaces = %v, want %v", name, f.GetUserNamespaces(), userns)
		default:
			t.Logf("handler %q: UserNamespaces %v, RecursiveReadOnlyMounts %v", name, f.GetUserNamespaces(), f.GetRecursiveReadOnlyMounts())
		}
	}
}

// TestCRIUsernsPod, for each runc with a handler (1.3 and later; 1.2
// below): a pod with its own user
// namespace (uids and gids 0-65535 mapped to host ids from H), a busybox
// container with two volumes, a host directory anyone may write (/open)
// and one only root may (/closed):
//   - the container's process is root inside (id -u, id -g: 0) and H on
//     the host (/proc/<pid>/status), in the pause process's user
//     namespace, not the host's; /proc/self/uid_map and gid_map show the
//     mapping;
//   - the rootfs is the image's lower layers idmapped (root's on disk,
//     H's through the container's root) and writable: a file the
//     container makes there is H's seen from the host, and so is one it
//     makes in /open (stat on the host);
//   - /etc/hosts, /etc/hostname and /etc/resolv.conf (idmapped bind
//     mounts) are root's inside; /closed (not idmapped) is nobody's
//     (65534, the overflow id) and writing it fails with Permission
//     denied (exit code and stderr); nothing appears on the host;
//   - ExecSync runs as root inside and may write the rootfs.
//
// With runc 1.2 (see runsHostNetworkUserns) the pod runs but its
// container does not start: StartContainer fails with runc's last log
// line, the container is exited with StartError and nothing of it is
// left (wantStartRefused).
func TestCRIUsernsPod(t *testing.T) {
	e, runcs := usernsEnv(t)
	for i, r := range runcs {
		t.Run(r.version, func(t *testing.T) {
			e := e.sub(t)
			hostID := usernsHostID(usernsRangePod + uint32(i))
			p := e.runUsernsPod(runcHandlerName(r.version), "userns", hostID)
			if !runsHostNetworkUserns(r) {
				e.wantStartRefused(p, hostID, "runc create failed: unable to start container process: can't get final child's PID from pipe: EOF")
				return
			}
			open, closed := usernsVolumes(t)
			script := "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; " +
				"echo init > /made-by-init && echo init > /open/made-by-init && echo ready && exec sleep 1000"
			id := p.run("app", []string{"sh", "-c", script}, withMounts(
				&runtimeapi.Mount{HostPath: open, ContainerPath: "/open"},
				&runtimeapi.Mount{HostPath: closed, ContainerPath: "/closed"},
			))
			waitLogLine(t, p.logPath("app"), "ready", 30*time.Second)
			m := idMapLine(0, hostID, usernsSize)
			wantLog(t, p.logPath("app"), []string{"0", "0", m, m, "ready"}, nil)

			pid, pause := e.taskPid(id), e.taskPid(p.id)
			h := strconv.FormatUint(uint64(hostID), 10)
			ids := strings.Join([]string{h, h, h, h}, " ")
			if uid, gid := procIDs(t, pid, "Uid"), procIDs(t, pid, "Gid"); uid != ids || gid != ids {
				t.Errorf("container process %d seen from the host: Uid %s, Gid %s; want %s", pid, uid, gid, ids)
			}
			if ns, pns, host := userNS(t, pid), userNS(t, pause), userNS(t, os.Getpid()); ns != pns || ns == host {
				t.Errorf("user namespaces: container %s, pause %s, host %s; want the pause's, not the host's", ns, pns, host)
			}
			e.wantIdmappedRootfs(id, pid, hostID)
			wantOwner(t, "file the container made in its rootfs", fmt.Sprintf("/proc/%d/root/made-by-init", pid), hostID, hostID)
			wantOwner(t, "file the container made in the open volume", filepath.Join(open, "made-by-init"), hostID, hostID)

			e.wantExec(id, 0, "0\n0\n", "", "sh", "-c", "id -u; id -g")
			e.wantExec(id, 0, "0 0 /etc/hosts\n0 0 /etc/hostname\n0 0 /etc/resolv.conf\n0 0 /made-by-init\n0 0 /open/made-by-init\n65534 65534 /closed\n", "",
				"stat", "-c", "%u %g %n", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/made-by-init", "/open/made-by-init", "/closed")
			e.wantExec(id, 0, "", "", "touch", "/made-by-exec")
			wantOwner(t, "file an exec made in the rootfs", fmt.Sprintf("/proc/%d/root/made-by-exec", pid), hostID, hostID)
			e.wantExec(id, 1, "", "touch: /closed/denied: Permission denied\n", "touch", "/closed/denied")
			wantNoFile(t, "the denied write", filepath.Join(closed, "denied"))

			e.stopContainer(id, 0)
			e.removeContainer(id)
			p.remove()
		})
	}
}

// TestCRIUsernsReadonlyRootfs: the same pod with a container whose
// rootfs is read-only: root inside, writing the rootfs fails with
// Read-only file system (from the container's process and from an exec:
// exit code and stderr), writing the open volume works and the file is
// the mapped host id's.
func TestCRIUsernsReadonlyRootfs(t *testing.T) {
	e, runcs := usernsEnv(t)
	handler := e.newestRuncHandler(runcs)
	hostID := usernsHostID(usernsRangeReadonly)
	p := e.runUsernsPod(handler, "userns-ro", hostID)
	open, _ := usernsVolumes(t)
	script := "id -u; touch /made-by-init; echo \"touch exit $?\"; echo init > /open/made-by-init && echo ready && exec sleep 1000"
	id := p.run("app", []string{"sh", "-c", script}, withReadonlyRootfs,
		withMounts(&runtimeapi.Mount{HostPath: open, ContainerPath: "/open"}))
	waitLogLine(t, p.logPath("app"), "ready", 30*time.Second)
	wantLog(t, p.logPath("app"), []string{"0", "touch exit 1", "ready"}, []string{"touch: /made-by-init: Read-only file system"})

	pid := e.taskPid(id)
	wantNoFile(t, "the read-only rootfs", fmt.Sprintf("/proc/%d/root/made-by-init", pid))
	wantOwner(t, "file the container made in the open volume", filepath.Join(open, "made-by-init"), hostID, hostID)
	e.wantExec(id, 0, "0\n", "", "id", "-u")
	e.wantExec(id, 1, "", "touch: /made-by-exec: Read-only file system\n", "touch", "/made-by-exec")
	e.wantExec(id, 0, "", "", "touch", "/open/made-by-exec")
	wantOwner(t, "file an exec made in the open volume", filepath.Join(open, "made-by-exec"), hostID, hostID)

	e.stopContainer(id, 0)
	e.removeContainer(id)
	p.remove()
}

// TestCRIUsernsMultipleMappings: the CRI API allows several id ranges,
// but containerd takes one line per map only (parseUsernsIDMap: the
// snapshot's remap labels, containerd.WithRemapperLabels, hold one
// range): a pod whose uids or gids have two ranges is refused by
// RunPodSandbox, with an error that names the map, and nothing of it is
// left (no pod sandbox, no containerd container, no shim).
func TestCRIUsernsMultipleMappings(t *testing.T) {
	e, runcs := usernsEnv(t)
	handler := e.newestRuncHandler(runcs)
	for _, tc := range []struct {
		name       string
		k          uint32
		twoUIDs    bool
		twoGIDs    bool
		wantSubstr string
	}{
		{"both", usernsRangeMultiple, true, true, "UID mapping: only one mapping line supported, got 2 mapping lines"},
		{"gids", usernsRangeMultipleGIDs, false, true, "GID mapping: only one mapping line supported, got 2 mapping lines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			h := usernsHostID(tc.k)
			one := idRange(0, h, usernsSize)
			two := append(idRange(0, h, 1000), idRange(1000, h+1000, usernsSize-1000)...)
			uids, gids := one, one
			if tc.twoUIDs {
				uids = two
			}
			if tc.twoGIDs {
				gids = two
			}
			cfg := e.podConfig("userns-multi-"+tc.name, withUserns(uids, gids))
			label := cfg.Metadata.Uid
			cfg.Labels["shimtest-pod"] = label
			p, err := e.runPodWith(handler, cfg)
			if err == nil {
				t.Fatalf("RunPodSandbox with uids %v gids %v: pod %s, want an error %q", uids, gids, p.id, tc.wantSubstr)
			}
			if !strings.Contains(err.Error(), tc.wantSubstr) {
				t.Errorf("RunPodSandbox with uids %v gids %v: %v; want an error with %q", uids, gids, err, tc.wantSubstr)
			}
			pods, err := e.d.rt.ListPodSandbox(e.ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
				LabelSelector: map[string]string{"shimtest-pod": label},
			}})
			if err != nil {
				t.Fatalf("ListPodSandbox: %v", err)
			}
			if len(pods.GetItems()) != 0 {
				t.Errorf("refused pod left pod sandboxes: %v", pods.GetItems())
			}
			ctrs, err := e.d.client.Containers(e.ctx, fmt.Sprintf("labels.%q==%q", "shimtest-pod", label))
			if err != nil {
				t.Fatalf("list containers: %v", err)
			}
			if len(ctrs) != 0 {
				t.Errorf("refused pod left %d containerd containers", len(ctrs))
			}
			if shims := e.d.shimPids(""); len(shims) != 0 {
				t.Errorf("shims of the daemon after the refused pod: %v, want none", describe(shims))
			}
		})
	}
}

// oldRuncRefusal is what containerd answers StartContainer for a user
// namespace container on a runc without idmapped mounts.
const oldRuncRefusal = "failed to validate OCI runtime features: idmap mounts not supported: " +
	"missing `mountExtensions.idmap` entry in `features` command"

// TestCRIUsernsOldRunc: a pod with a user namespace on the handler of the
// runc on PATH (Debian's 1.1.5), which has no idmapped mounts; CRI
// reports UserNamespaces false for it (TestCRIUsernsRuntimeFeatures), so
// a kubelet would not send it. What containerd does if asked anyway: the
// pod runs (its spec has no idmapped mounts; the shim mounts the idmapped
// rootfs, runc makes the user namespace), a container is created (CRI
// makes no task yet), and StartContainer fails before runc is asked to
// create it: containerd runs the shim's -info, finds no idmap in runc's
// features and refuses the task (validateRuntimeFeatures). See
// wantStartRefused for what must follow.
func TestCRIUsernsOldRunc(t *testing.T) {
	e, _ := usernsEnv(t)
	v, old := pathRunc(t)
	if !old {
		t.Skipf("the runc on PATH is %s, which has idmapped mounts: no old runc to refuse", v)
	}
	hostID := usernsHostID(usernsRangeOldRunc)
	p := e.runUsernsPod(runcHandlerName(v), "userns-oldrunc", hostID)
	e.wantStartRefused(p, hostID, oldRuncRefusal)
}

// TestCRIUsernsShippedHandler: a user namespace pod on the shipped
// handler, whose runc is the one on PATH. Under the runc shim's runtime
// type (the runc shim's lane, and this shim installed as a drop-in) that
// is TestCRIUsernsOldRunc's refusal. Under this shim's own type
// (io.containerd.sandbox.v2, with the shipped options table) containerd
// refuses every user namespace container before any runtime is asked:
// CRI gives the container's IO to the mapped root through runc options
// (client.WithUIDOwner, internal/cri/server/container_start_linux.go),
// and the runtime options it built for a type other than
// io.containerd.runc.v2 are runtimeoptions.v1.Options, which do not
// convert. The pod itself runs (the pause container has no IO owner):
// this is why the README sends user namespace pods through the drop-in
// install. The runc shim cannot be run under such a type at all (it
// reads its options as runc options only), so there is nothing to
// compare it with; the day containerd changes this, the test fails and
// the README must change with it.
func TestCRIUsernsShippedHandler(t *testing.T) {
	e, _ := usernsEnv(t)
	want := oldRuncRefusal
	if e.d.runtimeType != runcRuntime {
		want = `failed to create containerd task: failed to get runtime v2 options: can't unmarshal type "runtimeoptions.v1.Options" to output "containerd.runc.v1.Options"`
	} else if v, old := pathRunc(t); !old {
		t.Skipf("the runc on PATH is %s, which has idmapped mounts: no old runc to refuse", v)
	}
	hostID := usernsHostID(usernsRangeShipped)
	p := e.runUsernsPod(e.d.handler, "userns-shipped", hostID)
	e.wantStartRefused(p, hostID, want)
}
