package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/client"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// imageRef names the busybox image in the bench's namespace.
const imageRef = "docker.io/library/busybox:shimbench"

// importImage builds the busybox tree from the host's busybox-static into
// b.rootfs, imports it as an image (no registry) and unpacks it.
func (b *bench) importImage(ctx context.Context) error {
	b.rootfs = filepath.Join(b.dir, "rootfs")
	if err := image.BuildRootfs(b.rootfs, image.BusyboxPath); err != nil {
		return fmt.Errorf("%w (is busybox-static installed? tests/install-deps.sh)", err)
	}
	var archive bytes.Buffer
	if _, err := image.WriteArchive(&archive, b.rootfs, imageRef); err != nil {
		return err
	}
	imgs, err := b.c.Import(ctx, &archive)
	if err != nil {
		return fmt.Errorf("import busybox image: %w", err)
	}
	if len(imgs) != 1 || imgs[0].Name != imageRef {
		return fmt.Errorf("import busybox image: got %v, want one image %s", imgs, imageRef)
	}
	img := client.NewImage(b.c, imgs[0])
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpack busybox image with %s: %w", snapshotter, err)
	}
	b.img = img
	return nil
}
