package tests

// Pods without a pause container (issue 14): the CRI runtime table
// tests/cri/containerd-2.x-shim-sandboxer.toml, handler "sandbox-shim",
// has sandboxer = "shim", so that containerd's CRI plugin hands the pod
// to the shim's containerd.runtime.sandbox.v1.Sandbox service and no
// pause container exists. What containerd 2.4.2 does then
// (internal/cri/server, plugins/sandbox/controller.go):
//
//   - RunPodSandbox: `start` for the sandbox id on a bundle
//     <state>/io.containerd.sandbox.controller.v1.shim/k8s.io/<id>
//     without config.json, then CreateSandbox (the PodSandboxConfig as
//     options, netns_path, "" for a host-network pod), StartSandbox (its
//     pid is the pod's), WaitSandbox held open; with
//     disable_pause_image_pull it looks no pause image up (it logs
//     `Skipping pause image pull for runtime handler "sandbox-shim"`);
//   - every CreateContainer: SandboxStatus (pid) and Platform; the
//     container's network, IPC and UTS namespaces are /proc/<pid>/ns/*
//     of that pid, its PID namespace too when the pod shares one;
//     hostname, hosts, resolv.conf and /dev/shm are bind-mounted only if
//     CRI's own sandbox directories hold them, which only the pause path
//     writes: the shim provides them;
//   - PodSandboxStatus: SandboxStatus; its verbose info["info"] is JSON
//     whose "pid" is the pod's (podsandbox/types.SandboxInfo);
//   - pod stats: SandboxMetrics; UpdatePodSandboxResources: UpdateSandbox;
//   - StopPodSandbox: StopSandbox; RemovePodSandbox: ShutdownSandbox, then
//     the bundle is removed.
//
// The suite's pods use the host network (there is no CNI here): the pod
// holder is in the host's network namespace, and, as the kubelet does
// for such pods, the pod config names no hostname (the node's is the
// pod's).
//
// Where the mode cannot run (sandboxerUnsupported):
//   - containerd 1.6 has no sandbox API;
//   - containerd 2.2.9 panics (a nil sandbox spec in
//     core/runtime/v2.NewBundle) for every host-network pod with
//     sandboxer = "shim", whatever the shim: containerd#12983, fixed by
//     #13131 for 2.3. TestCRISandboxerHostNetworkPanic shows it on a
//     daemon of its own;
//   - the runc shim cannot hold a pod (containerd#11640): its `start`
//     reads the sandbox bundle's config.json, which does not exist.
//     TestCRISandboxerRuncShim shows RunPodSandbox failing so; in the
//     runc shim's lane every other test here skips, naming it.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/cri"
)

// The shim sandboxer's shipped files and names.
const (
	sandboxerTableFile    = "containerd-2.x-shim-sandboxer.toml"
	sandboxerRuntimeClass = "runtimeclass-shim-sandboxer.yaml"
	// sandboxerName is the sandboxer the table names, which is also the
	// name of containerd's sandbox controller that talks to shims.
	sandboxerName = "shim"
)

// Why the mode is not tested somewhere.
const (
	sandboxerNoSandboxAPI = "containerd 1.6 has no sandbox API (sandboxer = \"shim\" needs containerd 2.0 or later)"
	sandboxerPanics22     = "containerd 2.2 panics in RunPodSandbox for a host-network pod with sandboxer = \"shim\", " +
		"whatever the shim (a nil sandbox spec in core/runtime/v2.NewBundle: containerd#12983, fixed by #13131 for 2.3); " +
		"every pod of the suite uses the host network (no CNI): TestCRISandboxerHostNetworkPanic shows it"
	sandboxerRuncShim = "the runc shim cannot hold a pod: its start reads config.json, which a sandbox bundle does not have " +
		"(containerd#11640): TestCRISandboxerRuncShim shows RunPodSandbox failing so"
	sandboxerDropIn = "drop-in lane: its CRI daemon has the drop-in table only; the shim sandboxer is tested in the normal lanes"
)

// sandboxerUnsupported returns why the suite's pods cannot run with the
// shim sandboxer on containerd v, or "".
func sandboxerUnsupported(v daemonVersion) string {
	switch {
	case v.legacy():
		return sandboxerNoSandboxAPI
	case v.name == "2.2":
		return sandboxerPanics22
	}
	return ""
}

// requireSandboxerMode skips t where the shim sandboxer is not tested
// for the runtime and daemon under test, and returns the daemon version.
func requireSandboxerMode(t *testing.T) daemonVersion {
	t.Helper()
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if why := sandboxerUnsupported(v); why != "" {
		t.Skip(why)
	}
	if m, err := dropInMode(); err != nil {
		t.Fatal(err)
	} else if m != noDropIn {
		t.Skip(sandboxerDropIn)
	}
	if !isSandboxRuntime() {
		t.Skip(sandboxerRuncShim)
	}
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	return v
}

// newSandboxerEnv is newCRIEnv whose pods run with the shim sandboxer's
// handler, skipping where the mode is not tested.
func newSandboxerEnv(t *testing.T) *criEnv {
	t.Helper()
	requireSandboxerMode(t)
	return sandboxerEnvOn(t, criDaemonFor(t))
}

// sandboxerEnvOn is newCRIEnvOn with the shim sandboxer's handler.
func sandboxerEnvOn(t *testing.T, d *criDaemon) *criEnv {
	t.Helper()
	if d.sandboxerHandler == "" {
		t.Fatalf("CRI daemon %s has no shim sandboxer handler", d.version.name)
	}
	e := newCRIEnvOn(t, d)
	e.handler = d.sandboxerHandler
	return e
}

// startSandboxerDaemon starts a CRI daemon of v for this test only
// (startOwnCRIDaemon) with the shim sandboxer's handler and without the
// pause image.
func startSandboxerDaemon(t *testing.T, v daemonVersion, name string) *criDaemon {
	t.Helper()
	var shim string
	if isSandboxRuntime() {
		shim = shimUnderTest(t)
	}
	return startOwnCRIDaemon(t, v, name+"-"+v.name, criInstall{
		shim: shim, runtimeType: runtimeUnderTest(), sandboxer: true, noPauseImage: true,
	})
}

// sandboxBundleDir is the bundle containerd's shim sandbox controller
// makes for pod id (no config.json), where the shim's bootstrap.json is.
func (e *criEnv) sandboxBundleDir(id string) string {
	return filepath.Join(e.d.state, "io.containerd.sandbox.controller.v1.shim", criNamespace, id)
}

