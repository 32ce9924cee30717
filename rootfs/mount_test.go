package rootfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

func TestParseMountOptions(t *testing.T) {
	tests := []struct {
		name      string
		in        []string
		wantFlags uintptr
		wantData  string
	}{
		{name: "none", in: nil, wantFlags: 0, wantData: ""},
		{name: "ro", in: []string{"ro"}, wantFlags: unix.MS_RDONLY},
		{name: "rw", in: []string{"rw"}, wantFlags: 0},
		{name: "ro then rw", in: []string{"ro", "rw"}, wantFlags: 0},
		{name: "rw then ro", in: []string{"rw", "ro"}, wantFlags: unix.MS_RDONLY},
		{name: "bind", in: []string{"bind"}, wantFlags: unix.MS_BIND},
		{name: "rbind", in: []string{"rbind"}, wantFlags: unix.MS_BIND | unix.MS_REC},
		{name: "rbind ro", in: []string{"rbind", "ro"}, wantFlags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY},
		{name: "nosuid", in: []string{"nosuid"}, wantFlags: unix.MS_NOSUID},
		{name: "nosuid then suid", in: []string{"nosuid", "suid"}, wantFlags: 0},
		{name: "nodev noexec", in: []string{"nodev", "noexec"}, wantFlags: unix.MS_NODEV | unix.MS_NOEXEC},
		{name: "dev exec clear", in: []string{"nodev", "noexec", "dev", "exec"}, wantFlags: 0},
		{name: "atime and sync", in: []string{"relatime", "noatime", "sync"}, wantFlags: unix.MS_RELATIME | unix.MS_NOATIME | unix.MS_SYNCHRONOUS},
		{name: "remount", in: []string{"remount", "ro"}, wantFlags: unix.MS_REMOUNT | unix.MS_RDONLY},
		{name: "defaults", in: []string{"defaults"}, wantFlags: 0},
		{name: "unknown", in: []string{"mode=755"}, wantData: "mode=755"},
		{
			name:     "overlay keeps data order",
			in:       []string{"index=off", "lowerdir=/l2:/l1", "upperdir=/u", "workdir=/w"},
			wantData: "index=off,lowerdir=/l2:/l1,upperdir=/u,workdir=/w",
		},
		{
			name:      "flags and data mixed",
			in:        []string{"ro", "workdir=/w", "nosuid", "upperdir=/u", "nodev", "lowerdir=/l"},
			wantFlags: unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV,
			wantData:  "workdir=/w,upperdir=/u,lowerdir=/l",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags, data := parseMountOptions(tt.in)
			if flags != tt.wantFlags {
				t.Errorf("flags: got %#x, want %#x", flags, tt.wantFlags)
			}
			if data != tt.wantData {
				t.Errorf("data: got %q, want %q", data, tt.wantData)
			}
		})
	}
}

// mountTarget returns a rootfs path in a fresh temp dir and makes sure
// nothing stays mounted there when the test ends.
func mountTarget(t *testing.T) (parent, target string) {
	t.Helper()
	parent = t.TempDir()
	target = filepath.Join(parent, "rootfs")
	t.Cleanup(func() {
		for _, m := range testutil.MountsAt(t, parent) {
			_ = unix.Unmount(strings.Fields(m)[0], unix.MNT_DETACH)
		}
	})
	return parent, target
}

