package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/cri"
)

const (
	// criNamespace is the containerd namespace the CRI plugin keeps
	// everything in; images must be imported there.
	criNamespace = cri.Namespace
	// pauseImageRef is the pod sandbox image, built by the suite (never
	// pulled) and named in the CRI config.
	pauseImageRef = "localhost/shimtest/pause:1"
	// noRegistry is where every registry host points: a closed port on
	// loopback, so a pull the suite did not mean fails at once instead of
	// leaving the machine.
	noRegistry = "http://127.0.0.1:9"
)

// criConfigDir holds the files shipped for users (the CRI runtime tables
// and the RuntimeClass); the suite loads them as they are.
const criConfigDir = "cri"

// criDaemon is a private containerd with the CRI plugin enabled: its own
// root, state, sockets and config like every daemon of the suite (it is
// registered in suite.daemons, so TestMain tears it down and reports its
// leaks), plus the CRI clients, the handler read from the shipped
// RuntimeClass and where pods' logs and cgroups go.
type criDaemon struct {
	*daemon
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	images runtimeapi.ImageServiceClient
	// handler is the runtime handler pods run with: the shipped one, read
	// from cri/runtimeclass.yaml, with the shipped table's options; with
	// a drop-in, "" (the default, runc), as for a pod with no RuntimeClass.
	handler string
	// runtimeType is the handler's runtime_type, which containerd
	// records as the runtime of every container of a pod.
	runtimeType string
	// sandboxerHandler is the handler of pods without a pause container,
	// read from cri/runtimeclass-shim-sandboxer.yaml, whose table
	// (cri/containerd-2.x-shim-sandboxer.toml, sandboxer = "shim", the
	// same runtime_type) the daemon also has; "" on 1.6 and in the
	// drop-in lanes, which do not configure it (cri_sandboxer_test.go).
	sandboxerHandler string
	// shimExe is the executable every pod's shim runs, in bin.
	shimExe string
	logRoot string // pods' log directories are made below it
	// cgroupRoot is the cgroup parent of every pod of this run (a path
	// below each v1 hierarchy's root); pods get a child of it each.
	cgroupRoot string
}

// criSuite starts one CRI daemon per containerd version, on first use.
var criSuite = struct {
	mu    sync.Mutex
	slots map[string]*criSlot // by daemonVersion.name; guarded by mu
}{slots: map[string]*criSlot{}}

type criSlot struct {
	once sync.Once
	d    *criDaemon
	err  error
}

// criDaemonFor returns the CRI daemon of the version SHIM_TEST_CONTAINERD
// names, starting it on first use.
func criDaemonFor(t *testing.T) *criDaemon {
	t.Helper()
	requireRoot(t)
	v := defaultDaemonVersion(t)
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	inst := criInstall{shim: shimUnderTest(t), runtimeType: runtimeUnderTest()}
	var err error
	if inst.dropIn, err = dropInMode(); err != nil {
		t.Fatal(err)
	}
	if inst.dropIn != noDropIn {
		inst.runtimeType = runcRuntime
	}
	// The drop-in lanes test the drop-in tables only; on 2.2 a pod of the
	// suite's (host network) with the shim sandboxer crashes containerd
	// (sandboxerUnsupported), which would take the lane's daemon down.
	inst.sandboxer = inst.dropIn == noDropIn && sandboxerUnsupported(v) == ""
	if inst.dropIn == dropInRuntimePath && v.legacy() {
		t.Skip(runtimePathIgnored)
	}
	criSuite.mu.Lock()
	slot, ok := criSuite.slots[v.name]
	if !ok {
		slot = &criSlot{}
		criSuite.slots[v.name] = slot
	}
	criSuite.mu.Unlock()
	slot.once.Do(func() {
		archive := imageArchive(t)
		slot.d, slot.err = startCRIDaemon(v, "cri-"+v.name, inst, archive)
	})
	if slot.err != nil {
		t.Fatal(slot.err)
	}
	return slot.d
}

// criInstall is how a CRI daemon serves pods: the shims in its bin
// directory and the handler's runtime table.
type criInstall struct {
	shim        string // this shim's binary; "" when the runtime under test is the runc shim
	runtimeType string // the handler's runtime_type
	dropIn      dropIn // whether and how shim takes the runc shim's place
	// sandboxer: the config also has the shim sandboxer's handler
	// (cri/containerd-2.x-shim-sandboxer.toml, runtime_type
	// runtimeType); containerd 2.x only (servesSandboxer).
	sandboxer bool
	// noPauseImage: the pause image is not imported (a daemon whose pods
	// all run with the shim sandboxer, which needs none).
	noPauseImage bool
	// sandboxerNoOptions: the shim sandboxer's table goes in without its
	// options table, as the README tells containerd 2.2 users to write it
	// (sandboxer22StartError).
	sandboxerNoOptions bool
}