// sandboxerPod returns the pod of e with id, if it runs with the shim
// sandboxer.
func (e *criEnv) sandboxerPod(id string) *criPod {
	for _, p := range *e.pods {
		if p.id == id && p.sandboxer {
			return p
		}
	}
	return nil
}

// holderPid is the pid the shim's sandbox service reports for the pod
// (SandboxStatus through containerd's sandbox controller, as CRI reads
// it for each container's namespaces): its pod holder.
func (p *criPod) holderPid() int {
	p.e.t.Helper()
	st, err := p.e.d.client.SandboxController(sandboxerName).Status(p.e.ctx, p.id, false)
	if err != nil {
		p.e.t.Fatalf("SandboxStatus of pod %s: %v", p.name, err)
	}
	if st.Pid == 0 {
		p.e.t.Fatalf("SandboxStatus of pod %s: pid 0 (state %q)", p.name, st.State)
	}
	return int(st.Pid)
}

// holderPidIfAny is holderPid, or 0 when the pod has no status (any more).
func (p *criPod) holderPidIfAny() int {
	st, err := p.e.d.client.SandboxController(sandboxerName).Status(p.e.ctx, p.id, false)
	if err != nil {
		return 0
	}
	return int(st.Pid)
}

// podPid is the process whose namespaces are the pod's: the pause
// process, or the shim's pod holder.
func (p *criPod) podPid() int {
	p.e.t.Helper()
	if p.sandboxer {
		return p.holderPid()
	}
	return p.e.taskPid(p.id)
}

// nsOf returns /proc/<pid>/ns/<kind>'s link, e.g. "net:[4026531840]".
func nsOf(t *testing.T, pid int, kind string) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind))
	if err != nil {
		t.Fatalf("namespace %s of pid %d: %v", kind, pid, err)
	}
	return ns
}

// nsPidOf returns pid's pid in its own PID namespace, the last field of
// NSpid in /proc/<pid>/status ("" if unreadable).
func nsPidOf(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return f[len(f)-1]
			}
		}
	}
	return ""
}

// podCgroupOf returns pid's cgroup path: in the memory hierarchy on
// cgroup v1, the unified one on v2.
func podCgroupOf(pid int) string {
	if !cgroupV2() {
		return cgroupPath(pid, "memory")
	}
	for _, line := range strings.Split(procCgroups(pid), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest
		}
	}
	return ""
}

// under reports whether cgroup path is parent or below it.
func under(path, parent string) bool {
	return path == parent || strings.HasPrefix(path, parent+"/")
}

// k8sContainers returns the ids of every containerd container in the
// k8s.io namespace, sorted.
func (e *criEnv) k8sContainers() []string {
	e.t.Helper()
	cs, err := e.d.client.Containers(e.ctx)
	if err != nil {
		e.t.Fatalf("list containers in %s: %v", criNamespace, err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	slices.Sort(ids)
	return ids
}

// podStatus returns CRI's verbose PodSandboxStatus of p.
func (p *criPod) status() *runtimeapi.PodSandboxStatusResponse {
	p.e.t.Helper()
	st, err := p.e.d.rt.PodSandboxStatus(p.e.ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.id, Verbose: true})
	if err != nil {
		p.e.t.Fatalf("PodSandboxStatus %s: %v", p.name, err)
	}
	return st
}

// waitPodState polls PodSandboxStatus until p is in state. An error
// meanwhile is not final: while containerd cleans up after a dead shim,
// its sandbox controller still has the shim and answers with the closed
// connection's error (then NotFound, which CRI reports as NotReady).
func (p *criPod) waitPodState(state runtimeapi.PodSandboxState, timeout time.Duration) {
	p.e.t.Helper()
	var (
		got runtimeapi.PodSandboxState
		err error
	)
	if !pollUntil(timeout, func() bool {
		var st *runtimeapi.PodSandboxStatusResponse
		st, err = p.e.d.rt.PodSandboxStatus(p.e.ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.id})
		got = st.GetStatus().GetState()
		return err == nil && got == state
	}) {
		p.e.t.Fatalf("pod %s: state %v (PodSandboxStatus error %v) after %v, want %v", p.name, got, err, timeout, state)
	}
}

// TestCRISandboxerPodSteps: every step of the CRI pod tests, run by the
// same test bodies, with pods held by the shim instead of a pause
// container: container lifecycle and exit codes, stop grace periods, the
// shipped runtime options, ExecSync, streaming exec and attach, logs
// (and their reopening), resource updates, container stats, OOM kills,
// and a shared PID namespace (whose pid 1 is the holder).
func TestCRISandboxerPodSteps(t *testing.T) {
	requireSandboxerMode(t)
	for _, tc := range []struct {
		name string
		body func(*testing.T, *criEnv)
	}{
		{"ContainerLifecycle", testCRIContainerLifecycle},
		{"StopGracePeriod", testCRIStopGracePeriod},
		{"ShippedRuntimeOptions", testCRIShippedRuntimeOptions},
		{"ExecSync", testCRIExecSync},
		{"ExecStreaming", testCRIExecStreaming},
		{"Attach", testCRIAttach},
		{"ContainerLogs", testCRIContainerLogs},
		{"ReopenContainerLog", testCRIReopenContainerLog},
		{"LogBytes", testCRILogBytes},
		{"UpdateContainerResources", testCRIUpdateContainerResources},
		{"ContainerStats", testCRIContainerStats},
		{"OOMKilled", testCRIOOMKilled},
		{"SharedPIDNamespace", testCRISharedPIDNamespace},
		{"PodFiles", testCRIPodFiles},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.body(t, newSandboxerEnv(t)) })
	}
}

