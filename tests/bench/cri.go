package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criMode is one way of running a CRI pod that section 10 compares.
type criMode struct {
	label   string // column heading
	handler string // RunPodSandbox's RuntimeHandler
	// sandboxer: no pause container; the pod is this shim's pod holder,
	// a child of the shim whose argv[0] is holderArgv0.
	sandboxer bool
	shim      string // file name, in the CRI daemon's bin, of the pod's shim
}

// holderArgv0 is the argv[0] of this shim's pod holder (sandbox/holder.go).
const holderArgv0 = "pod-holder"

// criModes are the columns, in order: this shim without and with a pause
// container, and the reference, containerd-shim-runc-v2 with one. Pods
// alternate 1 2 3 1 2 3.
func (cd *criDaemon) criModes() []criMode {
	return []criMode{
		{label: "sandbox-v2 no pause", handler: cd.sandboxerHandler, sandboxer: true, shim: runtimes[0].binary},
		{label: "sandbox-v2 pause", handler: cd.pauseHandler, shim: runtimes[0].binary},
		{label: "runc-v2 pause", handler: runcHandler, shim: runtimes[1].binary},
	}
}

// criPod is a pod of the section: its sandbox and its one container.
type criPod struct {
	id   string
	ctr  string // the container's id, "" until created
	cfg  *runtimeapi.PodSandboxConfig
	mode criMode
}

// podProcs are a pod's own processes: its shim, and the pause process
// or this shim's pod holder. The app container's processes are not
// among them; they are the same in every mode.
type podProcs struct {
	shim int
	pod  int
}

// criPhases are the timed CRI calls of a pod's start, in order; their
// sum is the figure.
var criPhases = []string{"RunPodSandbox", "CreateContainer", "StartContainer"}

