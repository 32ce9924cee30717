package process

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
)

// idmapDirName is where package rootfs attaches idmapped lower layers
// during an overlay mount, beside the rootfs (see its package doc).
const idmapDirName = "rootfs.idmap"

// bundleMountsGone fails t if anything is mounted in bundle or the idmap
// dir is still there.
func bundleMountsGone(t *testing.T, bundle string) {
	t.Helper()
	if got := testutil.MountsAt(t, bundle); len(got) != 0 {
		t.Errorf("mounts left in the bundle: %v", got)
	}
	if _, err := os.Lstat(filepath.Join(bundle, idmapDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("idmap dir: got stat error %v, want it gone", err)
	}
}

// TestInitIDMappedRootfs: the rootfs of a pod in a user namespace (a
// snapshot of one layer: a bind, with uidmap and gidmap) is mounted
// idmapped when the runtime creates the container, and Delete, or a
// failed Create, leaves nothing mounted in the bundle.
func TestInitIDMappedRootfs(t *testing.T) {
	testutil.NeedRoot(t)
	layer := t.TempDir()
	if err := os.WriteFile(filepath.Join(layer, "etc-passwd"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := []rootfs.Mount{{Type: "bind", Source: layer, Options: []string{"uidmap=0:100000:65536", "gidmap=0:100000:65536", "rw", "rbind"}}}
	for _, createFails := range []bool{false, true} {
		name := map[bool]string{false: "delete", true: "failed create"}[createFails]
		t.Run(name, func(t *testing.T) {
			child := testutil.StartSleeper(t)
			bundle := t.TempDir()
			rootDir := filepath.Join(bundle, "rootfs")
			t.Cleanup(func() {
				for range testutil.MountsAt(t, bundle) {
					_ = unix.Unmount(rootDir, unix.MNT_DETACH)
				}
			})
			var mountsDuringCreate int
			var ownerDuringCreate uint32
			eng := &fakeruntime.Runtime{OnCreate: func(ctx context.Context, id, b string, opts *runc.CreateOpts) error {
				mountsDuringCreate = len(testutil.MountsAt(t, rootDir))
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(rootDir, "etc-passwd"), &st); err == nil {
					ownerDuringCreate = st.Uid
				}
				if createFails {
					return errors.New("exit status 1")
				}
				return fakeruntime.WritePid(child.Process.Pid)(ctx, id, b, opts)
			}}
			p := NewInit(InitConfig{ID: "c1", Bundle: bundle, Rootfs: mounts}, eng)
			_, err := p.Create(context.Background())
			if (err != nil) != createFails {
				t.Fatalf("Create: got %v, want an error: %v", err, createFails)
			}
			// The bind and its idmapped clone on top.
			if mountsDuringCreate != 2 {
				t.Errorf("mounts on rootfs during runtime create: got %d, want 2", mountsDuringCreate)
			}
			if ownerDuringCreate != 100000 {
				t.Errorf("owner of a root-owned file through the rootfs: got %d, want 100000", ownerDuringCreate)
			}
			if !createFails {
				p.SetExited(0, time.Now())
				if _, err := p.Delete(context.Background()); err != nil {
					t.Fatalf("Delete: %v", err)
				}
			}
			bundleMountsGone(t, bundle)
		})
	}
}

// TestCleanupIDMapLeftovers: the delete action for a container whose
// shim died while mounting an idmapped overlay unmounts the rootfs and
// takes away the idmapped layer clone the shim left in the bundle,
// without touching the layer behind it.
func TestCleanupIDMapLeftovers(t *testing.T) {
	testutil.NeedRoot(t)
	layer := t.TempDir()
	keep := filepath.Join(layer, "keep")
	if err := os.WriteFile(keep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := t.TempDir()
	rootDir, clone := filepath.Join(bundle, "rootfs"), filepath.Join(bundle, idmapDirName, "0")
	t.Cleanup(func() {
		for _, p := range []string{rootDir, clone} {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	})
	for _, d := range []string{rootDir, clone} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", rootDir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(layer, clone, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := Cleanup(context.Background(), &fakeruntime.Runtime{}, "c1", bundle); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	bundleMountsGone(t, bundle)
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the layer behind the clone: %v", err)
	}
}
