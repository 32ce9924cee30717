// Package image builds the end-to-end tests' container image without a
// registry: a busybox root filesystem directory made from the host's
// busybox-static, and an OCI image archive (oci-layout, index.json,
// manifest, config, one uncompressed layer) written from that directory with
// archive/tar and crypto/sha256 alone. containerd imports the archive like
// any other; nothing is pulled.
package image

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Applets are the busybox applets linked into the rootfs's /bin. The tests'
// shell scripts use only these (trap and wait are shell builtins).
var Applets = []string{
	"[", "cat", "cut", "date", "dd", "echo", "env", "false", "grep", "head",
	"hostname", "id", "kill", "ls", "md5sum", "mkdir", "mount", "nproc",
	"printf", "ps", "pwd", "rm", "seq", "sh", "sha256sum", "sleep", "stat",
	"tail", "test", "touch", "tr", "true", "uname", "wc", "yes",
}

// Data files baked into the image, for byte-exact IO tests. Their content
// is Pattern(seed, size): deterministic, so tests compute the expected bytes
// rather than trusting a tool inside the container.
const (
	StdoutBlob = "/data/out.bin" // Pattern(1, BlobSize)
	StderrBlob = "/data/err.bin" // Pattern(2, BlobSize)
	BlobSize   = 1 << 20
)

// Pattern returns n pseudo-random bytes derived from seed: SHA-256 in
// counter mode. Unlike a repeating pattern, a dropped, duplicated or
// reordered chunk anywhere changes the result.
func Pattern(seed uint64, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	var block [16]byte
	binary.BigEndian.PutUint64(block[:8], seed)
	for ctr := uint64(0); len(out) < n; ctr++ {
		binary.BigEndian.PutUint64(block[8:], ctr)
		sum := sha256.Sum256(block[:])
		out = append(out, sum[:]...)
	}
	return out[:n]
}

// BuildRootfs makes a busybox root filesystem in dir (created if needed):
// busybox copied to /bin/busybox, one symlink per applet, the usual empty
// mount points, a root entry in /etc/passwd and /etc/group, and the data
// blobs.
func BuildRootfs(dir, busybox string) error {
	for _, d := range []string{"bin", "data", "dev", "etc", "proc", "root", "sys", "tmp", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	if err := copyFile(filepath.Join(dir, "bin", "busybox"), busybox, 0o755); err != nil {
		return fmt.Errorf("build rootfs: copy busybox: %w", err)
	}
	for _, a := range Applets {
		link := filepath.Join(dir, "bin", a)
		if err := os.Remove(link); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("build rootfs: %w", err)
		}
		if err := os.Symlink("busybox", link); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	files := []struct {
		path string
		data []byte
	}{
		{"etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		{"etc/group", []byte("root:x:0:\nnogroup:x:65534:\n")},
		{"etc/hostname", []byte("busybox\n")},
		{StdoutBlob[1:], Pattern(1, BlobSize)},
		{StderrBlob[1:], Pattern(2, BlobSize)},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.path), f.data, 0o644); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	return nil
}

func copyFile(dst, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
