package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
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

// maxStacked bounds the unmount loops: a rootfs is one mount, two when
// idmapped in place, so this many means something keeps mounting there.
const maxStacked = 64

// MountAll mounts the rootfs layers onto target in order. On error the
// ones already mounted are undone, and so is any idmap work in progress.
func MountAll(mounts []Mount, target string) error {
	// go-runc's Monitor is the shim's reaper (set in cmd): the user
	// namespace holder of an idmapped mount is a child like any other.
	return mountAll(mounts, target, runc.Monitor)
}

func mountAll(mounts []Mount, target string, mon runc.ProcessMonitor) (retErr error) {
	if len(mounts) == 0 {
		return nil
	}
	// Checked before anything is mounted, so a bad option mounts nothing.
	options := make([][]string, len(mounts))
	idmaps := make([]*idMapping, len(mounts))
	for i, m := range mounts {
		var err error
		if options[i], idmaps[i], err = splitIDMapOptions(m.Options); err != nil {
			return fmt.Errorf("mount %s %q: %w", m.Type, m.Source, err)
		}
	}
	if err := os.MkdirAll(target, 0o711); err != nil {
		return fmt.Errorf("create rootfs dir: %w", err)
	}
	// A shim that died in the middle of an idmapped mount left this.
	if err := removeIDMapDir(idmapDir(target)); err != nil {
		return err
	}
	mounted := false
	defer func() {
		if retErr != nil && mounted {
			_ = UnmountAll(target)
		}
	}()
	// One user namespace per distinct pair of maps; the mounts hold their
	// own references, so the fds go when MountAll returns.
	userns := map[string]*os.File{}
	defer func() {
		for _, f := range userns {
			f.Close()
		}
	}()
	pageSize := os.Getpagesize()
	for i, m := range mounts {
		dest := target
		if m.Target != "" {
			// A target is relative to the rootfs and must stay inside it.
			dest = filepath.Join(target, filepath.Clean("/"+m.Target))
			if err := os.MkdirAll(dest, 0o755); err != nil {
				return fmt.Errorf("create mount target: %w", err)
			}
		}
		if idmaps[i] == nil {
			ok, err := mountOne(m, dest, options[i], pageSize)
			mounted = mounted || ok
			if err != nil {
				return err
			}
			continue
		}
		ns, ok := userns[idmaps[i].key]
		if !ok {
			var err error
			if ns, err = openUserns(mon, idmaps[i]); err != nil {
				return fmt.Errorf("mount %s %q: %w", m.Type, m.Source, err)
			}
			userns[idmaps[i].key] = ns
		}
		ok, err := mountIDMapped(m, dest, options[i], pageSize, int(ns.Fd()), idmapDir(target))
		mounted = mounted || ok
		if err != nil {
			return err
		}
	}
	return nil
}

// mountOne mounts m on dest with options (uidmap/gidmap taken out). It
// reports whether dest got a mount, so that a failure after that is
// undone.
func mountOne(m Mount, dest string, options []string, pageSize int) (mounted bool, _ error) {
	flags, data := parseMountOptions(options)
	if len(data) >= pageSize {
		// The kernel truncates mount data at a page; a snapshot with
		// that many layers needs the chdir trick (not done yet).
		return false, fmt.Errorf("mount %s: options are %d bytes, over the %d-byte limit: %w", m.Type, len(data), pageSize, errdefs.ErrNotImplemented)
	}
	typ, first := m.Type, flags
	if flags&unix.MS_BIND != 0 {
		// A bind mount ignores MS_RDONLY until remounted, below.
		typ, first = "", flags&^unix.MS_RDONLY
	}
	if err := unix.Mount(m.Source, dest, typ, first, data); err != nil {
		return false, fmt.Errorf("mount %s %q on %q: %w", m.Type, m.Source, dest, err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", dest, "", flags|unix.MS_REMOUNT, ""); err != nil {
			return true, fmt.Errorf("remount %q read-only: %w", dest, err)
		}
	}
	return true, nil
}

// mountIDMapped mounts m on dest idmapped through the user namespace
// usernsFD. An overlay gets idmapped lower layers (clones attached under
// tmp for the time of the mount) and its upper and work dirs as given:
// containerd's snapshotter chowns the upper to the mapped root, and
// overlayfs idmaps only lowers. Any other type (a snapshot of one layer
// is a bind) is mounted as usual and an idmapped clone is stacked on it.
func mountIDMapped(m Mount, dest string, options []string, pageSize, usernsFD int, tmp string) (mounted bool, _ error) {
	if m.Type != "overlay" {
		mounted, err := mountOne(m, dest, options, pageSize)
		if err != nil {
			return mounted, err
		}
		flags, _ := parseMountOptions(options)
		if err := idmapInPlace(dest, usernsFD, flags&unix.MS_RDONLY != 0); err != nil {
			return true, fmt.Errorf("mount %s %q: %w", m.Type, m.Source, err)
		}
		return true, nil
	}
	idx, lowers, err := overlayLowerdirs(options)
	if err != nil {
		return false, err
	}
	clones, err := cloneLowers(lowers, tmp, usernsFD)
	if err != nil {
		return false, fmt.Errorf("mount overlay: %w", err)
	}
	opts := append([]string(nil), options...)
	opts[idx] = clones.lowerdir(false)
	if _, data := parseMountOptions(opts); len(data) >= pageSize {
		opts[idx] = clones.lowerdir(true)
	}
	mounted, err = mountOne(m, dest, opts, pageSize)
	if rerr := clones.release(); rerr != nil && err == nil {
		err = fmt.Errorf("mount overlay: %w", rerr)
	}
	return mounted, err
}

// UnmountAll unmounts everything stacked on target (an idmapped bind is
// two mounts) and removes the idmap dir beside it, if a crash left one.
// It is idempotent: a target that is not a mount point (or is gone) is
// success.
func UnmountAll(target string) error {
	for i := 0; i < maxStacked; i++ {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return removeIDMapDir(idmapDir(target))
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
	return fmt.Errorf("unmount %q: still mounted after %d unmounts", target, maxStacked)
}
