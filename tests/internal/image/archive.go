package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// epoch is every file's mtime in the layer, so the same rootfs always gives
// the same digests.
var epoch = time.Unix(0, 0).UTC()

// DefaultEnv is the image config's environment.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// WriteArchive writes an OCI image layout archive (what `ctr images import`
// and client.Import read) holding one linux image for the host architecture
// whose single uncompressed layer is the tree at rootfs. ref is the full
// image name, e.g. "docker.io/library/busybox:test"; it is stored in the
// index as io.containerd.image.name and, for its tag, as
// org.opencontainers.image.ref.name. It returns the manifest descriptor.
func WriteArchive(w io.Writer, rootfs, ref string) (ocispec.Descriptor, error) {
	return WriteArchiveWithConfig(w, rootfs, ref, ocispec.ImageConfig{
		Env:        DefaultEnv,
		Cmd:        []string{"/bin/sh"},
		WorkingDir: "/",
	})
}

// WriteArchiveWithConfig is WriteArchive with cfg as the image's config
// (entrypoint, command, environment), e.g. for a pause image whose
// entrypoint is its only binary.
func WriteArchiveWithConfig(w io.Writer, rootfs, ref string, cfg ocispec.ImageConfig) (ocispec.Descriptor, error) {
	var layer bytes.Buffer
	if err := writeLayer(&layer, rootfs); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write layer of %s: %w", rootfs, err)
	}
	layerDesc := descriptor(ocispec.MediaTypeImageLayer, layer.Bytes())

	platform := ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"}
	config, err := json.Marshal(ocispec.Image{
		Created:  &epoch,
		Platform: platform,
		Config:   cfg,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("marshal image config: %w", err)
	}
	configDesc := descriptor(ocispec.MediaTypeImageConfig, config)

	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("marshal manifest: %w", err)
	}
	manifestDesc := descriptor(ocispec.MediaTypeImageManifest, manifest)
	manifestDesc.Platform = &platform

	indexed := manifestDesc
	indexed.Annotations = map[string]string{
		"io.containerd.image.name": ref,
		ocispec.AnnotationRefName:  tagOf(ref),
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{indexed},
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("marshal index: %w", err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("marshal oci-layout: %w", err)
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, layout},
		{ocispec.ImageIndexFile, index},
		{blobPath(layerDesc), layer.Bytes()},
		{blobPath(configDesc), config},
		{blobPath(manifestDesc), manifest},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("write archive: %w", err)
		}
	}
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("write archive: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("write archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write archive: %w", err)
	}
	return manifestDesc, nil
}

// WriteArchiveFile is WriteArchive into a new file at path.
func WriteArchiveFile(path, rootfs, ref string) (ocispec.Descriptor, error) {
	f, err := os.Create(path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc, err := WriteArchive(f, rootfs, ref)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return desc, err
}

func descriptor(mediaType string, data []byte) ocispec.Descriptor {
	sum := sha256.Sum256(data)
	return ocispec.Descriptor{
		MediaType: mediaType,
		Digest:    digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:])),
		Size:      int64(len(data)),
	}
}

func blobPath(d ocispec.Descriptor) string {
	return "blobs/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded()
}

// tagOf returns the tag of ref, or "latest" when it has none.
func tagOf(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(name, ":"); i >= 0 {
		return name[i+1:]
	}
	return "latest"
}

// writeLayer writes the tree at root as a tar stream: lexical order, owner
// root, fixed mtimes, so equal trees give equal bytes.
func writeLayer(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
