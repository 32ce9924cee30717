package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/cri"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// criPlugins are the plugins of containerd 2.x's CRI, which the bench's
// main daemon disables (ctrd.DisabledPlugins) and the CRI daemon needs.
var criPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
}

// The shipped CRI files (tests/cri, as the end-to-end suite loads them),
// relative to the repository root, where make bench runs.
const (
	criConfigDir = "tests/cri"
	// pauseTable is the runtime table of the "sandbox" handler: this
	// shim, pods with a pause container.
	pauseTable        = "containerd-2.x.toml"
	pauseRuntimeClass = "runtimeclass.yaml"
	// sandboxerTable is the "sandbox-shim" handler's: this shim with
	// sandboxer = "shim", pods without a pause container.
	sandboxerTable        = "containerd-2.x-shim-sandboxer.toml"
	sandboxerRuntimeClass = "runtimeclass-shim-sandboxer.yaml"
	// sandboxerName is the sandbox controller those pods' status is read
	// from: the sandboxer the table names.
	sandboxerName = "shim"
)

// runcHandler is containerd's own default CRI handler (io.containerd.runc.v2,
// its default options), which needs no table: the reference.
const runcHandler = "runc"

const (
	// criNamespace is where the CRI plugin keeps everything; images must
	// be imported there.
	criNamespace = cri.Namespace
	// pauseImageRef is the pod sandbox image: tests/cmd/pause (or
	// -pause), built here, never pulled.
	pauseImageRef = "localhost/shimbench/pause:1"
	// noRegistry is where every registry host points: a closed port on
	// loopback, so a pull nobody meant fails at once instead of leaving
	// the machine.
	noRegistry = "http://127.0.0.1:9"
)

// criDaemon is the CRI section's private containerd 2.4.2: the bench's
// daemon setup (own root, state, sockets, config and log, shim copies in
// its bin) with the CRI plugins on and the shipped runtime tables, in a
// directory of its own below the run's. It lives for the section only.
type criDaemon struct {
	*daemon
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	images runtimeapi.ImageServiceClient
	// pauseHandler and sandboxerHandler are read from the shipped
	// RuntimeClasses.
	pauseHandler     string
	sandboxerHandler string
	logRoot          string // pods' log directories are made below it
	// cgroupRoot is the cgroup parent of every pod (a path below each
	// hierarchy's root): below the run's namespace, which teardown
	// removes.
	cgroupRoot string
	// sockets is the run's record of shim sockets, for teardown.
	sockets *sockets
}

// startCRIDaemon starts the CRI daemon in dir with shims (file name in
// bin -> source) and imports the busybox tree rootfs and the pause image
// (pause: a prebuilt binary, "" to build tests/cmd/pause). The daemon is
// returned also on error, for teardown.
func startCRIDaemon(ctx context.Context, dir, containerdDir string, shims map[string]string, rootfs, pause, cgroupRoot string) (*criDaemon, error) {
	cd := &criDaemon{logRoot: filepath.Join(dir, "pods"), cgroupRoot: cgroupRoot}
	tables, err := cd.shippedTables()
	if err != nil {
		return nil, err
	}
	cniConf := filepath.Join(dir, "cni", "net.d")
	hosts := filepath.Join(dir, "certs.d")
	for _, p := range []string{cd.logRoot, cniConf} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
	}
	if err := cri.WriteNoRegistryHosts(hosts, noRegistry); err != nil {
		return nil, err
	}
	cd.daemon, err = startDaemon(ctx, dir, containerdDir, shims, criConfig(cniConf, hosts)+tables)
	if err != nil {
		return cd, err
	}
	cd.conn, err = grpc.NewClient("unix://"+cd.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return cd, err
	}
	cd.rt = runtimeapi.NewRuntimeServiceClient(cd.conn)
	cd.images = runtimeapi.NewImageServiceClient(cd.conn)

	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := cri.WaitRuntimeReady(ctx, cd.rt); err != nil {
		return cd, err
	}
	var busybox bytes.Buffer
	if _, err := image.WriteArchive(&busybox, rootfs, imageRef); err != nil {
		return cd, err
	}
	pauseArchive, err := cri.PauseArchive(filepath.Join(dir, "pause"), pause, ".", pauseImageRef)
	if err != nil {
		return cd, err
	}
	for ref, archive := range map[string][]byte{imageRef: busybox.Bytes(), pauseImageRef: pauseArchive} {
		if err := cri.ImportImage(ctx, cd.client, cd.images, snapshotter, ref, archive); err != nil {
			return cd, err
		}
	}
	return cd, nil
}