// servesSandboxer reports whether a CRI daemon of v installed as inst
// has the shim sandboxer's handler: 1.6 has no sandbox API.
func servesSandboxer(v daemonVersion, inst criInstall) bool {
	return inst.sandboxer && !v.legacy()
}

// startCRIDaemon starts containerd v with the CRI plugin, the shipped
// runtime table for inst (runtimeTable) and the local pause image as the
// sandbox image, imports both images and waits until CRI reports the
// runtime ready and sees the images. name is its key in suite.daemons.
func startCRIDaemon(v daemonVersion, name string, inst criInstall, busybox []byte) (cd *criDaemon, err error) {
	dir, err := os.MkdirTemp("", "shimtest-cri-")
	if err != nil {
		return nil, err
	}
	// A container with a user namespace (cri_userns_test.go) runs as an
	// unprivileged host id, which runc init must be able to search the
	// path to its rootfs (in the bundle below state) with, as containerd's
	// own /run/containerd is 0711; MkdirTemp makes it 0700.
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	d := &daemon{
		version: v,
		dir:     dir,
		bin:     filepath.Join(dir, "bin"),
		daemonPaths: daemonPaths{
			root:         filepath.Join(dir, "root"),
			state:        filepath.Join(dir, "state"),
			address:      filepath.Join(dir, "containerd.sock"),
			ttrpcAddress: filepath.Join(dir, "containerd.sock.ttrpc"),
			opt:          filepath.Join(dir, "opt"),
		},
		configPath: filepath.Join(dir, "config.toml"),
		logPath:    filepath.Join(dir, "containerd.log"),
	}
	// From here on TestMain's teardown stops it and reports what it left.
	suite.mu.Lock()
	suite.daemons[name] = &daemonSlot{d: d}
	suite.mu.Unlock()
	cd = &criDaemon{
		daemon:      d,
		runtimeType: inst.runtimeType,
		logRoot:     filepath.Join(dir, "pods"),
		cgroupRoot:  "/shimtest-cri-" + suite.runID,
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("start containerd %s with CRI in %s: %w\n%s", v.name, dir, err, d.logTail(0, 16<<10))
		}
	}()
	if inst.dropIn == noDropIn {
		if cd.handler, err = cri.RuntimeClassHandler(filepath.Join(criConfigDir, "runtimeclass.yaml")); err != nil {
			return cd, err
		}
	}
	if servesSandboxer(v, inst) {
		if cd.sandboxerHandler, err = cri.RuntimeClassHandler(filepath.Join(criConfigDir, sandboxerRuntimeClass)); err != nil {
			return cd, err
		}
	}
	for _, p := range []string{d.bin, cd.logRoot, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "net.d")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return cd, err
		}
	}
	if cd.shimExe, err = installShims(v, inst, d.bin); err != nil {
		return cd, err
	}
	if err := writeCNIStub(filepath.Join(dir, "cni")); err != nil {
		return cd, err
	}
	hostsDir := filepath.Join(dir, "certs.d")
	if err := cri.WriteNoRegistryHosts(hostsDir, noRegistry); err != nil {
		return cd, err
	}
	cfg, err := criConfig(v, inst, d.daemonPaths, dir, hostsDir)
	if err != nil {
		return cd, err
	}
	if err := os.WriteFile(d.configPath, []byte(cfg), 0o644); err != nil {
		return cd, err
	}
	if err := d.launch(); err != nil {
		return cd, err
	}
	cd.conn, err = grpc.NewClient("unix://"+d.address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return cd, err
	}
	cd.rt = runtimeapi.NewRuntimeServiceClient(cd.conn)
	cd.images = runtimeapi.NewImageServiceClient(cd.conn)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cri.WaitRuntimeReady(ctx, cd.rt); err != nil {
		return cd, err
	}
	imgs := []struct {
		ref     string
		archive []byte
	}{{imageRef, busybox}}
	if !inst.noPauseImage {
		// $SHIM_TEST_PAUSE names a pause binary built beforehand (the
		// cgroup v2 guest of tests/vm has no Go toolchain); go test runs
		// in the package directory, below the module root.
		pause, err := cri.PauseArchive(filepath.Join(dir, "pause-image"), os.Getenv("SHIM_TEST_PAUSE"), "..", pauseImageRef)
		if err != nil {
			return cd, err
		}
		imgs = append(imgs, struct {
			ref     string
			archive []byte
		}{pauseImageRef, pause})
	}
	for _, img := range imgs {
		if err := cri.ImportImage(ctx, cd.client, cd.images, snapshotter, img.ref, img.archive); err != nil {
			return cd, err
		}
	}
	return cd, nil
}