// criSection measures section 10 on a CRI daemon of its own: per round,
// a pod of each mode started (timed), checked and removed; then, per
// mode alone, -cri-pods pods with one `sleep` container each and the
// memory of their shims and pause processes or holders. The modes'
// memory is read one mode at a time: modes 1 and 2 run the same shim
// binary, 2 and 3 the same pause binary, and pods of two modes alive
// together would split those pages between them.
func (b *bench) criSection(ctx context.Context) error {
	// The CRI namespace, for the containerd client and in place of the
	// bench's on every call's metadata.
	ctx = namespaces.WithNamespace(ctx, criNamespace)
	dir := filepath.Join(b.dir, "cri")
	shim, err := filepath.Abs(b.opts.shim)
	if err != nil {
		return err
	}
	b.cri, err = startCRIDaemon(ctx, dir, b.opts.containerd, map[string]string{
		runtimes[0].binary: shim,
		runtimes[1].binary: filepath.Join(b.opts.containerd, runtimes[1].binary),
	}, b.rootfs, b.opts.pause, "/"+b.ns+"/cri")
	if err != nil {
		return fmt.Errorf("start the CRI daemon in %s: %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "bench: CRI containerd in %s\n", dir)
	cd := b.cri
	cd.sockets = &b.sockets
	modes := cd.criModes()
	rep := &criReport{
		Title: fmt.Sprintf("10. cri: through containerd's CRI plugin, host-network pods, modes alternating 1 2 3; n %d per mode, memory with %d pods of one mode at a time",
			b.opts.n, b.opts.criPods),
		Pods: b.opts.criPods,
	}
	for _, m := range modes {
		rep.Modes = append(rep.Modes, m.label)
		rep.Handlers = append(rep.Handlers, fmt.Sprintf("%s (%s)", m.handler, m.shim))
	}
	if err := b.criLatency(ctx, modes, rep); err != nil {
		return err
	}
	if err := b.criMemory(ctx, modes, rep); err != nil {
		return err
	}
	b.rep.CRI = rep
	problems := cd.teardown()
	b.cri = nil
	if len(problems) > 0 {
		return fmt.Errorf("CRI daemon teardown: %s", strings.Join(problems, "; "))
	}
	return nil
}

// criLatency runs warm-up plus -n rounds of one pod per mode: the start
// is timed, the pod's processes checked, then its removal timed apart
// and the shim awaited, so that no pod overlaps the next one's start.
func (b *bench) criLatency(ctx context.Context, modes []criMode, rep *criReport) error {
	cd := b.cri
	starts := make([]phased, len(modes))
	removes := make([][]float64, len(modes))
	for round := range b.opts.warmup + b.opts.n {
		keep := round >= b.opts.warmup
		for i, m := range modes {
			p, ds, err := cd.startPod(ctx, m, b.id("cri-lat"))
			if err != nil {
				return err
			}
			if _, err := cd.procsOf(ctx, p); err != nil {
				return err
			}
			t0 := time.Now()
			if err := cd.removePod(ctx, p); err != nil {
				return err
			}
			d := time.Since(t0)
			if err := cd.settle(); err != nil {
				return err
			}
			if keep {
				starts[i].add(ds)
				removes[i] = append(removes[i], ms(d))
			}
		}
	}
	totals := make([][]float64, len(modes))
	for i := range modes {
		totals[i] = starts[i].total
	}
	rep.latency(strings.Join(criPhases, " + "), "ms", totals)
	for j, name := range criPhases {
		phase := make([][]float64, len(modes))
		for i := range modes {
			phase[i] = starts[i].phases[j]
		}
		rep.latency("· "+name, "ms", phase)
	}
	rep.latency("StopPodSandbox + RemovePodSandbox (not in the above)", "ms", removes)
	return nil
}

// criMemory starts -cri-pods pods of each mode, one mode at a time, lets
// them settle and reads their processes' memory.
func (b *bench) criMemory(ctx context.Context, modes []criMode, rep *criReport) error {
	cd := b.cri
	n := b.opts.criPods
	shimPSS, shimUSS := make([]float64, len(modes)), make([]float64, len(modes))
	podPSS, podUSS := make([]float64, len(modes)), make([]float64, len(modes))
	for i, m := range modes {
		var pods []*criPod
		for range n {
			p, _, err := cd.startPod(ctx, m, b.id("cri-mem"))
			if err != nil {
				return err
			}
			pods = append(pods, p)
		}
		var all []int
		var procs []podProcs
		for _, p := range pods {
			pp, err := cd.procsOf(ctx, p)
			if err != nil {
				return err
			}
			procs = append(procs, pp)
			all = append(all, pp.shim, pp.pod)
		}
		// Read once settled, as sections 7 and 8 are (storm.go).
		if _, _, err := b.settleRSS(ctx, [][]int{all}, []string{m.label}, "of the pods"); err != nil {
			return err
		}
		shims := map[int]bool{}
		var shim, pod usage
		for j, p := range pods {
			pp := procs[j]
			shims[pp.shim] = true
			if err := addRollup(&shim, pp.shim); err != nil {
				return fmt.Errorf("%s: shim of pod %s: %w", m.label, p.id, err)
			}
			if err := addRollup(&pod, pp.pod); err != nil {
				return fmt.Errorf("%s: pause or holder of pod %s: %w", m.label, p.id, err)
			}
		}
		if len(shims) != n {
			return fmt.Errorf("%s: %d pods are served by %d shims, want one each", m.label, n, len(shims))
		}
		per := func(v uint64) float64 { return float64(v) / float64(n) / mib }
		shimPSS[i], shimUSS[i] = per(shim.pss), per(shim.uss)
		podPSS[i], podUSS[i] = per(pod.pss), per(pod.uss)
		for _, p := range pods {
			if err := cd.removePod(ctx, p); err != nil {
				return err
			}
		}
		if err := cd.settle(); err != nil {
			return err
		}
	}
	sum := func(x, y []float64) []float64 {
		s := make([]float64, len(x))
		for i := range x {
			s[i] = x[i] + y[i]
		}
		return s
	}
	rep.value("PSS per pod: shim + pause or holder", "MiB", sum(shimPSS, podPSS))
	rep.value("USS per pod: shim + pause or holder", "MiB", sum(shimUSS, podUSS))
	rep.value("· shim PSS", "MiB", shimPSS)
	rep.value("· shim USS", "MiB", shimUSS)
	rep.value("· pause or pod holder PSS", "MiB", podPSS)
	rep.value("· pause or pod holder USS", "MiB", podUSS)
	return nil
}

// addRollup adds pid's memory (smaps_rollup) to u.
func addRollup(u *usage, pid int) error {
	m, err := readRollup(pid)
	if err != nil {
		return err
	}
	u.procs++
	u.rss += m.rss
	u.pss += m.pss
	u.uss += m.uss
	return nil
}

// startPod runs a host-network pod of mode m named name, then creates
// and starts its `sleep` container, and returns the duration of each of
// criPhases. A pod that RunPodSandbox made stays CRI's, which teardown
// removes if this fails later.
func (cd *criDaemon) startPod(ctx context.Context, m criMode, name string) (*criPod, []time.Duration, error) {
	logDir := filepath.Join(cd.logRoot, name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, nil, err
	}
	ns := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
	p := &criPod{mode: m, cfg: &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: name, Namespace: "shimbench"},
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    cd.cgroupRoot + "/" + name,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: ns},
		},
	}}
	ctr := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: imageRef},
		Command:  sleepArgs,
		LogPath:  "app.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       &runtimeapi.LinuxContainerResources{},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: ns},
		},
	}
	sw := startStopwatch()
	run, err := cd.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.cfg, RuntimeHandler: m.handler})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: RunPodSandbox %s (handler %q): %w", m.label, name, m.handler, err)
	}
	sw.lap()
	p.id = run.GetPodSandboxId()
	created, err := cd.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: ctr, SandboxConfig: p.cfg})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: CreateContainer in pod %s: %w", m.label, name, err)
	}
	sw.lap()
	p.ctr = created.GetContainerId()
	if _, err := cd.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.ctr}); err != nil {
		return nil, nil, fmt.Errorf("%s: StartContainer in pod %s: %w", m.label, name, err)
	}
	sw.lap()
	return p, sw.phases, nil
}