// TestCRISandboxerPod: a pod with the shim sandboxer's handler is ready
// with no pause container: CRI reports it ready under that handler, with
// the holder's pid in its verbose info (the pid SandboxStatus reports);
// containerd records it with sandboxer "shim" and the handler's runtime
// type, and has no container for it: the k8s.io namespace holds exactly
// the pod's two apps. One shim holds the pod: the holder and the apps'
// inits are its only children, all in the pod's cgroup parent. After
// RemovePodSandbox nothing is left (leftovers) and the shim has exited.
func TestCRISandboxerPod(t *testing.T) {
	e := newSandboxerEnv(t)
	p := e.runPod("holder")
	apps := []string{
		p.run("app0", []string{"sleep", "1000"}),
		p.run("app1", []string{"sleep", "1000"}),
	}
	holder := p.holderPid()

	st := p.status()
	if got := st.GetStatus().GetState(); got != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod state = %v, want SANDBOX_READY", got)
	}
	if got := st.GetStatus().GetRuntimeHandler(); got != e.d.sandboxerHandler {
		t.Errorf("pod runtime handler = %q, want %q", got, e.d.sandboxerHandler)
	}
	if st.GetStatus().GetCreatedAt() == 0 {
		t.Errorf("pod created_at = 0")
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil {
		t.Errorf("verbose PodSandboxStatus info[\"info\"] %q: %v", st.GetInfo()["info"], err)
	} else if info.Pid != holder {
		t.Errorf("verbose PodSandboxStatus pid = %d, want the pid SandboxStatus reports, %d", info.Pid, holder)
	}

	sb, err := e.d.client.SandboxStore().Get(e.ctx, p.id)
	if err != nil {
		t.Fatalf("containerd's sandbox record of %s: %v", p.id, err)
	}
	if sb.Sandboxer != sandboxerName || sb.Runtime.Name != e.d.runtimeType {
		t.Errorf("containerd's sandbox record: sandboxer %q runtime %q, want %q %q", sb.Sandboxer, sb.Runtime.Name, sandboxerName, e.d.runtimeType)
	}
	if _, err := e.d.client.LoadContainer(e.ctx, p.id); !errdefs.IsNotFound(err) {
		t.Errorf("containerd container %s (the pod's id): %v, want NotFound: no pause container", p.id, err)
	}
	want := slices.Sorted(slices.Values(apps))
	if got := e.k8sContainers(); !slices.Equal(got, want) {
		t.Errorf("containers in %s = %v, want only the pod's apps %v", criNamespace, got, want)
	}

	shim := e.shimOf(p.id)
	inits := []int{holder}
	for _, id := range apps {
		if got := e.shimOf(id); got != shim {
			t.Errorf("container %s: shim %d, want the pod's shim %d", id, got, shim)
		}
		inits = append(inits, e.taskPid(id))
	}
	slices.Sort(inits)
	if got := shimChildren(shim); !slices.Equal(got, inits) {
		t.Errorf("children of the pod's shim %d = %v, want the holder and the apps' inits %v", shim, describe(got), inits)
	}
	// The holder may be the shim's binary re-executed: it is not a shim.
	if got := slices.DeleteFunc(e.d.shimPids(""), func(pid int) bool { return pid == holder }); !slices.Equal(got, []int{shim}) {
		t.Errorf("shim processes of the daemon = %v, want only the pod's %d", describe(got), shim)
	}
	parent := p.config.Linux.CgroupParent
	for _, pid := range inits {
		if cg := podCgroupOf(pid); !under(cg, parent) {
			t.Errorf("pid %d %q: cgroup %q, want the pod's %q or below", pid, cmdlineOf(pid), cg, parent)
		}
	}
	t.Logf("pod %s: holder %d %q, shim %d, apps %v", p.id, holder, cmdlineOf(holder), shim, inits)
	p.remove()
	assertShimExits(t, shim, "the pod's shim, after RemovePodSandbox")
}

// TestCRISandboxerNamespaces: the apps of a pod share the holder's
// network, IPC and UTS namespaces (/proc/<pid>/ns/* against the pid
// SandboxStatus reports), the network one being the host's (a
// host-network pod) and the IPC one the pod's own; each app has a PID
// namespace of its own, unless the pod shares one: then it is the
// holder's, whose pid is 1 there.
func TestCRISandboxerNamespaces(t *testing.T) {
	e := newSandboxerEnv(t)
	self := os.Getpid()
	for _, shared := range []bool{false, true} {
		name, opts := "ns-private-pid", []podOption(nil)
		if shared {
			name, opts = "ns-shared-pid", []podOption{withSharedPID}
		}
		t.Run(name, func(t *testing.T) {
			e := e.sub(t)
			p := e.runPod(name, opts...)
			a := e.taskPid(p.run("a", []string{"sleep", "1000"}))
			b := e.taskPid(p.run("b", []string{"sleep", "1000"}))
			holder := p.holderPid()
			for _, kind := range []string{"net", "ipc", "uts"} {
				want := nsOf(t, holder, kind)
				for _, pid := range []int{a, b} {
					if got := nsOf(t, pid, kind); got != want {
						t.Errorf("app pid %d: %s namespace %s, want the holder %d's %s", pid, kind, got, holder, want)
					}
				}
			}
			if got, host := nsOf(t, holder, "net"), nsOf(t, self, "net"); got != host {
				t.Errorf("holder's network namespace %s, want the host's %s (host-network pod)", got, host)
			}
			if got, host := nsOf(t, holder, "ipc"), nsOf(t, self, "ipc"); got == host {
				t.Errorf("holder's IPC namespace is the host's %s, want the pod's own (Ipc: POD)", got)
			}
			pa, pb, ph := nsOf(t, a, "pid"), nsOf(t, b, "pid"), nsOf(t, holder, "pid")
			for _, kind := range []string{"net", "ipc", "uts", "pid"} {
				t.Logf("%-3s host %s holder %s app a %s app b %s", kind, nsOf(t, self, kind), nsOf(t, holder, kind), nsOf(t, a, kind), nsOf(t, b, kind))
			}
			if shared {
				if pa != ph || pb != ph {
					t.Errorf("PID namespaces: apps %s %s, want the holder's %s (Pid: POD)", pa, pb, ph)
				}
				if got := nsPidOf(holder); got != "1" {
					t.Errorf("holder %d is pid %q in the pod's PID namespace, want 1", holder, got)
				}
			} else if pa == ph || pb == ph || pa == pb {
				t.Errorf("PID namespaces: apps %s %s, holder %s; want three (Pid: CONTAINER)", pa, pb, ph)
			}
			p.remove()
		})
	}
}

