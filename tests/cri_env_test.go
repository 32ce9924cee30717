package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criEnv is one test's view of the CRI daemon: a context bounding its
// calls, and the pods it ran, which its cleanup removes (checking each
// for leftovers) before it checks that no shim of the daemon survives.
type criEnv struct {
	t    *testing.T
	d    *criDaemon
	ctx  context.Context // carries the k8s.io namespace for containerd client calls
	pods *[]*criPod      // shared with sub-envs
	// handler is the one runPod runs pods with: d.handler, or
	// d.sandboxerHandler for a pod without a pause container
	// (newSandboxerEnv).
	handler string
}

func newCRIEnv(t *testing.T) *criEnv {
	t.Helper()
	return newCRIEnvOn(t, criDaemonFor(t))
}

// newCRIEnvOn is newCRIEnv on a CRI daemon of the test's own.
func newCRIEnvOn(t *testing.T, d *criDaemon) *criEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), criNamespace), testTimeout)
	e := &criEnv{t: t, d: d, ctx: ctx, pods: new([]*criPod), handler: d.handler}
	logStart := d.logSize()
	t.Cleanup(func() {
		e.cleanup()
		cancel()
		if t.Failed() {
			t.Log(d.logTail(logStart, 64<<10))
		}
	})
	return e
}

// sub returns e for use inside subtest t.
func (e *criEnv) sub(t *testing.T) *criEnv {
	c := *e
	c.t = t
	return &c
}

// cleanup removes the pods the test left running, then requires that no
// shim of the daemon is left and removes the run's empty cgroup root.
func (e *criEnv) cleanup() {
	t := e.t
	for _, p := range *e.pods {
		if !p.removed {
			p.e.t = t
			p.remove()
		}
	}
	if shims := pollShimsGone(e.d.daemon, "", 20*time.Second); len(shims) > 0 {
		t.Errorf("CRI daemon's shims still running 20s after the test's pods were removed: %v", describe(shims))
		killTree(shims)
	}
	reapShims()
	if z := strayZombies(nil); len(z) > 0 {
		t.Errorf("zombies left: %v", z)
	}
	removeCgroupDirs(e.d.cgroupRoot)
}

// criPod is a pod sandbox run through CRI.
type criPod struct {
	e      *criEnv
	id     string
	name   string
	config *runtimeapi.PodSandboxConfig
	// containers are the ids CreateContainer returned, pause excluded.
	containers []string
	// shimSocket is the pod shim's socket, read from the pause task's
	// bundle (the sandbox's bundle, for a sandboxer pod); it must be gone
	// once the pod is.
	shimSocket string
	// sandboxer: the pod runs with the shim sandboxer's handler, without
	// a pause container: the shim's pod holder is the pod
	// (cri_sandboxer_test.go).
	sandboxer bool
	removed   bool
}

// podOption adjusts a pod's config before RunPodSandbox.
type podOption func(*runtimeapi.PodSandboxConfig)

// withSharedPID puts the pod's containers in one PID namespace, the
// pause process's (shareProcessNamespace in a pod spec).
func withSharedPID(c *runtimeapi.PodSandboxConfig) {
	c.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
}

// runPod runs a host-network pod named name with the suite's handler, its
// logs in a fresh directory and its cgroup below the run's cgroup root.
func (e *criEnv) runPod(name string, opts ...podOption) *criPod {
	e.t.Helper()
	p, err := e.runPodWith(e.handler, e.podConfig(name, opts...))
	if err != nil {
		if e.handler != "" && e.handler == e.d.sandboxerHandler {
			criNotImplemented(e.t, errors.Unwrap(err), "RunPodSandbox with the shim sandboxer (the sandbox API)")
		}
		e.t.Fatal(err)
	}
	return p
}

// podConfig is the config runPod gives pod name: host network, its logs
// in a fresh directory, its cgroup below the run's cgroup root.
func (e *criEnv) podConfig(name string, opts ...podOption) *runtimeapi.PodSandboxConfig {
	e.t.Helper()
	uid := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	logDir := filepath.Join(e.d.logRoot, uid)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: "shimtest-" + suite.runID},
		LogDirectory: logDir,
		Labels:       map[string]string{"shimtest-run": suite.runID},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: e.d.cgroupRoot + "/pod-" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_NODE,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	for _, o := range opts {
		o(cfg)
	}
	return cfg
}