// installShims fills bin, first on the daemon's PATH, for inst and
// returns the executable the pods' shims run: this shim under the runc
// shim's name with a PATH drop-in (the runc shim is not there then),
// else a copy of v's runc shim and this shim under its own name.
func installShims(v daemonVersion, inst criInstall, bin string) (string, error) {
	runcName := filepath.Join(bin, shimBinaryName(runcRuntime))
	if inst.dropIn == dropInPATH {
		return runcName, copyExecutable(inst.shim, runcName)
	}
	if err := copyExecutable(v.runcShim(), runcName); err != nil {
		return "", err
	}
	own := filepath.Join(bin, shimBinaryName(sandboxRuntime))
	if inst.shim != "" {
		if err := copyExecutable(inst.shim, own); err != nil {
			return "", err
		}
		if err := installExecHelper(inst.shim, bin); err != nil {
			return "", err
		}
	}
	if inst.dropIn == dropInRuntimePath {
		return own, nil
	}
	return filepath.Join(bin, shimBinaryName(inst.runtimeType)), nil
}

// criConfig renders the daemon's config.toml: private paths, the CRI
// settings the suite needs (streaming on loopback, the local pause image,
// registries pointing nowhere, restrict_oom_score_adj since root here
// lacks CAP_SYS_RESOURCE), then the shipped runtime table for v's schema
// and inst (runtimeTable); on 2.x, a clone of that table per runc
// (addRuncHandlers), for the user namespace tests.
func criConfig(v daemonVersion, inst criInstall, p daemonPaths, dir, hostsDir string) (string, error) {
	snippetFile, snippet, err := runtimeTable(v, inst, filepath.Join(dir, "bin"))
	if err != nil {
		return "", err
	}
	cniBin, cniConf := filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "net.d")
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\n", v.configVersion)
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", p.root, p.state)
	if v.legacy() {
		fmt.Fprintf(&b, "disabled_plugins = [%q, %q, %q, %q]\n\n",
			"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
			"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs")
	} else {
		// NRI's socket path is global: two daemons would fight over it.
		fmt.Fprintf(&b, "disabled_plugins = [%q, %q, %q, %q, %q, %q]\n\n",
			"io.containerd.nri.v1.nri", "io.containerd.snapshotter.v1.blockfile",
			"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
			"io.containerd.snapshotter.v1.erofs", "io.containerd.snapshotter.v1.zfs")
	}
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n[ttrpc]\n  address = %q\n\n", p.address, p.ttrpcAddress)
	fmt.Fprintf(&b, "[debug]\n  level = \"debug\"\n\n[plugins]\n")
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %q\n", p.opt)
	if v.legacy() {
		const cri = `plugins."io.containerd.grpc.v1.cri"`
		fmt.Fprintf(&b, "  [%s]\n", cri)
		fmt.Fprintf(&b, "    sandbox_image = %q\n", pauseImageRef)
		fmt.Fprintf(&b, "    stream_server_address = \"127.0.0.1\"\n    stream_server_port = \"0\"\n")
		fmt.Fprintf(&b, "    disable_tcp_service = true\n    restrict_oom_score_adj = true\n")
		fmt.Fprintf(&b, "    [%s.cni]\n      bin_dir = %q\n      conf_dir = %q\n", cri, cniBin, cniConf)
		fmt.Fprintf(&b, "    [%s.registry]\n      config_path = %q\n", cri, hostsDir)
		fmt.Fprintf(&b, "    [%s.containerd]\n      snapshotter = %q\n", cri, snapshotter)
		// 1.6 replaces its default runtimes map with the configured one
		// and refuses to load when default_runtime_name ("runc") is not
		// in it. The drop-in table is that runtime.
		if inst.dropIn == noDropIn {
			fmt.Fprintf(&b, "      [%s.containerd.runtimes.runc]\n        runtime_type = %q\n", cri, runcRuntime)
		}
	} else {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\"]\n")
		fmt.Fprintf(&b, "    stream_server_address = \"127.0.0.1\"\n    stream_server_port = \"0\"\n")
		fmt.Fprintf(&b, "    disable_tcp_service = true\n")
		const images = `plugins."io.containerd.cri.v1.images"`
		fmt.Fprintf(&b, "  [%s]\n    snapshotter = %q\n", images, snapshotter)
		fmt.Fprintf(&b, "    [%s.pinned_images]\n      sandbox = %q\n", images, pauseImageRef)
		fmt.Fprintf(&b, "    [%s.registry]\n      config_path = %q\n", images, hostsDir)
		const rt = `plugins."io.containerd.cri.v1.runtime"`
		fmt.Fprintf(&b, "  [%s]\n    restrict_oom_score_adj = true\n", rt)
		fmt.Fprintf(&b, "    [%s.cni]\n      bin_dirs = [%q]\n      conf_dir = %q\n", rt, cniBin, cniConf)
	}
	b.WriteString("\n# ---- " + snippetFile + " (shipped in tests/cri) ----\n")
	b.WriteString(snippet)
	if v.legacy() {
		return b.String(), nil
	}
	// 2.x: a handler per runc for the user namespace tests.
	extra, err := addRuncHandlers(snippet, v, handlerRuncs(), filepath.Join(dir, "bin", shimBinaryName(sandboxRuntime)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", snippetFile, err)
	}
	b.WriteString(extra)
	if servesSandboxer(v, inst) {
		// The shim sandboxer's handler, after the clones (which are made
		// of the one table above only).
		table, err := runtimeSnippet(filepath.Join(criConfigDir, sandboxerTableFile), inst.runtimeType)
		if err == nil && inst.sandboxerNoOptions {
			table, err = withoutOptions(table, v)
		}
		if err != nil {
			return "", err
		}
		b.WriteString("\n# ---- " + sandboxerTableFile + " (shipped in tests/cri) ----\n")
		b.WriteString(table)
	}
	return b.String(), nil
}