// shippedTables reads the handlers of the shipped RuntimeClasses into cd
// and returns the shipped runtime tables, verbatim, that serve them.
func (cd *criDaemon) shippedTables() (string, error) {
	var err error
	if cd.pauseHandler, err = cri.RuntimeClassHandler(filepath.Join(criConfigDir, pauseRuntimeClass)); err != nil {
		return "", err
	}
	if cd.sandboxerHandler, err = cri.RuntimeClassHandler(filepath.Join(criConfigDir, sandboxerRuntimeClass)); err != nil {
		return "", err
	}
	var tables strings.Builder
	for _, f := range []string{pauseTable, sandboxerTable} {
		data, err := os.ReadFile(filepath.Join(criConfigDir, f))
		if err != nil {
			return "", fmt.Errorf("%w (run from the repository root, as make bench does)", err)
		}
		fmt.Fprintf(&tables, "\n# ---- %s (shipped in %s) ----\n%s", f, criConfigDir, data)
	}
	return tables.String(), nil
}

// criConfig is the CRI plugins' settings: streaming on loopback only,
// the local pause image, registries pointing nowhere, an empty CNI
// directory (every pod uses the host network), and
// restrict_oom_score_adj, since root here lacks CAP_SYS_RESOURCE (as in
// the end-to-end suite's CRI daemons). The runtime tables follow it.
func criConfig(cniConf, hosts string) string {
	var b strings.Builder
	b.WriteString("[plugins.\"io.containerd.grpc.v1.cri\"]\n")
	b.WriteString("  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  disable_tcp_service = true\n")
	const images = `plugins."io.containerd.cri.v1.images"`
	fmt.Fprintf(&b, "[%s]\n  snapshotter = %q\n", images, snapshotter)
	fmt.Fprintf(&b, "  [%s.pinned_images]\n    sandbox = %q\n", images, pauseImageRef)
	fmt.Fprintf(&b, "  [%s.registry]\n    config_path = %q\n", images, hosts)
	const rt = `plugins."io.containerd.cri.v1.runtime"`
	fmt.Fprintf(&b, "[%s]\n  restrict_oom_score_adj = true\n", rt)
	fmt.Fprintf(&b, "  [%s.cni]\n    conf_dir = %q\n", rt, cniConf)
	return b.String()
}

// teardown removes every pod CRI still has (all of them the bench's: the
// daemon is private), stops the daemon and kills any shim of its bin
// still running; it returns what it had to force. Mounts, cgroups and
// the directory go with the run's (bench.teardown).
func (cd *criDaemon) teardown() []string {
	if cd.daemon == nil {
		return nil
	}
	var problems []string
	if cd.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if ids, err := cd.removeAllPods(ctx); err != nil {
			problems = append(problems, fmt.Sprintf("CRI: remove pods left behind %v: %v", ids, err))
		} else if len(ids) > 0 {
			problems = append(problems, fmt.Sprintf("CRI: removed %d pods left behind: %v", len(ids), ids))
		}
		cancel()
	}
	if cd.conn != nil {
		cd.conn.Close()
	}
	if err := cd.stop(); err != nil {
		problems = append(problems, "CRI: "+err.Error())
	}
	if left := waitShimsGone(cd.bin, shimExitTimeout); len(left) > 0 {
		problems = append(problems, "CRI: killed shims still running after their pods were removed: "+describePids(left))
		killTrees(left)
	}
	return problems
}

// removeAllPods stops and removes every pod sandbox CRI lists and
// returns their ids.
func (cd *criDaemon) removeAllPods(ctx context.Context) ([]string, error) {
	resp, err := cd.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, err
	}
	var ids []string
	var errs []error
	for _, p := range resp.GetItems() {
		ids = append(ids, p.GetId())
		if _, err := cd.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, err)
		}
		if _, err := cd.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, err)
		}
	}
	return ids, errors.Join(errs...)
}