// procsOf returns p's shim and pause process or holder, checking that
// the pod is what its mode says: the shim runs the mode's binary from
// bin; the pod process is the pause container's task, or, without one,
// the pid the shim sandboxer reports, a child of the shim named
// holderArgv0; the app container is the same shim's child. It also
// records the shim's socket for teardown.
func (cd *criDaemon) procsOf(ctx context.Context, p *criPod) (podProcs, error) {
	var pp podProcs
	bundle := filepath.Join(cd.state(), "io.containerd.runtime.v2.task", criNamespace, p.id)
	if p.mode.sandboxer {
		st, err := cd.client.SandboxController(sandboxerName).Status(ctx, p.id, false)
		if err != nil {
			return pp, fmt.Errorf("%s: sandbox status of pod %s: %w", p.mode.label, p.id, err)
		}
		pp.pod = int(st.Pid)
		if argv := cmdline(pp.pod); len(argv) == 0 || argv[0] != holderArgv0 {
			return pp, fmt.Errorf("%s: pod %s: pid %d runs %q, want its %s", p.mode.label, p.id, pp.pod, argv, holderArgv0)
		}
		bundle = filepath.Join(cd.state(), "io.containerd.sandbox.controller.v1.shim", criNamespace, p.id)
	} else {
		var err error
		if pp.pod, err = cd.taskPid(ctx, p.id); err != nil {
			return pp, fmt.Errorf("%s: pause of pod %s: %w", p.mode.label, p.id, err)
		}
	}
	if err := cd.sockets.noteBundle(bundle, "CRI "+p.mode.label); err != nil {
		return pp, err
	}
	st, err := readStat(pp.pod)
	if err != nil {
		return pp, fmt.Errorf("%s: pod %s: pid %d: %w", p.mode.label, p.id, pp.pod, err)
	}
	pp.shim = st.ppid
	if want, got := filepath.Join(cd.bin, p.mode.shim), exeOf(pp.shim); got != want {
		return pp, fmt.Errorf("%s: pod %s: parent %d of pid %d runs %q, want the shim %s", p.mode.label, p.id, pp.shim, pp.pod, got, want)
	}
	app, err := cd.taskPid(ctx, p.ctr)
	if err != nil {
		return pp, fmt.Errorf("%s: container of pod %s: %w", p.mode.label, p.id, err)
	}
	if st, err := readStat(app); err != nil || st.ppid != pp.shim {
		return pp, fmt.Errorf("%s: pod %s: container pid %d is not a child of the pod's shim %d (%v, %v)", p.mode.label, p.id, app, pp.shim, st, err)
	}
	return pp, nil
}

// taskPid returns the pid of the init process of container (or pause
// sandbox) id, from containerd's task service; ctx carries the CRI
// namespace.
func (cd *criDaemon) taskPid(ctx context.Context, id string) (int, error) {
	c, err := cd.client.LoadContainer(ctx, id)
	if err != nil {
		return 0, err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return 0, err
	}
	return int(t.Pid()), nil
}

// removePod stops and removes p. Its shim exits after that, on its own
// time: settle waits for it.
func (cd *criDaemon) removePod(ctx context.Context, p *criPod) error {
	if _, err := cd.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id}); err != nil {
		return fmt.Errorf("%s: StopPodSandbox %s: %w", p.mode.label, p.id, err)
	}
	if _, err := cd.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id}); err != nil {
		return fmt.Errorf("%s: RemovePodSandbox %s: %w", p.mode.label, p.id, err)
	}
	return nil
}

// settle waits until every shim of the daemon has exited, once every
// pod is removed, and then removes the pods' empty cgroups (the kubelet
// would: CRI leaves a pod's cgroup parent). A shim still there after
// shimExitTimeout is killed and reported.
func (cd *criDaemon) settle() error {
	left := waitShimsGone(cd.bin, shimExitTimeout)
	if len(left) > 0 {
		desc := describePids(left)
		killTrees(left)
		return fmt.Errorf("CRI shims still running %v after their pods were removed (killed): %s", shimExitTimeout, desc)
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append(hierarchies, "/sys/fs/cgroup") {
		removeEmptyDirs(filepath.Join(h, cd.cgroupRoot))
	}
	return nil
}

// cmdline is pid's argv, nil if it cannot be read.
func cmdline(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(data) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}