// The pod config of testCRIPodFiles.
var (
	podDNS = &runtimeapi.DNSConfig{
		Servers:  []string{"10.0.0.53", "10.0.0.54"},
		Searches: []string{"shimtest.svc.cluster.local", "cluster.local"},
		Options:  []string{"ndots:5", "timeout:2"},
	}
	// podDNSResolvConf is podDNS as containerd's pause path writes it
	// (podsandbox parseDNSOptions).
	podDNSResolvConf = "search shimtest.svc.cluster.local cluster.local\n" +
		"nameserver 10.0.0.53\nnameserver 10.0.0.54\n" +
		"options ndots:5 timeout:2\n"
	// podSysctls are namespaced by the pod's IPC namespace; the
	// hosts' defaults differ (msgmax 8192, shm_rmid_forced 0).
	podSysctls = map[string]string{"kernel.msgmax": "16384", "kernel.shm_rmid_forced": "1"}
)

func withPodFilesConfig(c *runtimeapi.PodSandboxConfig) {
	c.DnsConfig = podDNS
	c.Linux.Sysctls = podSysctls
}

// TestCRIPodFiles: every container of a pod sees the pod's files and
// settings: /etc/hostname and `hostname` the node's hostname (a
// host-network pod names none, as the kubelet sends it), an /etc/hosts
// naming it and localhost, /etc/resolv.conf exactly as the pod's
// DNSConfig says (servers, searches, options), the pod's namespaced
// sysctls (the host's stay), and one /dev/shm (tmpfs, 64 MiB as the pause
// path sizes it) shared by the pod's containers: a file one writes there,
// another reads. The same body runs with the shim sandboxer
// (TestCRISandboxerPodSteps/PodFiles).
func TestCRIPodFiles(t *testing.T) { testCRIPodFiles(t, newCRIEnv(t)) }

// testCRIPodFiles is TestCRIPodFiles on e: with or without a pause
// container (TestCRISandboxerPodSteps).
func testCRIPodFiles(t *testing.T, e *criEnv) {
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	hostSysctls := map[string]string{}
	for k := range podSysctls {
		hostSysctls[k] = readSysctl(t, k)
	}
	p := e.runPod("files", withPodFilesConfig)
	writer := p.run("writer", []string{"sh", "-c", "echo from-writer > /dev/shm/shared && echo written; exec sleep 1000"})
	waitLogLine(t, p.logPath("writer"), "written", 30*time.Second)
	reader := p.run("reader", []string{"sleep", "1000"})
	for _, id := range []string{writer, reader} {
		name := map[string]string{writer: "writer", reader: "reader"}[id]
		if got := string(e.execSync(id, 10, "cat", "/etc/hostname")); got != hostname+"\n" {
			t.Errorf("%s: /etc/hostname %q, want %q", name, got, hostname+"\n")
		}
		if got := string(e.execSync(id, 10, "hostname")); got != hostname+"\n" {
			t.Errorf("%s: hostname %q, want %q", name, got, hostname+"\n")
		}
		hosts := string(e.execSync(id, 10, "cat", "/etc/hosts"))
		if !hostsNames(hosts, hostname) || !hostsNames(hosts, "localhost") {
			t.Errorf("%s: /etc/hosts names not both %q and localhost:\n%s", name, hostname, hosts)
		}
		// The pause path copies the node's; the shim does too when it
		// names the pod's hostname, as a host-network pod's does.
		if node, err := os.ReadFile("/etc/hosts"); err == nil && hostsNames(string(node), hostname) && hosts != string(node) {
			t.Errorf("%s: /etc/hosts\n%q, want the node's\n%q", name, hosts, node)
		}
		if got := string(e.execSync(id, 10, "cat", "/etc/resolv.conf")); got != podDNSResolvConf {
			t.Errorf("%s: /etc/resolv.conf\n%q, want\n%q", name, got, podDNSResolvConf)
		}
		for k, v := range podSysctls {
			path := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if got := string(e.execSync(id, 10, "cat", path)); got != v+"\n" {
				t.Errorf("%s: sysctl %s = %q, want the pod's %q", name, k, got, v+"\n")
			}
		}
		shm := string(e.execSync(id, 10, "sh", "-c", "grep ' /dev/shm ' /proc/self/mounts"))
		if f := strings.Fields(shm); len(f) < 4 || f[2] != "tmpfs" || !slices.Contains(strings.Split(f[3], ","), "size=65536k") {
			t.Errorf("%s: /dev/shm mount %q, want a tmpfs of size=65536k", name, shm)
		}
		if got := string(e.execSync(id, 10, "cat", "/dev/shm/shared")); got != "from-writer\n" {
			t.Errorf("%s: /dev/shm/shared %q, want the writer's %q", name, got, "from-writer\n")
		}
	}
	for k, v := range hostSysctls {
		if got := readSysctl(t, k); got != v {
			t.Errorf("host sysctl %s = %q with the pod running, want its own %q", k, got, v)
		}
	}
	p.remove()
}

// hostsNames reports whether an /etc/hosts text has a line naming name.
func hostsNames(hosts, name string) bool {
	for _, line := range strings.Split(hosts, "\n") {
		if f := strings.Fields(line); len(f) > 1 && !strings.HasPrefix(f[0], "#") && slices.Contains(f[1:], name) {
			return true
		}
	}
	return false
}

