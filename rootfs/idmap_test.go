package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
)

const (
	uidmap65536 = "uidmap=0:100000:65536"
	gidmap65536 = "gidmap=0:100000:65536"
)

func TestSplitIDMapOptions(t *testing.T) {
	r := func(c, h, s int) syscall.SysProcIDMap {
		return syscall.SysProcIDMap{ContainerID: c, HostID: h, Size: s}
	}
	tests := []struct {
		name     string
		in       []string
		wantRest []string
		wantUIDs []syscall.SysProcIDMap
		wantGIDs []syscall.SysProcIDMap
		wantErr  error
	}{
		{name: "none", in: []string{"rbind", "ro"}, wantRest: []string{"rbind", "ro"}},
		{
			name:     "both",
			in:       []string{uidmap65536, gidmap65536, "rbind", "rw"},
			wantRest: []string{"rbind", "rw"},
			wantUIDs: []syscall.SysProcIDMap{r(0, 100000, 65536)},
			wantGIDs: []syscall.SysProcIDMap{r(0, 100000, 65536)},
		},
		{
			name:     "several ranges",
			in:       []string{"lowerdir=/a", "uidmap=0:100000:1000,1000:200000:1000", "gidmap=0:300000:1", "upperdir=/u"},
			wantRest: []string{"lowerdir=/a", "upperdir=/u"},
			wantUIDs: []syscall.SysProcIDMap{r(0, 100000, 1000), r(1000, 200000, 1000)},
			wantGIDs: []syscall.SysProcIDMap{r(0, 300000, 1)},
		},
		{
			name:     "the last id",
			in:       []string{"uidmap=4294967294:0:1", "gidmap=0:4294967294:1"},
			wantUIDs: []syscall.SysProcIDMap{r(4294967294, 0, 1)},
			wantGIDs: []syscall.SysProcIDMap{r(0, 4294967294, 1)},
		},
		{name: "only uidmap", in: []string{uidmap65536, "rbind"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "only gidmap", in: []string{gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "uidmap twice", in: []string{uidmap65536, uidmap65536, gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "empty", in: []string{"uidmap=", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "two fields", in: []string{"uidmap=0:100000", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "four fields", in: []string{uidmap65536, "gidmap=0:1:2:3"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "not a number", in: []string{"uidmap=root:100000:1", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "negative", in: []string{"uidmap=-1:100000:1", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "spaces", in: []string{"uidmap=0: 100000:1", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "size 0", in: []string{"uidmap=0:100000:0", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "over 32 bits", in: []string{"uidmap=0:4294967296:1", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "past the last id", in: []string{uidmap65536, "gidmap=0:4294967295:2"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "trailing comma", in: []string{"uidmap=0:100000:1,", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "container ranges overlap", in: []string{"uidmap=0:100000:10,5:200000:10", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "host ranges overlap", in: []string{"uidmap=0:100000:10,10:100005:10", gidmap65536}, wantErr: errdefs.ErrInvalidArgument},
		{name: "too many ranges", in: []string{uidmap65536, "gidmap=" + manyRanges(341)}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, idm, err := splitIDMapOptions(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error: got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if strings.Join(rest, ",") != strings.Join(tt.wantRest, ",") {
				t.Errorf("rest: got %q, want %q", rest, tt.wantRest)
			}
			var uids, gids []syscall.SysProcIDMap
			if idm != nil {
				uids, gids = idm.uids, idm.gids
			}
			if !equalRanges(uids, tt.wantUIDs) || !equalRanges(gids, tt.wantGIDs) {
				t.Errorf("ranges: got %v %v, want %v %v", uids, gids, tt.wantUIDs, tt.wantGIDs)
			}
		})
	}
}

func manyRanges(n int) string {
	rs := make([]string, n)
	for i := range rs {
		rs[i] = strconv.Itoa(i) + ":" + strconv.Itoa(100000+i) + ":1"
	}
	return strings.Join(rs, ",")
}

func equalRanges(a, b []syscall.SysProcIDMap) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCommonDir(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{in: []string{"/var/lib/s/snapshots/12/fs"}, want: "/var/lib/s/snapshots/12/fs"},
		{in: []string{"/var/lib/s/snapshots/12/fs", "/var/lib/s/snapshots/13/fs"}, want: "/var/lib/s/snapshots"},
		// A common string prefix is not a common directory.
		{in: []string{"/var/lib/s/snapshots/12/fs", "/var/lib/s/snapshots/1/fs"}, want: "/var/lib/s/snapshots"},
		{in: []string{"/a/b", "/a/b/c"}, want: "/a/b"},
		{in: []string{"/a/x", "/b/x"}, want: "/"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			if got := commonDir(tt.in); got != tt.want {
				t.Errorf("commonDir(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// owned is a file of a layer with its owner on disk.
type owned struct {
	name     string
	uid, gid int
}

// makeLayer creates dir holding files, each owned as it says, its
// content its name.
func makeLayer(t testing.TB, dir string, files ...owned) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
	}
}

// ownerOf returns the uid and gid path shows, or -1s when it is missing.
func ownerOf(t *testing.T, path string) (int, int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Errorf("stat %s: %v", path, err)
		return -1, -1
	}
	return int(st.Uid), int(st.Gid)
}

func wantOwner(t *testing.T, path string, uid, gid int) {
	t.Helper()
	if gotUID, gotGID := ownerOf(t, path); gotUID != uid || gotGID != gid {
		t.Errorf("owner of %s: got %d:%d, want %d:%d", path, gotUID, gotGID, uid, gid)
	}
}

// asIDs runs fn with fsuid and fsgid set to uid and gid, as a container
// process whose ids map to them would act. Only the thread running fn is
// changed; it is thrown away if it cannot be changed back.
func asIDs(t *testing.T, uid, gid int, fn func() error) error {
	t.Helper()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// fsgid first: once fsuid is not 0, CAP_SETGID is gone.
		if err = unix.Setfsgid(gid); err != nil {
			return
		}
		if err = unix.Setfsuid(uid); err != nil {
			return
		}
		err = fn()
		_ = unix.Setfsuid(0)
		_ = unix.Setfsgid(0)
		// setfs[ug]id(-1) changes nothing and returns the current id.
		if u, _ := unix.SetfsuidRetUid(-1); u != 0 {
			return
		}
		if g, _ := unix.SetfsgidRetGid(-1); g != 0 {
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	return err
}

// createIn creates name in dir with fsuid and fsgid set to uid and gid.
// The dir is opened first, as root: the test's temp dirs above it are
// closed to other uids.
func createIn(t *testing.T, dir, name string, uid, gid int) error {
	t.Helper()
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	return asIDs(t, uid, gid, func() error {
		fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	})
}

// checkClean fails t if anything is mounted under parent, the idmap dir
// is there, or the test process has a child (a user namespace holder
// left running or unreaped).
func checkClean(t *testing.T, parent, target string) {
	t.Helper()
	if got := testutil.MountsAt(t, parent); len(got) != 0 {
		t.Errorf("mounts left under %s: %v", parent, got)
	}
	if _, err := os.Lstat(idmapDir(target)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("idmap dir %s: got stat error %v, want it gone", idmapDir(target), err)
	}
	if got := testutil.ChildPids(t); len(got) != 0 {
		t.Errorf("children left: %v", got)
	}
}

// overlayFixture is an overlay snapshot as containerd's snapshotter lays
// it out for a user namespace: two lower layers, an upper chowned to the
// mapped root (100000), and the mount it describes, plus a bundle.
type overlayFixture struct {
	lower1, lower2, upper, work string
	parent, target              string
	mount                       Mount
}

func newOverlayFixture(t *testing.T, idmap ...string) overlayFixture {
	t.Helper()
	snaps := filepath.Join(t.TempDir(), "snapshots")
	f := overlayFixture{
		lower1: filepath.Join(snaps, "1", "fs"),
		lower2: filepath.Join(snaps, "2", "fs"),
		upper:  filepath.Join(snaps, "3", "fs"),
		work:   filepath.Join(snaps, "3", "work"),
	}
	makeLayer(t, f.lower1, owned{"root-file", 0, 0}, owned{"user-file", 1000, 1000}, owned{"high-file", 1500, 1500}, owned{"unmapped-file", 70000, 70000})
	makeLayer(t, f.lower2, owned{"upper-layer-file", 1000, 1000})
	makeLayer(t, f.upper)
	makeLayer(t, f.work)
	if err := os.Chown(f.upper, 100000, 100000); err != nil {
		t.Fatal(err)
	}
	f.parent, f.target = mountTarget(t)
	f.mount = Mount{Type: "overlay", Source: "overlay", Options: append(append([]string(nil), idmap...),
		"workdir="+f.work, "upperdir="+f.upper, "lowerdir="+f.lower2+":"+f.lower1)}
	return f
}

// TestIDMappedOverlay mounts an overlay with idmapped lowers and checks
// what the kernel does with ownership: lower files are seen mapped, the
// upper as stored; a copy-up stores the owner the lower showed (the
// mapped one), and a new file is stored with its creator's fsuid.
func TestIDMappedOverlay(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.CheckNoLeaks(t)
	f := newOverlayFixture(t, uidmap65536, gidmap65536)
	if err := MountAll([]Mount{f.mount}, f.target); err != nil {
		t.Fatalf("MountAll: %v", err)
	}
	if got := testutil.MountsAt(t, f.parent); len(got) != 1 || strings.Fields(got[0])[0] != f.target {
		t.Fatalf("mounts under the bundle: got %v, want the overlay on %s only", got, f.target)
	}
	if _, err := os.Lstat(idmapDir(f.target)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("idmap dir after a mount: got stat error %v, want it gone", err)
	}
	if got := testutil.ChildPids(t); len(got) != 0 {
		t.Errorf("children after MountAll: %v", got)
	}

	merged := func(name string) string { return filepath.Join(f.target, name) }
	wantOwner(t, merged("root-file"), 100000, 100000)
	wantOwner(t, merged("user-file"), 101000, 101000)
	wantOwner(t, merged("upper-layer-file"), 101000, 101000)
	wantOwner(t, merged("unmapped-file"), 65534, 65534) // 70000 is outside the range
	wantOwner(t, merged("."), 100000, 100000)           // the upper's root, as stored

	// A new file, created by host root and by the container's root.
	if err := os.WriteFile(merged("by-host-root"), nil, 0o644); err != nil {
		t.Fatalf("create as host root: %v", err)
	}
	wantOwner(t, filepath.Join(f.upper, "by-host-root"), 0, 0)
	if err := createIn(t, f.target, "by-ctr-root", 100000, 100000); err != nil {
		t.Fatalf("create as the container's root: %v", err)
	}
	wantOwner(t, filepath.Join(f.upper, "by-ctr-root"), 100000, 100000)
	wantOwner(t, merged("by-ctr-root"), 100000, 100000)

	// Copy-up of lower files: the upper stores the owner the idmapped
	// lower showed, and the lower is untouched.
	for _, c := range []struct {
		name     string
		uid, gid int
	}{{"root-file", 100000, 100000}, {"user-file", 101000, 101000}} {
		fd, err := os.OpenFile(merged(c.name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("open %s for writing: %v", c.name, err)
		}
		_, err = fd.WriteString("+")
		fd.Close()
		if err != nil {
			t.Fatalf("append to %s: %v", c.name, err)
		}
		wantOwner(t, filepath.Join(f.upper, c.name), c.uid, c.gid)
		wantOwner(t, merged(c.name), c.uid, c.gid)
		if data, _ := os.ReadFile(filepath.Join(f.lower1, c.name)); string(data) != c.name {
			t.Errorf("lower %s after copy-up: got %q, want %q", c.name, data, c.name)
		}
	}
	wantOwner(t, filepath.Join(f.lower1, "root-file"), 0, 0)

	if err := UnmountAll(f.target); err != nil {
		t.Fatalf("UnmountAll: %v", err)
	}
	checkClean(t, f.parent, f.target)
}

// TestIDMappedBind: a snapshot of one layer is a bind, idmapped by a
// clone stacked on it. Host root cannot create files through it (its
// uid has no place in the mapping: EOVERFLOW); the container's root can,
// and they land as uid 0 in the source. A read-only bind stays so.
func TestIDMappedBind(t *testing.T) {
	testutil.NeedRoot(t)
	for _, ro := range []bool{false, true} {
		name := map[bool]string{false: "rw", true: "ro"}[ro]
		t.Run(name, func(t *testing.T) {
			testutil.CheckNoLeaks(t)
			src := t.TempDir()
			makeLayer(t, src, owned{"root-file", 0, 0}, owned{"user-file", 1000, 1000})
			parent, target := mountTarget(t)
			m := Mount{Type: "bind", Source: src, Options: []string{uidmap65536, gidmap65536, name, "rbind"}}
			if err := MountAll([]Mount{m}, target); err != nil {
				t.Fatalf("MountAll: %v", err)
			}
			if got := testutil.MountsAt(t, parent); len(got) != 2 {
				t.Fatalf("mounts under the bundle: got %v, want the bind and its idmapped clone", got)
			}
			wantOwner(t, filepath.Join(target, "root-file"), 100000, 100000)
			wantOwner(t, filepath.Join(target, "user-file"), 101000, 101000)
			wantOwner(t, target, 100000, 100000)

			err := os.WriteFile(filepath.Join(target, "by-host-root"), nil, 0o644)
			if want := map[bool]error{false: unix.EOVERFLOW, true: unix.EROFS}[ro]; !errors.Is(err, want) {
				t.Errorf("create as host root: got %v, want %v", err, want)
			}
			err = createIn(t, target, "by-ctr-root", 100000, 100000)
			if ro {
				if !errors.Is(err, unix.EROFS) {
					t.Errorf("create on a read-only bind: got %v, want EROFS", err)
				}
			} else {
				if err != nil {
					t.Fatalf("create as the container's root: %v", err)
				}
				wantOwner(t, filepath.Join(src, "by-ctr-root"), 0, 0)
				wantOwner(t, filepath.Join(target, "by-ctr-root"), 100000, 100000)
			}

			if err := UnmountAll(target); err != nil {
				t.Fatalf("UnmountAll: %v", err)
			}
			checkClean(t, parent, target)
		})
	}
}

// TestIDMapSeveralRanges: each range maps its own ids; ids outside every
// range show as the overflow id.
func TestIDMapSeveralRanges(t *testing.T) {
	testutil.NeedRoot(t)
	maps := []string{"uidmap=0:100000:1000,1000:200000:1000", "gidmap=0:300000:1000,1000:400000:1000"}
	check := func(t *testing.T, dir string) {
		wantOwner(t, filepath.Join(dir, "root-file"), 100000, 300000)
		wantOwner(t, filepath.Join(dir, "user-file"), 200000, 400000)
		wantOwner(t, filepath.Join(dir, "high-file"), 200500, 400500)
		wantOwner(t, filepath.Join(dir, "unmapped-file"), 65534, 65534)
	}
	t.Run("overlay", func(t *testing.T) {
		testutil.CheckNoLeaks(t)
		f := newOverlayFixture(t, maps...)
		if err := MountAll([]Mount{f.mount}, f.target); err != nil {
			t.Fatalf("MountAll: %v", err)
		}
		check(t, f.target)
		if err := UnmountAll(f.target); err != nil {
			t.Fatalf("UnmountAll: %v", err)
		}
		checkClean(t, f.parent, f.target)
	})
	t.Run("bind", func(t *testing.T) {
		testutil.CheckNoLeaks(t)
		src := t.TempDir()
		makeLayer(t, src, owned{"root-file", 0, 0}, owned{"user-file", 1000, 1000}, owned{"high-file", 1500, 1500}, owned{"unmapped-file", 70000, 70000})
		parent, target := mountTarget(t)
		if err := MountAll([]Mount{{Type: "bind", Source: src, Options: append(maps, "ro", "rbind")}}, target); err != nil {
			t.Fatalf("MountAll: %v", err)
		}
		check(t, target)
		if err := UnmountAll(target); err != nil {
			t.Fatalf("UnmountAll: %v", err)
		}
		checkClean(t, parent, target)
	})
}

// TestIDMapFailureLeavesNothing: a bad option mounts nothing, and a
// failure at any later step undoes everything before it: no mount, no
// idmap dir, no holder child, no fd.
func TestIDMapFailureLeavesNothing(t *testing.T) {
	testutil.NeedRoot(t)
	tests := []struct {
		name string
		// mounts is given the overlay fixture (idmapped) and a dir.
		mounts  func(f overlayFixture, dir string) []Mount
		wantErr error
	}{
		{
			name: "only uidmap",
			mounts: func(f overlayFixture, dir string) []Mount {
				return []Mount{{Type: "bind", Source: dir, Options: []string{uidmap65536, "rbind"}}}
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "bad range after a good mount",
			mounts: func(f overlayFixture, dir string) []Mount {
				return []Mount{{Type: "tmpfs", Source: "tmpfs"}, {Type: "bind", Source: dir, Options: []string{"uidmap=0:100000", gidmap65536, "rbind"}}}
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "overlay without lowerdir",
			mounts: func(f overlayFixture, dir string) []Mount {
				return []Mount{{Type: "overlay", Source: "overlay", Options: []string{uidmap65536, gidmap65536, "upperdir=" + f.upper, "workdir=" + f.work}}}
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "missing lowerdir",
			mounts: func(f overlayFixture, dir string) []Mount {
				f.mount.Options[len(f.mount.Options)-1] += ":" + filepath.Join(dir, "missing")
				return []Mount{f.mount}
			},
			wantErr: os.ErrNotExist,
		},
		{
			name: "missing upperdir, after the clones are attached",
			mounts: func(f overlayFixture, dir string) []Mount {
				f.mount.Options[3] = "upperdir=" + filepath.Join(dir, "missing")
				return []Mount{f.mount}
			},
			wantErr: unix.ENOENT,
		},
		{
			name: "overlay failing after a tmpfs",
			mounts: func(f overlayFixture, dir string) []Mount {
				f.mount.Options[2] = "workdir=" + filepath.Join(dir, "missing")
				return []Mount{{Type: "tmpfs", Source: "tmpfs"}, f.mount}
			},
			wantErr: unix.ENOENT,
		},
		{
			// procfs cannot be idmapped: mount_setattr fails after the
			// bind is mounted.
			name: "bind of a filesystem that cannot be idmapped",
			mounts: func(f overlayFixture, dir string) []Mount {
				return []Mount{{Type: "bind", Source: "/proc", Options: []string{uidmap65536, gidmap65536, "bind", "ro"}}}
			},
			wantErr: unix.EINVAL,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOverlayFixture(t, uidmap65536, gidmap65536)
			f.mount.Options = append([]string(nil), f.mount.Options...)
			mounts := tt.mounts(f, t.TempDir())
			testutil.CheckNoLeaks(t)
			err := MountAll(mounts, f.target)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("MountAll: got %v, want %v", err, tt.wantErr)
			}
			checkClean(t, f.parent, f.target)
		})
	}
}

// TestIDMapDirLeftByACrash: a shim that died in the middle of an
// idmapped overlay mount leaves a clone attached in the bundle.
// UnmountAll (and so delete) and the next MountAll take it away, and
// only by unmounting and rmdir: the layer behind it is untouched, and
// an entry that is not empty is an error, not a recursive delete.
func TestIDMapDirLeftByACrash(t *testing.T) {
	testutil.NeedRoot(t)
	leave := func(t *testing.T, target string) (layer string) {
		layer = t.TempDir()
		makeLayer(t, layer, owned{"keep", 0, 0})
		at := filepath.Join(idmapDir(target), "0")
		if err := os.MkdirAll(at, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(layer, at, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		return layer
	}
	t.Run("UnmountAll", func(t *testing.T) {
		parent, target := mountTarget(t)
		layer := leave(t, target)
		if err := UnmountAll(target); err != nil {
			t.Fatalf("UnmountAll: %v", err)
		}
		checkClean(t, parent, target)
		if _, err := os.Stat(filepath.Join(layer, "keep")); err != nil {
			t.Errorf("the layer behind the clone: %v", err)
		}
	})
	t.Run("MountAll", func(t *testing.T) {
		parent, target := mountTarget(t)
		leave(t, target)
		if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs"}}, target); err != nil {
			t.Fatalf("MountAll: %v", err)
		}
		if _, err := os.Lstat(idmapDir(target)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("idmap dir after MountAll: got stat error %v, want it gone", err)
		}
		if err := UnmountAll(target); err != nil {
			t.Fatalf("UnmountAll: %v", err)
		}
		checkClean(t, parent, target)
	})
	t.Run("not empty", func(t *testing.T) {
		_, target := mountTarget(t)
		stray := filepath.Join(idmapDir(target), "0", "stray")
		makeLayer(t, filepath.Dir(stray), owned{"stray", 0, 0})
		if err := UnmountAll(target); err == nil {
			t.Errorf("UnmountAll with a file in the idmap dir: got nil, want an error")
		}
		if _, err := os.Stat(stray); err != nil {
			t.Errorf("file in the idmap dir: got %v, want it kept", err)
		}
	})
}

// TestIDMapCloneLeftBehindIsReadOnly: if a shim dies with the clones
// attached in the bundle, containerd's RemoveAll of the bundle must not
// delete the layers through them.
func TestIDMapCloneLeftBehindIsReadOnly(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.CheckNoLeaks(t)
	f := newOverlayFixture(t)
	_, idm, err := splitIDMapOptions([]string{uidmap65536, gidmap65536})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := openUserns(runc.Monitor, idm)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := cloneLowers([]string{f.lower2, f.lower1}, idmapDir(f.target), int(ns.Fd()))
	if err != nil {
		t.Fatalf("cloneLowers: %v", err)
	}
	if got := testutil.MountsAt(t, idmapDir(f.target)); len(got) != 1 {
		t.Fatalf("clones attached: got %v, want one (the layers' common dir)", got)
	}
	if err := os.RemoveAll(idmapDir(f.target)); !errors.Is(err, unix.EROFS) {
		t.Errorf("RemoveAll through the clone: got %v, want EROFS", err)
	}
	for _, name := range []string{"root-file", "user-file"} {
		if _, err := os.Stat(filepath.Join(f.lower1, name)); err != nil {
			t.Errorf("layer file %s after RemoveAll: %v", name, err)
		}
	}
	if err := c.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	checkClean(t, f.parent, f.target)
}

// TestIDMapLongBundlePath: under a bundle with a long path the lowerdir
// list through the idmap dir passes a page; the /proc/self/fd form
// keeps it short enough to mount.
func TestIDMapLongBundlePath(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.CheckNoLeaks(t)
	layers := t.TempDir()
	var lowers []string
	for i := 0; i < 12; i++ {
		l := filepath.Join(layers, strconv.Itoa(i))
		makeLayer(t, l, owned{"file-" + strconv.Itoa(i), 1000, 1000})
		lowers = append(lowers, l)
	}
	upper, work := filepath.Join(layers, "upper"), filepath.Join(layers, "work")
	makeLayer(t, upper)
	makeLayer(t, work)
	parent, _ := mountTarget(t)
	long := strings.Repeat("b", 200)
	target := filepath.Join(parent, long, long, long, "rootfs")
	opts := []string{uidmap65536, gidmap65536, "workdir=" + work, "upperdir=" + upper, "lowerdir=" + strings.Join(lowers, ":")}
	if n := len(lowers) * len(idmapDir(target)); n < os.Getpagesize() {
		t.Fatalf("test setup: lowerdirs through %s would take only %d bytes", idmapDir(target), n)
	}
	if err := MountAll([]Mount{{Type: "overlay", Source: "overlay", Options: opts}}, target); err != nil {
		t.Fatalf("MountAll: %v", err)
	}
	for i := range lowers {
		wantOwner(t, filepath.Join(target, "file-"+strconv.Itoa(i)), 101000, 101000)
	}
	if err := UnmountAll(target); err != nil {
		t.Fatalf("UnmountAll: %v", err)
	}
	checkClean(t, parent, target)
}

// TestIDMapThroughReaper runs the user namespace holder through the
// shim's own reaper, as the shim does (cmd installs it as go-runc's
// Monitor): its ptrace stop must not reach anyone, and its exit must go
// to the waiter, never to the reaper's handler (the sandbox Manager).
func TestIDMapThroughReaper(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.WarmSignals()
	testutil.CheckNoLeaks(t)
	r := reaper.NewReaper()
	var mu sync.Mutex
	var strays []reaper.Exit
	done, returned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(returned)
		r.Run(done, func(e reaper.Exit) {
			mu.Lock()
			defer mu.Unlock()
			strays = append(strays, e)
		})
	}()
	_, idm, err := splitIDMapOptions([]string{uidmap65536, gidmap65536})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		ns, err := openUserns(r, idm)
		if err != nil {
			t.Fatalf("openUserns: %v", err)
		}
		ns.Close()
	}
	f := newOverlayFixture(t, uidmap65536, gidmap65536)
	if err := mountAll([]Mount{f.mount}, f.target, r); err != nil {
		t.Fatalf("mountAll: %v", err)
	}
	wantOwner(t, filepath.Join(f.target, "root-file"), 100000, 100000)
	if err := UnmountAll(f.target); err != nil {
		t.Fatalf("UnmountAll: %v", err)
	}
	// Run hands each exit out synchronously: once it returns, the
	// handler has seen all it will.
	close(done)
	<-returned
	if len(strays) != 0 {
		t.Errorf("exits handed to the handler: %+v, want none", strays)
	}
	checkClean(t, f.parent, f.target)
}

// TestOpenUsernsDefaultMonitor: under go-runc's default monitor, whose
// Wait may return on the holder's ptrace stop, every holder is still
// reaped and no fd stays open.
func TestOpenUsernsDefaultMonitor(t *testing.T) {
	testutil.NeedRoot(t)
	testutil.CheckNoLeaks(t)
	_, idm, err := splitIDMapOptions([]string{uidmap65536, gidmap65536})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		ns, err := openUserns(runc.Monitor, idm)
		if err != nil {
			t.Fatalf("openUserns: %v", err)
		}
		got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(ns.Fd())))
		ns.Close()
		if err != nil || !strings.HasPrefix(got, "user:[") || got == self {
			t.Fatalf("the fd: got %q (%v), want a user namespace other than ours (%s)", got, err, self)
		}
		if pids := testutil.ChildPids(t); len(pids) != 0 {
			t.Fatalf("children after openUserns: %v", pids)
		}
	}
}

// BenchmarkOpenUserns is the cost of one user namespace fd: once per
// container created with idmapped mounts.
func BenchmarkOpenUserns(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	_, idm, err := splitIDMapOptions([]string{uidmap65536, gidmap65536})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ns, err := openUserns(runc.Monitor, idm)
		if err != nil {
			b.Fatal(err)
		}
		ns.Close()
	}
}

// BenchmarkMountOverlay is MountAll and UnmountAll of a three-layer
// overlay: plain, idmapped (user namespace fd included), and idmapped
// with the fd made once (the clone, attach, mount and detach alone).
func BenchmarkMountOverlay(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	for _, bc := range []struct {
		name    string
		idmap   []string
		reuseFD bool
	}{
		{name: "plain"},
		{name: "idmapped", idmap: []string{uidmap65536, gidmap65536}},
		{name: "idmapped-fd-reused", idmap: []string{uidmap65536, gidmap65536}, reuseFD: true},
	} {
		idmap := bc.idmap
		b.Run(bc.name, func(b *testing.B) {
			snaps := filepath.Join(b.TempDir(), "snapshots")
			var lowers []string
			for i := 1; i <= 3; i++ {
				l := filepath.Join(snaps, strconv.Itoa(i), "fs")
				makeLayer(b, l, owned{"f" + strconv.Itoa(i), 0, 0})
				lowers = append([]string{l}, lowers...)
			}
			upper, work := filepath.Join(snaps, "4", "fs"), filepath.Join(snaps, "4", "work")
			makeLayer(b, upper)
			makeLayer(b, work)
			target := filepath.Join(b.TempDir(), "rootfs")
			m := Mount{Type: "overlay", Source: "overlay", Options: append(append([]string(nil), idmap...),
				"workdir="+work, "upperdir="+upper, "lowerdir="+strings.Join(lowers, ":"))}
			mount := func() error { return MountAll([]Mount{m}, target) }
			if bc.reuseFD {
				opts, idm, err := splitIDMapOptions(m.Options)
				if err != nil {
					b.Fatal(err)
				}
				ns, err := openUserns(runc.Monitor, idm)
				if err != nil {
					b.Fatal(err)
				}
				defer ns.Close()
				if err := os.MkdirAll(target, 0o711); err != nil {
					b.Fatal(err)
				}
				mount = func() error {
					_, err := mountIDMapped(m, target, opts, os.Getpagesize(), int(ns.Fd()), idmapDir(target))
					return err
				}
			}
			for b.Loop() {
				if err := mount(); err != nil {
					b.Fatal(err)
				}
				if err := UnmountAll(target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