func TestMountAllUnmountAll(t *testing.T) {
	testutil.NeedRoot(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mounts []Mount
		// wantMounts is how many mounts stack on the target.
		wantMounts int
		check      func(t *testing.T, target string)
	}{
		{
			name:       "read-only bind",
			mounts:     []Mount{{Type: "bind", Source: src, Options: []string{"rbind", "ro"}}},
			wantMounts: 1,
			check: func(t *testing.T, target string) {
				data, err := os.ReadFile(filepath.Join(target, "hello"))
				if err != nil || string(data) != "hi" {
					t.Errorf("read through bind: got (%q, %v), want (%q, nil)", data, err, "hi")
				}
				err = os.WriteFile(filepath.Join(target, "new"), nil, 0o644)
				if !errors.Is(err, unix.EROFS) {
					t.Errorf("write on a ro bind: got %v, want EROFS", err)
				}
			},
		},
		{
			name:       "read-write bind",
			mounts:     []Mount{{Type: "bind", Source: src, Options: []string{"rbind", "rw"}}},
			wantMounts: 1,
			check: func(t *testing.T, target string) {
				p := filepath.Join(target, "rw-file")
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Errorf("write on a rw bind: %v", err)
				}
				os.Remove(p)
			},
		},
		{
			name:       "tmpfs",
			mounts:     []Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "size=1m"}}},
			wantMounts: 1,
			check: func(t *testing.T, target string) {
				var st unix.Statfs_t
				if err := unix.Statfs(target, &st); err != nil {
					t.Fatal(err)
				}
				if st.Type != unix.TMPFS_MAGIC {
					t.Errorf("fs type: got %#x, want tmpfs %#x", st.Type, unix.TMPFS_MAGIC)
				}
				if st.Flags&unix.ST_NOSUID == 0 {
					t.Errorf("nosuid not applied: flags %#x", st.Flags)
				}
			},
		},
		{
			name: "bind then tmpfs stacked",
			mounts: []Mount{
				{Type: "bind", Source: src, Options: []string{"rbind"}},
				{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}},
			},
			wantMounts: 2,
			check: func(t *testing.T, target string) {
				if _, err := os.Stat(filepath.Join(target, "hello")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("top of the stack should be the empty tmpfs: stat hello = %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, target := mountTarget(t)
			if err := MountAll(tt.mounts, target); err != nil {
				t.Fatalf("mountAll: %v", err)
			}
			if got := testutil.MountsAt(t, target); len(got) != tt.wantMounts {
				t.Fatalf("mounts at %s: got %v, want %d", target, got, tt.wantMounts)
			}
			tt.check(t, target)
			if err := UnmountAll(target); err != nil {
				t.Fatalf("unmountAll: %v", err)
			}
			if got := testutil.MountsAt(t, target); len(got) != 0 {
				t.Errorf("mounts left after unmountAll: %v", got)
			}
			if err := UnmountAll(target); err != nil {
				t.Errorf("second unmountAll: got %v, want nil", err)
			}
		})
	}
}

// TestMountAllTargetStaysInside: a mount's Target is relative to the
// rootfs and cannot climb out of it.
func TestMountAllTargetStaysInside(t *testing.T) {
	testutil.NeedRoot(t)
	parent, target := mountTarget(t)
	for _, d := range []string{filepath.Join(target, "x"), filepath.Join(parent, "x")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := MountAll([]Mount{{Type: "tmpfs", Source: "tmpfs", Target: "../x"}}, target); err != nil {
		t.Fatalf("mountAll: %v", err)
	}
	got := testutil.MountsAt(t, parent)
	if len(got) != 1 || strings.Fields(got[0])[0] != filepath.Join(target, "x") {
		t.Fatalf("mounts under %s: got %v, want one at %s", parent, got, filepath.Join(target, "x"))
	}
	if err := UnmountAll(filepath.Join(target, "x")); err != nil {
		t.Fatal(err)
	}
}

func TestMountAllEmpty(t *testing.T) {
	target := filepath.Join(t.TempDir(), "rootfs")
	if err := MountAll(nil, target); err != nil {
		t.Fatalf("MountAll(nil): %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no mounts should not create the rootfs dir: stat = %v", err)
	}
}

// TestMountAllFailureUndoes: a failing mount leaves nothing mounted, the
// ones before it included.
func TestMountAllFailureUndoes(t *testing.T) {
	testutil.NeedRoot(t)
	page := os.Getpagesize()
	tests := []struct {
		name    string
		mounts  []Mount
		wantErr error
	}{
		{
			name:    "data of a page",
			mounts:  []Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{strings.Repeat("a", page)}}},
			wantErr: errdefs.ErrNotImplemented,
		},
		{
			name: "second mount over a page",
			mounts: []Mount{
				{Type: "tmpfs", Source: "tmpfs"},
				{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + strings.Repeat("/l", page)}},
			},
			wantErr: errdefs.ErrNotImplemented,
		},
		{
			name: "unknown fs type after a good mount",
			mounts: []Mount{
				{Type: "tmpfs", Source: "tmpfs"},
				{Type: "no-such-fs", Source: "none"},
			},
			wantErr: unix.ENODEV,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, target := mountTarget(t)
			err := MountAll(tt.mounts, target)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("mountAll: got %v, want %v", err, tt.wantErr)
			}
			if got := testutil.MountsAt(t, parent); len(got) != 0 {
				t.Errorf("mounts left after a failed mountAll: %v", got)
			}
		})
	}
}

// TestUnmountAllIdempotent: a path that is not a mount point, or is not
// there at all, is already unmounted.
func TestUnmountAllIdempotent(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
	}{
		{name: "not a mount point", path: dir},
		{name: "missing", path: filepath.Join(dir, "missing")},
		{name: "missing parent", path: filepath.Join(dir, "missing", "rootfs")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := UnmountAll(tt.path); err != nil {
				t.Fatalf("UnmountAll(%s): got %v, want nil", tt.path, err)
			}
		})
	}
}
