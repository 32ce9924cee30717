package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

const (
	uidmapOpt   = "uidmap="
	gidmapOpt   = "gidmap="
	lowerdirOpt = "lowerdir="
	// maxIDRanges is how many lines uid_map and gid_map take (Linux 4.15+).
	maxIDRanges = 340
)

// idMapping is the uidmap= and gidmap= options of one mount.
type idMapping struct {
	uids, gids []syscall.SysProcIDMap
	// key is both options as given: mounts with the same key share one
	// user namespace.
	key string
}

func (m *idMapping) String() string { return m.key }

// splitIDMapOptions takes uidmap= and gidmap= out of options, which then
// hold only what mount(2) understands. It returns nil when neither is
// there.
//
// containerd's mount package idmaps only when both are present and drops
// a lone one silently. Here a lone one is InvalidArgument: the overlay
// snapshotter writes both from the same pair of snapshot labels, so one
// alone is a broken request, and mounting it unmapped would hand a user
// namespace a rootfs it sees as owned by nobody (65534), failing later
// and far from the cause. A repeated option is refused for the same
// reason: which one containerd meant is a guess.
func splitIDMapOptions(options []string) (rest []string, _ *idMapping, _ error) {
	var uidmap, gidmap string
	var nUID, nGID int
	for _, o := range options {
		switch {
		case strings.HasPrefix(o, uidmapOpt):
			uidmap, nUID = strings.TrimPrefix(o, uidmapOpt), nUID+1
		case strings.HasPrefix(o, gidmapOpt):
			gidmap, nGID = strings.TrimPrefix(o, gidmapOpt), nGID+1
		default:
			rest = append(rest, o)
		}
	}
	switch {
	case nUID == 0 && nGID == 0:
		return options, nil, nil
	case nUID > 1 || nGID > 1:
		return nil, nil, fmt.Errorf("uidmap and gidmap must be given once each, got %d and %d: %w", nUID, nGID, errdefs.ErrInvalidArgument)
	case nUID == 0 || nGID == 0:
		return nil, nil, fmt.Errorf("uidmap and gidmap go together (idmapped mounts map both), got only one: %w", errdefs.ErrInvalidArgument)
	}
	uids, err := parseIDRanges(uidmapOpt, uidmap)
	if err != nil {
		return nil, nil, err
	}
	gids, err := parseIDRanges(gidmapOpt, gidmap)
	if err != nil {
		return nil, nil, err
	}
	return rest, &idMapping{uids: uids, gids: gids, key: uidmapOpt + uidmap + " " + gidmapOpt + gidmap}, nil
}

// parseIDRanges parses "container:host:size[,container:host:size...]",
// the format of containerd's snapshot labels, and refuses what the kernel
// would refuse when the maps are written (an overflow, overlapping ranges,
// too many), so that the error names the option rather than uid_map.
func parseIDRanges(opt, list string) ([]syscall.SysProcIDMap, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s%s: %s: %w", opt, list, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
	}
	ranges := strings.Split(list, ",")
	if len(ranges) > maxIDRanges {
		return nil, bad("%d ranges, the kernel takes at most %d", len(ranges), maxIDRanges)
	}
	out := make([]syscall.SysProcIDMap, 0, len(ranges))
	for _, r := range ranges {
		parts := strings.Split(r, ":")
		if len(parts) != 3 {
			return nil, bad("range %q is not container:host:size", r)
		}
		var n [3]uint64
		for i, p := range parts {
			v, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return nil, bad("range %q: %q is not an id between 0 and 4294967295", r, p)
			}
			n[i] = v
		}
		if n[2] == 0 {
			return nil, bad("range %q has size 0", r)
		}
		if n[0]+n[2] > 1<<32 || n[1]+n[2] > 1<<32 {
			return nil, bad("range %q goes past id 4294967295", r)
		}
		out = append(out, syscall.SysProcIDMap{ContainerID: int(n[0]), HostID: int(n[1]), Size: int(n[2])})
	}
	for _, side := range []func(syscall.SysProcIDMap) int{
		func(m syscall.SysProcIDMap) int { return m.ContainerID },
		func(m syscall.SysProcIDMap) int { return m.HostID },
	} {
		s := append([]syscall.SysProcIDMap(nil), out...)
		sort.Slice(s, func(i, j int) bool { return side(s[i]) < side(s[j]) })
		for i := 1; i < len(s); i++ {
			if side(s[i-1])+s[i-1].Size > side(s[i]) {
				return nil, bad("ranges overlap")
			}
		}
	}
	return out, nil
}

