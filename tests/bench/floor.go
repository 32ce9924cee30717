package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"golang.org/x/sys/unix"
)

// floorPhases are the steps of one floor run.
var floorPhases = []string{"mount overlay + config.json", "runc run", "unmount"}

// floor runs the lifecycle's container spec with `runc run` directly:
// an overlay rootfs over the tree the image was made from, the spec containerd
// generates for the container, runc's create, start, wait and delete in
// one process. No shim, no containerd: the physical limit.
type floor struct {
	runc  string // runc binary, as the shims find it on PATH
	root  string // runc --root
	lower string // the busybox tree, overlay's lowerdir
	dir   string // bundles
	ns    string // cgroups go under /<ns>/<id>, as containerd's do
	spec  *oci.Spec
}

func (b *bench) newFloor(ctx context.Context) (*floor, error) {
	dir := filepath.Join(b.dir, "floor")
	f := &floor{runc: b.runc, root: filepath.Join(dir, "runc"), lower: b.rootfs, dir: dir, ns: b.ns}
	// With no snapshot to read /etc/group from, the image config's user
	// is resolved in the tree itself; the bundle then mounts it at rootfs
	// as containerd's bundles do.
	spec, err := oci.GenerateSpec(ctx, b.c, &containers.Container{ID: "floor"},
		oci.WithRootFSPath(b.rootfs), oci.WithImageConfig(b.img), oci.WithProcessArgs("/bin/true"))
	if err != nil {
		return nil, fmt.Errorf("floor: generate spec: %w", err)
	}
	spec.Root.Path = "rootfs"
	f.spec = spec
	return f, nil
}

// run runs one container id and returns the duration of each of
// floorPhases.
func (f *floor) run(ctx context.Context, id string) ([]time.Duration, error) {
	bundle := filepath.Join(f.dir, id)
	rootfs := filepath.Join(bundle, "rootfs")
	upper, work := filepath.Join(bundle, "upper"), filepath.Join(bundle, "work")
	for _, d := range []string{rootfs, upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	defer os.RemoveAll(bundle)

	sw := startStopwatch()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", f.lower, upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("floor: mount overlay on %s: %w", rootfs, err)
	}
	mounted := true
	defer func() {
		if mounted {
			_ = unix.Unmount(rootfs, unix.MNT_DETACH)
		}
	}()
	spec := *f.spec
	linux := *spec.Linux
	linux.CgroupsPath = "/" + f.ns + "/" + id
	spec.Linux = &linux
	config, err := json.Marshal(&spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), config, 0o644); err != nil {
		return nil, err
	}
	sw.lap()

	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, f.runc, "--root", f.root, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("floor: %s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	sw.lap()

	mounted = false
	if err := unix.Unmount(rootfs, 0); err != nil {
		return nil, fmt.Errorf("floor: unmount %s: %w", rootfs, err)
	}
	sw.lap()
	return sw.phases, nil
}
