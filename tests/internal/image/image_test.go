package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPattern(t *testing.T) {
	a, b := Pattern(1, 1000), Pattern(1, 1000)
	if !bytes.Equal(a, b) {
		t.Fatal("Pattern(1, 1000) differs between calls")
	}
	if bytes.Equal(a, Pattern(2, 1000)) {
		t.Fatal("Pattern(1, 1000) == Pattern(2, 1000)")
	}
	if got := len(Pattern(3, 33)); got != 33 {
		t.Fatalf("len(Pattern(3, 33)) = %d, want 33", got)
	}
}

func TestTagOf(t *testing.T) {
	for _, tc := range []struct{ ref, want string }{
		{"docker.io/library/busybox:test", "test"},
		{"localhost:5000/busybox", "latest"},
		{"busybox", "latest"},
	} {
		if got := tagOf(tc.ref); got != tc.want {
			t.Errorf("tagOf(%q) = %q, want %q", tc.ref, got, tc.want)
		}
	}
}

// TestWriteArchive checks the archive's structure: every blob matches its
// digest, index -> manifest -> config/layer link up, and the layer holds
// busybox, its applet links and the data blobs.
func TestWriteArchive(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("busybox-static not installed: %v", err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := BuildRootfs(rootfs, BusyboxPath); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	desc, err := WriteArchive(&buf, rootfs, "docker.io/library/busybox:test")
	if err != nil {
		t.Fatal(err)
	}
	files := readTar(t, buf.Bytes())
	for name, data := range files {
		if len(name) > 13 && name[:13] == "blobs/sha256/" {
			sum := sha256.Sum256(data)
			if got := hex.EncodeToString(sum[:]); got != name[13:] {
				t.Errorf("blob %s has sha256 %s", name, got)
			}
		}
	}
	var index ocispec.Index
	mustUnmarshal(t, files["index.json"], &index)
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != desc.Digest {
		t.Fatalf("index manifests = %+v, want one with digest %s", index.Manifests, desc.Digest)
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "docker.io/library/busybox:test" {
		t.Errorf("image name annotation = %q", got)
	}
	var manifest ocispec.Manifest
	mustUnmarshal(t, files[blobPath(desc)], &manifest)
	var config ocispec.Image
	mustUnmarshal(t, files[blobPath(manifest.Config)], &config)
	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Fatalf("layers %v and diff ids %v do not match", manifest.Layers, config.RootFS.DiffIDs)
	}
	layer := readTar(t, files[blobPath(manifest.Layers[0])])
	for _, want := range []string{"bin/busybox", "bin/sh", "etc/passwd", StdoutBlob[1:], StderrBlob[1:]} {
		if _, ok := layer[want]; !ok {
			t.Errorf("layer lacks %s", want)
		}
	}
	if got := layer[StderrBlob[1:]]; !bytes.Equal(got, Pattern(2, BlobSize)) {
		t.Errorf("layer %s: %d bytes, not Pattern(2, %d)", StderrBlob, len(got), BlobSize)
	}

	var again bytes.Buffer
	if _, err := WriteArchive(&again, rootfs, "docker.io/library/busybox:test"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two archives of the same rootfs differ")
	}
}

// readTar returns the regular files of a tar stream by name, and symlinks
// with their target as content.
func readTar(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = b
		case tar.TypeSymlink:
			files[hdr.Name] = []byte(hdr.Linkname)
		}
	}
}

func mustUnmarshal(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("unmarshal %T: %v", v, err)
	}
}