// readSysctl reads the test process's (the host's) sysctl k, e.g.
// "kernel.msgmax".
func readSysctl(t *testing.T, k string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(k, ".", "/"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// TestCRISandboxerNoPauseImage: on a CRI daemon of its own into which
// no pause image was ever imported, a pod with the shim sandboxer runs
// and its container prints: CRI skipped the pause image (its log says so
// for the handler, and never names the pinned sandbox image), the only
// image in containerd and CRI is busybox, the only container the app.
func TestCRISandboxerNoPauseImage(t *testing.T) {
	v := requireSandboxerMode(t)
	d := startSandboxerDaemon(t, v, "cri-sandboxer-only")
	e := sandboxerEnvOn(t, d)
	logFrom := d.logSize()
	p := e.runPod("nopause")
	app := p.run("app", []string{"sh", "-c", "echo no pause; exec sleep 1000"})
	waitLogLine(t, p.logPath("app"), "no pause", 30*time.Second)

	// CRI names each image also by its config digest (sha256:...):
	// every name must be busybox's.
	busybox, err := d.client.ImageService().Get(e.ctx, imageRef)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := d.client.ImageService().List(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if img.Target.Digest != busybox.Target.Digest {
			t.Errorf("image %s (%s) in %s: want only %s's names", img.Name, img.Target.Digest, criNamespace, imageRef)
		}
	}
	list, err := d.images.ListImages(e.ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetImages()) != 1 || !slices.Equal(list.GetImages()[0].GetRepoTags(), []string{imageRef}) {
		t.Errorf("CRI ListImages = %v, want only %s", list.GetImages(), imageRef)
	}
	if got := e.k8sContainers(); !slices.Equal(got, []string{app}) {
		t.Errorf("containers in %s = %v, want only the app %s", criNamespace, got, app)
	}
	log := d.logTail(logFrom, 4<<20)
	// logrus quotes the message: its quotes are escaped.
	if want := fmt.Sprintf(`Skipping pause image pull for runtime handler \"%s\"`, d.sandboxerHandler); !strings.Contains(log, want) {
		t.Errorf("containerd's log does not say %s", want)
	}
	if strings.Contains(log, pauseImageRef) {
		t.Errorf("containerd's log names the pinned sandbox image %s during the pod's run", pauseImageRef)
	}
	p.remove()
}

// TestCRISandboxerStopRemove: StopPodSandbox stops the apps (CRI kills
// them with no grace period, as in the pause mode: exit 137) and the
// holder, and the pod is NotReady while its shim stays for
// RemovePodSandbox; a second StopPodSandbox succeeds.
// RemovePodSandbox then leaves no process, mount, cgroup (the pod cgroup
// included, in every v1 hierarchy or the v2 one: the shim made it), file
// or record (leftovers, which covers the sandbox bundle and containerd's
// sandbox record too), and the shim exits.
func TestCRISandboxerStopRemove(t *testing.T) {
	e := newSandboxerEnv(t)
	p := e.runPod("stopremove")
	app := p.run("app", []string{"sleep", "1000"})
	holder, appPid := p.holderPid(), e.taskPid(app)
	shim := e.shimOf(p.id)
	for i := range 2 {
		if _, err := e.d.rt.StopPodSandbox(e.ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
			t.Fatalf("StopPodSandbox #%d: %v", i+1, err)
		}
	}
	if got := p.status().GetStatus().GetState(); got != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("pod state after StopPodSandbox = %v, want SANDBOX_NOTREADY", got)
	}
	if st := e.status(app); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Errorf("app after StopPodSandbox: %v exit code %d, want EXITED 137 (StopPodSandbox's SIGKILL)", st.State, st.ExitCode)
	}
	for _, pid := range []int{holder, appPid} {
		if !pollUntil(10*time.Second, func() bool { return !alive(pid) }) {
			t.Errorf("pid %d %q alive 10s after StopPodSandbox", pid, cmdlineOf(pid))
		}
	}
	if !alive(shim) {
		t.Errorf("the pod's shim %d exited at StopPodSandbox; it must stay for ShutdownSandbox (RemovePodSandbox)", shim)
	}
	p.remove()
	assertShimExits(t, shim, "the pod's shim, after RemovePodSandbox")
	if _, err := e.d.client.SandboxStore().Get(e.ctx, p.id); !errdefs.IsNotFound(err) {
		t.Errorf("containerd's sandbox record after RemovePodSandbox: %v, want NotFound", err)
	}
	if _, err := os.Stat(e.sandboxBundleDir(p.id)); !os.IsNotExist(err) {
		t.Errorf("sandbox bundle %s after RemovePodSandbox: %v, want none", e.sandboxBundleDir(p.id), err)
	}
}

// sandboxMetrics returns the shim's SandboxMetrics of pod p, through
// containerd's sandbox controller: the memory usage and limit and the
// pids count of the cgroups v2 Metrics on a v2 host, of the v1 Metrics
// otherwise (the other type fails t).
func (p *criPod) sandboxMetrics() (usage, limit, pids uint64) {
	t := p.e.t
	t.Helper()
	m, err := p.e.d.client.SandboxController(sandboxerName).Metrics(p.e.ctx, p.id)
	if err != nil {
		t.Fatalf("SandboxMetrics of pod %s: %v", p.name, err)
	}
	v, err := typeurl.UnmarshalAny(m.GetData())
	if err != nil {
		t.Fatalf("SandboxMetrics of pod %s: data %s: %v", p.name, m.GetData().GetTypeUrl(), err)
	}
	switch s := v.(type) {
	case *v2stats.Metrics:
		if cgroupV2() {
			return s.GetMemory().GetUsage(), s.GetMemory().GetUsageLimit(), s.GetPids().GetCurrent()
		}
	case *v1stats.Metrics:
		if !cgroupV2() {
			u := s.GetMemory().GetUsage()
			return u.GetUsage(), u.GetLimit(), s.GetPids().GetCurrent()
		}
	}
	t.Fatalf("SandboxMetrics of pod %s: type %T (%s) on a cgroup v2 host %v, want the host's cgroups Metrics", p.name, v, m.GetData().GetTypeUrl(), cgroupV2())
	return 0, 0, 0
}