// runPodWith runs the pod of cfg with handler. The pod is the test's to
// clean up from then on; when RunPodSandbox fails there is none.
func (e *criEnv) runPodWith(handler string, cfg *runtimeapi.PodSandboxConfig) (*criPod, error) {
	e.t.Helper()
	name := cfg.Metadata.Name
	resp, err := e.d.rt.RunPodSandbox(e.ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: handler})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox %s (handler %q): %w", name, handler, err)
	}
	p := &criPod{e: e, id: resp.PodSandboxId, name: name, config: cfg}
	p.sandboxer = handler != "" && handler == e.d.sandboxerHandler
	*e.pods = append(*e.pods, p)
	bundle := e.bundleDir(p.id)
	if p.sandboxer {
		bundle = e.sandboxBundleDir(p.id)
	}
	if address, _, err := shimAddress(bundle); err != nil {
		e.t.Errorf("pod %s: %v", name, err)
	} else {
		p.shimSocket = strings.TrimPrefix(address, "unix://")
	}
	return p, nil
}

// bundleDir is the task bundle of container (or sandbox) id.
func (e *criEnv) bundleDir(id string) string {
	return filepath.Join(e.d.state, "io.containerd.runtime.v2.task", criNamespace, id)
}

// ctrOption adjusts a container's config before CreateContainer.
type ctrOption func(*runtimeapi.ContainerConfig)

// create creates container name in the pod from the busybox image,
// logging to <pod log dir>/<name>.log.
func (p *criPod) create(name string, args []string, opts ...ctrOption) string {
	e := p.e
	e.t.Helper()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: imageRef},
		Command:  args,
		LogPath:  name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: p.config.Linux.SecurityContext.NamespaceOptions,
			},
		},
	}
	for _, o := range opts {
		o(cfg)
	}
	resp, err := e.d.rt.CreateContainer(e.ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.id, Config: cfg, SandboxConfig: p.config,
	})
	if err != nil {
		e.t.Fatalf("CreateContainer %s in pod %s: %v", name, p.name, err)
	}
	p.containers = append(p.containers, resp.ContainerId)
	return resp.ContainerId
}

// run is create then StartContainer.
func (p *criPod) run(name string, args []string, opts ...ctrOption) string {
	p.e.t.Helper()
	id := p.create(name, args, opts...)
	p.e.start(id)
	return id
}

// logPath is the CRI log file of container name.
func (p *criPod) logPath(name string) string {
	return filepath.Join(p.config.LogDirectory, name+".log")
}

func (e *criEnv) start(id string) {
	e.t.Helper()
	if _, err := e.d.rt.StartContainer(e.ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		e.t.Fatalf("StartContainer %s: %v", id, err)
	}
}