// idmapDir is where the idmapped clones of an overlay's lower layers are
// attached while the overlay is mounted: beside target, so in the bundle
// (<bundle>/rootfs.idmap), where UnmountAll, given only target, finds
// whatever a crash left there.
func idmapDir(target string) string { return filepath.Clean(target) + ".idmap" }

// idmapInPlace stacks an idmapped clone of the mount at dest on dest:
// containerd's IDMapMount(target, target). The clone keeps the mount's
// flags; read-only is set again so that it never depends on that. Its
// propagation is private, as the container's view of its rootfs must not
// leak mounts back to the host.
func idmapInPlace(dest string, usernsFD int, readOnly bool) error {
	fd, err := cloneIDMapped(dest, usernsFD, readOnly)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dest, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move idmapped mount onto %q: %w", dest, err)
	}
	return nil
}

// cloneIDMapped returns a detached, idmapped clone of the tree at path.
func cloneIDMapped(path string, usernsFD int, readOnly bool) (int, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("clone mount at %q: %w", path, err)
	}
	attr := unix.MountAttr{
		Attr_set:    unix.MOUNT_ATTR_IDMAP,
		Userns_fd:   uint64(usernsFD),
		Propagation: unix.MS_PRIVATE,
	}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("idmap the clone of %q: %w", path, err)
	}
	return fd, nil
}

// lowerClones are the idmapped clones of an overlay's lower layers,
// attached under dir (idmapDir) from before the overlay mount to just
// after it. Overlayfs takes private clones of its layers at mount time,
// so the attached ones can go once it is mounted.
type lowerClones struct {
	dir string
	// fds are the clones (attached at dir/<i>), kept open for the
	// /proc/self/fd form of the lowerdir list.
	fds []int
	// lowers are the layers in order: which clone, and the path in it.
	lowers []lowerRef
}

// lowerRef is one lower layer: the clone it is reached through and its
// path in that clone.
type lowerRef struct {
	clone int
	rel   string
}

// cloneLowers makes idmapped, read-only clones of lowerdirs and attaches
// them under dir. Like containerd 2.4, it clones the layers' deepest
// common directory once (the overlay snapshotter's snapshots directory)
// rather than each layer: one clone, one attach and one detach however
// many layers. Layers with nothing in common but / are cloned one by one.
// On error nothing is left attached and dir is gone.
//
// Read-only matters beyond overlay's lowers never being written: dir is
// in the bundle, and containerd removes a bundle with os.RemoveAll after
// unmounting only its rootfs (core/runtime/v2/bundle.go). Through a clone
// a crashed shim left attached, that would delete every snapshot; on a
// read-only mount it fails with EROFS instead.
func cloneLowers(lowerdirs []string, dir string, usernsFD int) (_ *lowerClones, retErr error) {
	resolved := make([]string, len(lowerdirs))
	for i, l := range lowerdirs {
		// Resolved on the host: a symlink met inside a clone would lead
		// out of it, to an unmapped layer.
		abs, err := filepath.Abs(l)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("overlay lowerdir %q: %w", l, err)
		}
		resolved[i] = abs
	}
	roots := []string{commonDir(resolved)}
	if roots[0] == "/" {
		roots = resolved
	}
	c := &lowerClones{dir: dir}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create idmap dir: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = c.release()
		}
	}()
	for i, root := range roots {
		at := filepath.Join(dir, strconv.Itoa(i))
		if err := os.Mkdir(at, 0o700); err != nil {
			return nil, fmt.Errorf("create idmap dir: %w", err)
		}
		fd, err := cloneIDMapped(root, usernsFD, true)
		if err != nil {
			return nil, err
		}
		c.fds = append(c.fds, fd)
		if err := unix.MoveMount(fd, "", unix.AT_FDCWD, at, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return nil, fmt.Errorf("attach idmapped clone of %q: %w", root, err)
		}
	}
	for i, l := range resolved {
		ref := lowerRef{clone: 0}
		if len(roots) > 1 {
			ref.clone = i
		}
		ref.rel, _ = filepath.Rel(roots[ref.clone], l)
		c.lowers = append(c.lowers, ref)
	}
	return c, nil
}