// TestCRISandboxerStatsUpdate: CRI's pod stats come from the shim's
// SandboxMetrics of the pod cgroup: ListPodSandboxStats and
// PodSandboxStats list the pod with CPU and memory stats, its memory at
// least the 16 MiB its app wrote to /dev/shm, and the app among its
// containers. SandboxMetrics itself is the host's cgroups Metrics type
// (v2 on a v2 host) with that memory and the holder and the app counted.
// UpdatePodSandboxResources (the shim's UpdateSandbox) sets the pod
// cgroup's memory limit, CPU shares and quota (their v2 files on v2),
// SandboxMetrics reports the pod cgroup's new limit, and CRI's verbose
// status reports the resources.
func TestCRISandboxerStatsUpdate(t *testing.T) {
	e := newSandboxerEnv(t)
	p := e.runPod("stats")
	app := p.run("app", []string{"sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=16 2>/dev/null && echo filled; exec sleep 1000"})
	waitLogLine(t, p.logPath("app"), "filled", 30*time.Second)
	const filled = 16 << 20

	list, err := e.d.rt.ListPodSandboxStats(e.ctx, &runtimeapi.ListPodSandboxStatsRequest{
		Filter: &runtimeapi.PodSandboxStatsFilter{Id: p.id},
	})
	if err != nil {
		t.Fatalf("ListPodSandboxStats: %v", err)
	}
	one, err := e.d.rt.PodSandboxStats(e.ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: p.id})
	if err != nil {
		t.Fatalf("PodSandboxStats: %v", err)
	}
	if len(list.GetStats()) != 1 {
		t.Fatalf("ListPodSandboxStats for %s: %d entries, want 1", p.id, len(list.GetStats()))
	}
	for what, s := range map[string]*runtimeapi.PodSandboxStats{"ListPodSandboxStats": list.GetStats()[0], "PodSandboxStats": one.GetStats()} {
		if got := s.GetAttributes().GetId(); got != p.id {
			t.Errorf("%s: pod id %q, want %q", what, got, p.id)
		}
		l := s.GetLinux()
		if l.GetCpu().GetTimestamp() == 0 || l.GetMemory().GetTimestamp() == 0 {
			t.Errorf("%s: cpu %v memory %v, want both with timestamps", what, l.GetCpu(), l.GetMemory())
		}
		if got := l.GetMemory().GetUsageBytes().GetValue(); got < filled {
			t.Errorf("%s: pod memory usage %d, want at least the %d bytes its app wrote to /dev/shm", what, got, filled)
		}
		var ids []string
		for _, c := range l.GetContainers() {
			ids = append(ids, c.GetAttributes().GetId())
		}
		if !slices.Equal(ids, []string{app}) {
			t.Errorf("%s: containers %v, want the app %s", what, ids, app)
		}
	}

	if usage, _, pids := p.sandboxMetrics(); usage < filled || pids < 2 {
		t.Errorf("SandboxMetrics: memory usage %d, pids %d; want at least the %d bytes its app wrote and 2 (the holder, the app)", usage, pids, filled)
	}

	res := &runtimeapi.LinuxContainerResources{
		MemoryLimitInBytes: 256 << 20, CpuShares: 512, CpuPeriod: 100000, CpuQuota: 50000,
	}
	if _, err := e.d.rt.UpdatePodSandboxResources(e.ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{PodSandboxId: p.id, Resources: res}); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v", err)
	}
	parent := p.config.Linux.CgroupParent
	files := map[string]string{
		"memory/memory.limit_in_bytes": "268435456", "cpu/cpu.shares": "512",
		"cpu/cpu.cfs_period_us": "100000", "cpu/cpu.cfs_quota_us": "50000",
	}
	if cgroupV2() {
		// cpu.weight from shares by the OCI runtimes' conversion.
		files = map[string]string{"memory.max": "268435456", "cpu.weight": "20", "cpu.max": "50000 100000"}
	}
	for file, want := range files {
		dir, name := filepath.Split(file)
		path := filepath.Join("/sys/fs/cgroup", dir, parent, name)
		data, err := os.ReadFile(path)
		if got := strings.TrimSpace(string(data)); err != nil || got != want {
			t.Errorf("pod cgroup %s = %q (%v), want %q", path, got, err, want)
		}
	}
	if _, limit, _ := p.sandboxMetrics(); limit != uint64(res.MemoryLimitInBytes) {
		t.Errorf("SandboxMetrics after UpdatePodSandboxResources: memory limit %d, want the pod cgroup's %d", limit, res.MemoryLimitInBytes)
	}
	var info struct {
		Resources struct {
			Linux *runtimeapi.LinuxContainerResources `json:"linux"`
		} `json:"resources"`
	}
	if err := json.Unmarshal([]byte(p.status().GetInfo()["info"]), &info); err != nil {
		t.Errorf("verbose PodSandboxStatus info: %v", err)
	} else if l := info.Resources.Linux; l.GetMemoryLimitInBytes() != res.MemoryLimitInBytes || l.GetCpuShares() != res.CpuShares || l.GetCpuQuota() != res.CpuQuota {
		t.Errorf("verbose PodSandboxStatus resources %v, want %v", l, res)
	}
	p.remove()
}

// TestCRISandboxerContainerdRestart: on a CRI daemon of its own,
// containerd stops and starts again while a pod runs: the pod is ready
// again, with the same holder and shim, its app running with the same
// pid (its output keeps coming), exec works, and a new container joins
// the same shim; no dead shim was cleaned up. Then the pod is removed
// without leftovers.
func TestCRISandboxerContainerdRestart(t *testing.T) {
	v := requireSandboxerMode(t)
	d := startSandboxerDaemon(t, v, "cri-sandboxer-restart")
	e := sandboxerEnvOn(t, d)
	p := e.runPod("restart")
	app := p.run("app", []string{"sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done"})
	waitLogLine(t, p.logPath("app"), "tick-1", 30*time.Second)
	holder, appPid, shim := p.holderPid(), e.taskPid(app), e.shimOf(p.id)

	if err := d.signalStop(); err != nil {
		t.Fatal(err)
	}
	if !alive(holder) || !alive(appPid) || !alive(shim) {
		t.Fatalf("with containerd stopped: holder %d alive %v, app %d alive %v, shim %d alive %v; want all alive",
			holder, alive(holder), appPid, alive(appPid), shim, alive(shim))
	}
	logFrom := d.logSize()
	if err := d.launch(); err != nil {
		t.Fatal(err)
	}
	if err := cri.WaitRuntimeReady(e.ctx, d.rt); err != nil {
		t.Fatal(err)
	}
	p.waitPodState(runtimeapi.PodSandboxState_SANDBOX_READY, 30*time.Second)
	pods, err := d.rt.ListPodSandbox(e.ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: p.id}})
	if err != nil || len(pods.GetItems()) != 1 || pods.GetItems()[0].GetState() != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("ListPodSandbox after the restart: %v, %v; want the pod, ready", pods.GetItems(), err)
	}
	if st := e.status(app); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("app after the restart: %v, want CONTAINER_RUNNING", st.State)
	}
	if got := e.taskPid(app); got != appPid {
		t.Errorf("app's pid after the restart %d, want %d", got, appPid)
	}
	if got := p.holderPid(); got != holder {
		t.Errorf("holder's pid after the restart %d, want %d", got, holder)
	}
	n := lastTick(readFile(t, p.logPath("app")))
	waitLogLine(t, p.logPath("app"), fmt.Sprintf("tick-%d", n+2), 30*time.Second)
	if got := string(e.execSync(app, 10, "echo", "still")); got != "still\n" {
		t.Errorf("exec after the restart: %q", got)
	}
	joiner := p.run("joiner", []string{"sleep", "1000"})
	if got := e.shimOf(joiner); got != shim {
		t.Errorf("container created after the restart: shim %d, want the pod's %d", got, shim)
	}
	if log := d.logTail(logFrom, 4<<20); strings.Contains(log, "cleaning up dead shim") {
		t.Errorf("containerd cleaned up a dead shim after the restart; the pod's shim %d lives", shim)
	}
	p.remove()
	assertShimExits(t, shim, "the pod's shim, after RemovePodSandbox")
}