// status returns CRI's ContainerStatus of id.
func (e *criEnv) status(id string) *runtimeapi.ContainerStatus {
	e.t.Helper()
	resp, err := e.d.rt.ContainerStatus(e.ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp.GetStatus()
}

// waitState polls ContainerStatus until id is in state, failing after
// timeout; it returns the status it saw last.
func (e *criEnv) waitState(id string, state runtimeapi.ContainerState, timeout time.Duration) *runtimeapi.ContainerStatus {
	e.t.Helper()
	var st *runtimeapi.ContainerStatus
	if !pollUntil(timeout, func() bool {
		st = e.status(id)
		return st.GetState() == state
	}) {
		e.t.Fatalf("container %s: state %v after %v, want %v (status %v)", id, st.GetState(), timeout, state, st)
	}
	return st
}

// stopContainer calls StopContainer with a grace period of timeout
// seconds and returns how long it took.
func (e *criEnv) stopContainer(id string, timeout int64) time.Duration {
	e.t.Helper()
	began := time.Now()
	if _, err := e.d.rt.StopContainer(e.ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
		e.t.Fatalf("StopContainer %s (timeout %ds): %v", id, timeout, err)
	}
	return time.Since(began)
}

func (e *criEnv) removeContainer(id string) {
	e.t.Helper()
	if _, err := e.d.rt.RemoveContainer(e.ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		e.t.Fatalf("RemoveContainer %s: %v", id, err)
	}
}

// taskPid returns the pid of the init process of container (or sandbox)
// id, from containerd's task service.
func (e *criEnv) taskPid(id string) int {
	e.t.Helper()
	c, err := e.d.client.LoadContainer(e.ctx, id)
	if err != nil {
		e.t.Fatalf("load container %s: %v", id, err)
	}
	task, err := c.Task(e.ctx, nil)
	if err != nil {
		e.t.Fatalf("task of container %s: %v", id, err)
	}
	return int(task.Pid())
}

// shimOf returns the shim serving container (or sandbox) id: the parent
// of its init process (of a sandboxer pod's id, its holder), which must
// run the shim binary the daemon's handler names from its bin directory
// (for a drop-in, this shim under the runtime_path or the runc shim's
// name).
func (e *criEnv) shimOf(id string) int {
	e.t.Helper()
	var pid int
	if p := e.sandboxerPod(id); p != nil {
		pid = p.holderPid()
	} else {
		pid = e.taskPid(id)
	}
	ppid := parentOf(pid)
	want := e.d.shimExe
	if got := exeOf(ppid); got != want {
		e.t.Fatalf("container %s: parent of init pid %d is pid %d running %q, want the shim %s", id, pid, ppid, got, want)
	}
	return ppid
}

// remove stops and removes the pod (StopPodSandbox, RemovePodSandbox)
// and fails the test if anything of it remains: see leftovers.
func (p *criPod) remove() {
	e := p.e
	e.t.Helper()
	if p.removed {
		return
	}
	p.removed = true
	ids := append([]string{p.id}, p.containers...)
	var pids []int
	for _, id := range ids {
		if pid := e.taskPidIfAny(id); pid > 0 {
			pids = append(pids, pid, parentOf(pid))
		}
	}
	if p.sandboxer {
		// No container for the pod's id: its holder, and every process
		// of the daemon's bin started for the pod (the shim; a holder
		// that is the shim re-executed).
		if pid := p.holderPidIfAny(); pid > 0 {
			pids = append(pids, pid)
		}
		pids = append(pids, e.d.shimPids(p.id)...)
	}
	if _, err := e.d.rt.StopPodSandbox(e.ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		e.t.Errorf("StopPodSandbox %s: %v", p.name, err)
	}
	if _, err := e.d.rt.RemovePodSandbox(e.ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		e.t.Errorf("RemovePodSandbox %s: %v", p.name, err)
	}
	var left []string
	if !pollUntil(20*time.Second, func() bool {
		reapShims()
		left = p.leftovers(ids, pids)
		return len(left) == 0
	}) {
		e.t.Errorf("pod %s: left behind 20s after RemovePodSandbox:\n  %s", p.name, strings.Join(left, "\n  "))
	}
	removeCgroupDirs(p.config.Linux.CgroupParent)
}

// taskPidIfAny is taskPid, or 0 when id has no task (any more).
func (e *criEnv) taskPidIfAny(id string) int {
	c, err := e.d.client.LoadContainer(e.ctx, id)
	if err != nil {
		return 0
	}
	task, err := c.Task(e.ctx, nil)
	if err != nil {
		return 0
	}
	return int(task.Pid())
}

// criNotImplemented skips t (see skipIfNotImplemented) when err, a CRI
// gRPC error, carries NotImplemented from this shim.
func criNotImplemented(t *testing.T, err error, what string) {
	t.Helper()
	skipIfNotImplemented(t, errgrpc.ToNative(err), what)
}

// removeCgroupDirs removes path (a cgroup path such as /a/b) from every
// v1 hierarchy and the unified one, children first; only empty cgroups
// can be removed, so a cgroup still in use stays (and is reported by the
// pod's leftover check).
func removeCgroupDirs(path string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, root := range roots {
		dir := filepath.Join(root, path)
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			_ = os.Remove(d)
		}
	}
}