// commonDir is the deepest directory holding every one of paths (clean,
// absolute): a layer's own directory when there is one layer.
func commonDir(paths []string) string {
	common := strings.Split(paths[0], "/")
	for _, p := range paths[1:] {
		parts := strings.Split(p, "/")
		n := 0
		for n < len(common) && n < len(parts) && common[n] == parts[n] {
			n++
		}
		common = common[:n]
	}
	if d := strings.Join(common, "/"); d != "" {
		return d
	}
	return "/"
}

// lowerdir is the lowerdir= option through the clones: as paths under
// dir, or viaFD as /proc/self/fd/<clone fd>/<layer>, which is shorter
// than the snapshotter's own paths, for when the paths under dir (in a
// bundle named by a 64-digit id) would make the mount data reach a page.
// Overlay resolves either to the clone when mounted.
func (c *lowerClones) lowerdir(viaFD bool) string {
	paths := make([]string, len(c.lowers))
	for i, l := range c.lowers {
		base := filepath.Join(c.dir, strconv.Itoa(l.clone))
		if viaFD {
			base = "/proc/self/fd/" + strconv.Itoa(c.fds[l.clone])
		}
		paths[i] = filepath.Join(base, l.rel)
	}
	return lowerdirOpt + strings.Join(paths, ":")
}

// release detaches the clones and removes dir.
func (c *lowerClones) release() error {
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.fds = nil
	return removeIDMapDir(c.dir)
}

// overlayLowerdirs returns the index of the lowerdir= option in options
// and its layers. The idmapped path rewrites that one option, so the
// forms it cannot rewrite are refused rather than mounted unmapped.
func overlayLowerdirs(options []string) (int, []string, error) {
	idx := -1
	for i, o := range options {
		switch {
		case strings.HasPrefix(o, lowerdirOpt):
			if idx >= 0 {
				return -1, nil, fmt.Errorf("idmapped overlay: lowerdir= given twice: %w", errdefs.ErrInvalidArgument)
			}
			idx = i
		case strings.HasPrefix(o, "lowerdir+="), strings.HasPrefix(o, "datadir+="):
			return -1, nil, fmt.Errorf("idmapped overlay: %q: %w", o, errdefs.ErrNotImplemented)
		}
	}
	if idx < 0 || options[idx] == lowerdirOpt {
		return -1, nil, fmt.Errorf("idmapped overlay: no lowerdir= to idmap: %w", errdefs.ErrInvalidArgument)
	}
	return idx, strings.Split(strings.TrimPrefix(options[idx], lowerdirOpt), ":"), nil
}

// removeIDMapDir detaches whatever is mounted in dir's entries and
// removes them and dir. It only ever rmdirs: a directory that still holds
// a mount cannot be removed, so the layers behind a clone are never
// touched. A missing dir is success.
func removeIDMapDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean idmap dir: %w", err)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if err := detachAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("clean idmap dir: %w", err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("clean idmap dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// detachAll lazily unmounts everything stacked on path. Lazily, because
// a child the shim is forking at that moment may hold a clone's fd until
// it execs (containerd saw such EBUSYs); the kernel lets go of the clone
// when the last reference does.
func detachAll(path string) error {
	for i := 0; i < maxStacked; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil
		default:
			return fmt.Errorf("detach %q: %w", path, err)
		}
	}
	return fmt.Errorf("detach %q: still mounted after %d unmounts", path, maxStacked)
}