// readFile returns the file's bytes, failing t if it cannot be read.
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestCRISandboxerShimKilled: SIGKILL of a pod's shim: containerd sees
// it gone and cleans up (the shim's `delete` for the pod's bundles):
// the holder and the app die (the test binary, their subreaper, reaps
// them), CRI reports the pod NotReady and the app exited, containerd's
// log shows the dead shim cleaned up without a failed delete, the shim's
// socket is gone (its delete removed it), and StopPodSandbox and
// RemovePodSandbox then leave nothing (leftovers: no process, mount,
// cgroup, bundle or record).
func TestCRISandboxerShimKilled(t *testing.T) {
	e := newSandboxerEnv(t)
	p := e.runPod("shimkilled")
	app := p.run("app", []string{"sleep", "1000"})
	holder, appPid, shim := p.holderPid(), e.taskPid(app), e.shimOf(p.id)
	logFrom := e.d.logSize()
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Only once the shim has exited are its children the test binary's
	// (reapOrphans takes "not my child" for gone).
	if !pollUntil(10*time.Second, func() bool { return !alive(shim) }) {
		t.Fatalf("the pod's shim %d survived SIGKILL", shim)
	}
	reapShims()
	if left := reapOrphans([]int{holder, appPid}, 30*time.Second); len(left) > 0 {
		t.Errorf("the pod's holder and app %v alive 30s after its shim was SIGKILLed", describe(left))
	}
	p.waitPodState(runtimeapi.PodSandboxState_SANDBOX_NOTREADY, 30*time.Second)
	e.waitState(app, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	log := e.d.logTail(logFrom, 4<<20)
	if !strings.Contains(log, "cleaning up dead shim") {
		t.Errorf("containerd's log does not show the dead shim cleaned up")
	}
	for _, bad := range []string{"failed to delete dead shim", "failed to clean up after shim disconnected"} {
		if strings.Contains(log, bad) {
			t.Errorf("containerd's log: %q", bad)
		}
	}
	// containerd does not remove a dead shim's socket, nor does the runc
	// shim's delete (TestCRIDropInSwitch): this shim's delete, which
	// containerd ran for the pod's bundle, must, or the pod leaves it.
	if _, err := os.Lstat(p.shimSocket); err == nil {
		t.Errorf("the killed shim's socket %s is left after containerd ran its delete", p.shimSocket)
		_ = os.Remove(p.shimSocket)
	}
	p.remove()
}

// TestCRISandboxerRuncShim, in the runc shim's lane on containerd 2.4.2:
// the runc shim cannot hold a pod (containerd#11640): RunPodSandbox with
// the shim sandboxer's handler fails with code Unknown, because the
// runc shim's `start` opens the sandbox bundle's config.json, which a
// sandbox bundle does not have; nothing is left (no shim, bundle, CRI
// pod or containerd sandbox record).
func TestCRISandboxerRuncShim(t *testing.T) {
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if isSandboxRuntime() {
		t.Skip("this shim's lane runs the shim sandboxer's tests; this one shows the runc shim failing")
	}
	if why := sandboxerUnsupported(v); why != "" {
		t.Skip(why)
	}
	e := newCRIEnv(t)
	cfg := e.podConfig("runc-sandboxer")
	_, err := e.d.rt.RunPodSandbox(e.ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: e.d.sandboxerHandler})
	re := regexp.MustCompile(`^failed to create sandbox "([0-9a-f]{64})": failed to start new shim for sandbox ([0-9a-f]{64}): start failed: io\.containerd\.runc\.v2: open config\.json: no such file or directory: exit status 1$`)
	m := re.FindStringSubmatch(status.Convert(err).Message())
	if status.Code(err) != codes.Unknown || m == nil || m[1] != m[2] {
		t.Fatalf("RunPodSandbox with the runc shim and sandboxer \"shim\": %v; want code Unknown and %s", err, re)
	}
	id := m[1]
	t.Logf("RunPodSandbox: %v", err)
	if shims := pollShimsGone(e.d.daemon, id, 10*time.Second); len(shims) > 0 {
		t.Errorf("shims for the failed pod: %v", describe(shims))
	}
	p := &criPod{e: e, id: id, name: cfg.Metadata.Name, config: cfg}
	if left := p.leftovers([]string{id}, nil); len(left) > 0 {
		t.Errorf("the failed pod left:\n  %s", strings.Join(left, "\n  "))
	}
	if _, err := e.d.client.SandboxStore().Get(e.ctx, id); !errdefs.IsNotFound(err) {
		t.Errorf("containerd's sandbox record of the failed pod: %v, want NotFound", err)
	}
}

// TestCRISandboxerHostNetworkPanic, on containerd 2.2 only, for either
// shim: RunPodSandbox of a host-network pod with sandboxer = "shim"
// crashes containerd (containerd#12983): the call fails with
// Unavailable, the daemon exits, its log has the nil dereference in
// core/runtime/v2.NewBundle, and no shim was started. On a CRI daemon of
// its own, so the lane's daemon lives on.
func TestCRISandboxerHostNetworkPanic(t *testing.T) {
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if v.name != "2.2" {
		t.Skipf("containerd %s: only 2.2 panics here (containerd#12983, fixed by #13131 for 2.3)", v.name)
	}
	if m, _ := dropInMode(); m != noDropIn {
		t.Skip(sandboxerDropIn)
	}
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	d := startSandboxerDaemon(t, v, "cri-sandboxer-panic")
	e := sandboxerEnvOn(t, d)
	_, err := d.rt.RunPodSandbox(e.ctx, &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("panic"), RuntimeHandler: d.sandboxerHandler})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("RunPodSandbox: %v, want code Unavailable (containerd crashed)", err)
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("containerd %s still running 10s after RunPodSandbox", v.name)
	}
	log := d.logTail(0, 4<<20)
	for _, want := range []string{"panic: runtime error: invalid memory address or nil pointer dereference", "core/runtime/v2.NewBundle"} {
		if !strings.Contains(log, want) {
			t.Errorf("containerd's log does not have %q", want)
		}
	}
	if shims := d.shimPids(""); len(shims) > 0 {
		t.Errorf("shims started: %v, want none (containerd panics before start)", describe(shims))
	}
	t.Logf("containerd %s exited: %v", v.name, d.waitErr)
}