// The shipped tables' settings the suite changes.
const (
	shippedRuntimeType = `runtime_type = "io.containerd.sandbox.v2"`
	// shippedRuntimePath is the drop-in tables' runtime_path: where
	// `make install` puts the shim.
	shippedRuntimePath = `runtime_path = "/usr/local/bin/containerd-shim-sandbox-v2"`
)

// runtimeTable returns the shipped runtime table for v's schema and inst
// and its file name, with the one change the suite makes: its own
// table's runtime_type names inst.runtimeType; a runtime_path drop-in's
// runtime_path names this shim's copy in bin; a PATH drop-in's table has
// no runtime_path (containerd finds containerd-shim-runc-v2 on its PATH).
func runtimeTable(v daemonVersion, inst criInstall, bin string) (file, table string, err error) {
	file = "containerd-2.x"
	if v.legacy() {
		file = "containerd-1.6"
	}
	if inst.dropIn != noDropIn {
		file += "-dropin"
	}
	file += ".toml"
	path := filepath.Join(criConfigDir, file)
	switch inst.dropIn {
	case dropInRuntimePath:
		table, err = replaceLine(path, shippedRuntimePath, fmt.Sprintf("runtime_path = %q", filepath.Join(bin, shimBinaryName(sandboxRuntime))))
	case dropInPATH:
		table, err = replaceLine(path, shippedRuntimePath+"\n", "")
	default:
		table, err = runtimeSnippet(path, inst.runtimeType)
		if err == nil && !v.legacy() && inst.runtimeType == sandboxRuntime {
			table, err = withEngineOption(path, table)
		}
	}
	return file, table, err
}

// runtimeSnippet reads a shipped runtime table and points its
// runtime_type at runtime, which must replace exactly one line.
func runtimeSnippet(path, runtime string) (string, error) {
	return replaceLine(path, shippedRuntimeType, fmt.Sprintf("runtime_type = %q", runtime))
}

// replaceLine reads the file at path and replaces old, which must occur
// exactly once, with new.
func replaceLine(path, old, new string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if n := strings.Count(string(data), old); n != 1 {
		return "", fmt.Errorf("%s: %d times %q, want exactly one", path, n, old)
	}
	return strings.Replace(string(data), old, new, 1), nil
}
