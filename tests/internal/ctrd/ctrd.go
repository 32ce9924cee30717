// Package ctrd holds what the end-to-end suite and the benchmark both do
// with their private containerd daemons.
package ctrd

import (
	"context"

	"github.com/containerd/containerd/v2/client"
)

// DisabledPlugins keeps a private daemon to what the tests use, for each
// config schema version (2: containerd 1.6/1.7; 3: 2.x): no CRI (the CRI
// suite enables it itself), no NRI (its socket is global), no snapshotter
// but overlayfs and native.
func DisabledPlugins(schema int) []string {
	switch schema {
	case 2:
		return []string{
			"io.containerd.grpc.v1.cri",
			"io.containerd.snapshotter.v1.aufs",
			"io.containerd.snapshotter.v1.btrfs",
			"io.containerd.snapshotter.v1.devmapper",
			"io.containerd.snapshotter.v1.zfs",
		}
	case 3:
		return []string{
			"io.containerd.grpc.v1.cri",
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.podsandbox.controller.v1.podsandbox",
			"io.containerd.nri.v1.nri",
			"io.containerd.snapshotter.v1.blockfile",
			"io.containerd.snapshotter.v1.btrfs",
			"io.containerd.snapshotter.v1.devmapper",
			"io.containerd.snapshotter.v1.erofs",
			"io.containerd.snapshotter.v1.zfs",
		}
	}
	return nil
}

// DeleteAll kills and deletes every task and container in the namespace
// of ctx, with their snapshots, and returns their ids.
func DeleteAll(ctx context.Context, c *client.Client) []string {
	containers, err := c.Containers(ctx)
	if err != nil {
		return nil
	}
	var ids []string
	for _, ctr := range containers {
		ids = append(ids, ctr.ID())
		if task, err := ctr.Task(ctx, nil); err == nil {
			_, _ = task.Delete(ctx, client.WithProcessKill)
		}
		_ = ctr.Delete(ctx, client.WithSnapshotCleanup)
	}
	return ids
}