// podHostname is the hostname of withPodNetwork's pods.
const podHostname = "shimtest-pod"

// withPodNetwork gives the pod a network namespace of its own (with the
// CNI stub's eth0, cri_cni_test.go) and, as the kubelet does for such a
// pod, a hostname.
func withPodNetwork(c *runtimeapi.PodSandboxConfig) {
	c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_POD
	c.Hostname = podHostname
}

// TestCRIPodNetwork: a pod with a network namespace of its own (the CNI
// stub's) and a hostname: CRI reports the stub's IP; both containers are
// in the pod process's network, UTS and IPC namespaces, none of them the
// host's; inside are the stub's interfaces and its address, and
// `hostname` and /etc/hostname are
// the pod's. With the shim sandboxer /etc/hosts also names it (the pause
// path copies the host's /etc/hosts; the kubelet writes its own for such
// pods). The same body runs with the shim sandboxer
// (TestCRISandboxerPodNetwork).
func TestCRIPodNetwork(t *testing.T) { testCRIPodNetwork(t, newCRIEnv(t)) }

// testCRIPodNetwork is TestCRIPodNetwork on e: with or without a pause
// container.
func testCRIPodNetwork(t *testing.T, e *criEnv) {
	p := e.runPod("podnet", withPodNetwork)
	apps := []string{p.run("a", []string{"sleep", "1000"}), p.run("b", []string{"sleep", "1000"})}
	if got := p.status().GetStatus().GetNetwork().GetIp(); got != cniStubIP {
		t.Errorf("pod IP = %q, want the CNI stub's %s", got, cniStubIP)
	}
	pod, self := p.podPid(), os.Getpid()
	for _, kind := range []string{"net", "uts", "ipc"} {
		want := nsOf(t, pod, kind)
		if want == nsOf(t, self, kind) {
			t.Errorf("the pod process %d is in the host's %s namespace %s", pod, kind, want)
		}
		for _, id := range apps {
			if got := nsOf(t, e.taskPid(id), kind); got != want {
				t.Errorf("container %s: %s namespace %s, want the pod process %d's %s", id, kind, got, pod, want)
			}
		}
	}
	for _, id := range apps {
		// busybox here has no ip applet: the interfaces and the
		// kernel's local addresses.
		if got := string(e.execSync(id, 10, "ls", "/sys/class/net")); got != "eth0\nlo\nstub-peer\n" {
			t.Errorf("container %s: interfaces %q, want the stub's eth0, lo, stub-peer", id, got)
		}
		if got := string(e.execSync(id, 10, "cat", "/proc/net/fib_trie")); !strings.Contains(got, "|-- "+cniStubIP+"\n") {
			t.Errorf("container %s: no address %s in /proc/net/fib_trie:\n%s", id, cniStubIP, got)
		}
		if got := string(e.execSync(id, 10, "hostname")); got != podHostname+"\n" {
			t.Errorf("container %s: hostname %q, want %q", id, got, podHostname+"\n")
		}
		if got := string(e.execSync(id, 10, "cat", "/etc/hostname")); got != podHostname+"\n" {
			t.Errorf("container %s: /etc/hostname %q, want %q", id, got, podHostname+"\n")
		}
		if hosts := string(e.execSync(id, 10, "cat", "/etc/hosts")); p.sandboxer && (!hostsNames(hosts, podHostname) || !hostsNames(hosts, "localhost")) {
			t.Errorf("container %s: /etc/hosts names not both %q and localhost:\n%s", id, podHostname, hosts)
		}
	}
	p.remove()
}

// TestCRISandboxerPodNetwork: TestCRIPodNetwork's body with the shim
// sandboxer, on a CRI daemon of its own. On 2.2 too, whose panic is for
// host-network pods only (a pod with a network namespace has a sandbox
// spec, containerd#12983), in two configs:
//   - the shipped table: the pod runs and a container is created, but
//     StartContainer fails (sandboxer22StartError): 2.2's
//     client.WithTaskAPIEndpoint puts the pod's task API address into
//     runc options, which it cannot make of the runtimeoptions.v1.Options
//     CRI sends for a handler of another runtime_type with an options
//     table (2.4 keeps the address in TaskInfo). The day 2.2 starts it,
//     this fails, and the README's advice goes;
//   - the shipped table without its options table, as the README tells
//     2.2 users to write it: the whole body passes.
func TestCRISandboxerPodNetwork(t *testing.T) {
	requireRoot(t)
	v := defaultDaemonVersion(t)
	switch {
	case v.legacy():
		t.Skip(sandboxerNoSandboxAPI)
	case !isSandboxRuntime():
		t.Skip(sandboxerRuncShim)
	}
	if m, _ := dropInMode(); m != noDropIn {
		t.Skip(sandboxerDropIn)
	}
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	if v.name != "2.2" {
		testCRIPodNetwork(t, sandboxerEnvOn(t, startSandboxerDaemon(t, v, "cri-sandboxer-podnet")))
		return
	}
	t.Run("shipped-table", func(t *testing.T) {
		e := sandboxerEnvOn(t, startSandboxerDaemon(t, v, "cri-sandboxer-podnet"))
		p := e.runPod("podnet", withPodNetwork)
		id := p.create("a", []string{"sleep", "1000"})
		_, err := e.d.rt.StartContainer(e.ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
		if status.Code(err) != codes.Unknown || !strings.Contains(status.Convert(err).Message(), sandboxer22StartError) {
			t.Errorf("StartContainer on containerd 2.2 with the shipped table: %v; want code Unknown and %q", err, sandboxer22StartError)
		}
		t.Logf("containerd 2.2: %v", err)
		p.remove()
	})
	t.Run("no-options-table", func(t *testing.T) {
		d := startOwnCRIDaemon(t, v, "cri-sandboxer-podnet-noopts-"+v.name, criInstall{
			shim: shimUnderTest(t), runtimeType: runtimeUnderTest(), sandboxer: true, noPauseImage: true, sandboxerNoOptions: true,
		})
		testCRIPodNetwork(t, sandboxerEnvOn(t, d))
	})
}

// sandboxer22StartError is how containerd 2.2 fails StartContainer in a
// shim sandboxer's pod whose handler has an options table.
const sandboxer22StartError = `failed to create containerd task: failed to get runtime v2 options: ` +
	`can't unmarshal type "runtimeoptions.v1.Options" to output "containerd.runc.v1.Options"`
