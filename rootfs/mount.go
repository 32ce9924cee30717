// Package rootfs mounts a container's root filesystem from the mounts
// containerd's snapshotter describes (overlay, bind, tmpfs, ...) on
// <bundle>/rootfs before the runtime's create, and unmounts everything
// under it at delete. A failed MountAll leaves nothing mounted; UnmountAll
// of a path with nothing mounted succeeds, so a delete may be retried.
package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Mount is one rootfs mount from CreateTaskRequest, as the snapshotter
// described it (overlay, bind, ...).
type Mount struct {
	Type    string
	Source  string
	Target  string
	Options []string
}

// mountFlags maps the mount(8) options the snapshotters use to flags;
// returning rather than storing the table keeps it immutable.
func mountFlag(opt string) (flag uintptr, clear bool, ok bool) {
	switch opt {
	case "ro":
		return unix.MS_RDONLY, false, true
	case "rw":
		return unix.MS_RDONLY, true, true
	case "bind":
		return unix.MS_BIND, false, true
	case "rbind":
		return unix.MS_BIND | unix.MS_REC, false, true
	case "nosuid":
		return unix.MS_NOSUID, false, true
	case "suid":
		return unix.MS_NOSUID, true, true
	case "nodev":
		return unix.MS_NODEV, false, true
	case "dev":
		return unix.MS_NODEV, true, true
	case "noexec":
		return unix.MS_NOEXEC, false, true
	case "exec":
		return unix.MS_NOEXEC, true, true
	case "relatime":
		return unix.MS_RELATIME, false, true
	case "noatime":
		return unix.MS_NOATIME, false, true
	case "sync":
		return unix.MS_SYNCHRONOUS, false, true
	case "remount":
		return unix.MS_REMOUNT, false, true
	case "defaults":
		return 0, false, true
	}
	return 0, false, false
}

func parseMountOptions(options []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range options {
		f, clear, ok := mountFlag(o)
		switch {
		case !ok:
			rest = append(rest, o)
		case clear:
			flags &^= f
		default:
			flags |= f
		}
	}
	return flags, strings.Join(rest, ",")
}

// mountAll mounts the rootfs layers onto target in order. On error the
// ones already mounted are undone.
func MountAll(mounts []Mount, target string) (retErr error) {
	if len(mounts) == 0 {
		return nil
	}
	if err := os.MkdirAll(target, 0o711); err != nil {
		return fmt.Errorf("create rootfs dir: %w", err)
	}
	done := 0
	defer func() {
		if retErr != nil && done > 0 {
			_ = UnmountAll(target)
		}
	}()
	pageSize := os.Getpagesize()
	for _, m := range mounts {
		dest := target
		if m.Target != "" {
			// A target is relative to the rootfs and must stay inside it.
			dest = filepath.Join(target, filepath.Clean("/"+m.Target))
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return fmt.Errorf("create mount target: %w", err)
			}
		}
		flags, data := parseMountOptions(m.Options)
		if len(data) >= pageSize {
			// The kernel truncates mount data at a page; a snapshot with
			// that many layers needs the chdir trick (not done yet).
			return fmt.Errorf("mount %s: options are %d bytes, over the %d-byte limit: %w", m.Type, len(data), pageSize, errdefs.ErrNotImplemented)
		}
		typ, first := m.Type, flags
		if flags&unix.MS_BIND != 0 {
			// A bind mount ignores MS_RDONLY until remounted, below.
			typ, first = "", flags&^unix.MS_RDONLY
		}
		if err := unix.Mount(m.Source, dest, typ, first, data); err != nil {
			return fmt.Errorf("mount %s %q on %q: %w", m.Type, m.Source, dest, err)
		}
		done++
		if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
			if err := unix.Mount("", dest, "", flags|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("remount %q read-only: %w", dest, err)
			}
		}
	}
	return nil
}

// unmountAll unmounts everything stacked on target. It is idempotent: a
// target that is not a mount point (or is gone) is success.
func UnmountAll(target string) error {
	for i := 0; i < 64; i++ {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY):
			// Something still holds it (a process entering the rootfs);
			// detach so the bundle can go and the kernel frees it later.
			if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %q: %w", target, err)
			}
		default:
			return fmt.Errorf("unmount %q: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %q: still mounted after 64 unmounts", target)
}
