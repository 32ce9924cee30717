// Package cri is what the end-to-end tests and the bench both need to
// drive a private containerd's CRI plugin: the shipped RuntimeClass
// handlers, a registry configuration that reaches nothing, the pause
// image built locally, images imported rather than pulled, and waiting
// for CRI to be ready.
package cri

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	nodev1 "k8s.io/api/node/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// Namespace is the containerd namespace the CRI plugin works in.
const Namespace = "k8s.io"

// RuntimeClassHandler parses a shipped RuntimeClass manifest and returns
// its handler.
func RuntimeClassHandler(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var rc nodev1.RuntimeClass
	if err := yaml.UnmarshalStrict(data, &rc); err != nil {
		return "", fmt.Errorf("parse %s: %w", path, err)
	}
	if rc.APIVersion != "node.k8s.io/v1" || rc.Kind != "RuntimeClass" || rc.Handler == "" {
		return "", fmt.Errorf("%s: apiVersion %q kind %q handler %q, want a node.k8s.io/v1 RuntimeClass with a handler", path, rc.APIVersion, rc.Kind, rc.Handler)
	}
	return rc.Handler, nil
}

// WriteNoRegistryHosts writes, in dir (CRI's config_path), a hosts.toml
// for the default and for every registry the suite's image names use,
// all pointing at server, an address nothing answers: a pull the tests
// did not mean fails at once instead of reaching a network.
func WriteNoRegistryHosts(dir, server string) error {
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, server)
	for _, h := range []string{"_default", "docker.io", "localhost", "registry.k8s.io"} {
		if err := os.MkdirAll(filepath.Join(dir, h), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, h, "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// PauseArchive makes, in dir, a rootfs holding only a pause binary and
// returns it as an OCI archive named ref. prebuilt is a pause binary
// built beforehand (the cgroup v2 guest has no Go toolchain); without
// it, tests/cmd/pause is built static from the module at moduleRoot.
func PauseArchive(dir, prebuilt, moduleRoot, ref string) ([]byte, error) {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"dev", "proc", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, err
		}
	}
	bin := filepath.Join(rootfs, "pause")
	if prebuilt != "" {
		if err := copyExecutable(prebuilt, bin); err != nil {
			return nil, fmt.Errorf("pause binary: %w", err)
		}
	} else {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./tests/cmd/pause")
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build the pause binary (%s): %w\n%s", strings.Join(cmd.Args, " "), err, out)
		}
	}
	var buf bytes.Buffer
	if _, err := image.WriteArchiveWithConfig(&buf, rootfs, ref, ocispec.ImageConfig{
		Entrypoint: []string{"/pause"},
		WorkingDir: "/",
	}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func copyExecutable(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// WaitRuntimeReady polls CRI's Status until RuntimeReady is true.
func WaitRuntimeReady(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
	var last string
	for {
		resp, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
		if err == nil {
			for _, c := range resp.GetStatus().GetConditions() {
				if c.Type == runtimeapi.RuntimeReady && c.Status {
					return nil
				}
			}
			last = fmt.Sprint(resp.GetStatus())
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRI runtime not ready: %w (last: %s)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ImportImage imports an OCI archive into CRI's namespace, unpacks it
// for snapshotter and waits until CRI's image service knows ref (it
// learns of images from containerd's events).
func ImportImage(ctx context.Context, c *client.Client, images runtimeapi.ImageServiceClient, snapshotter, ref string, archive []byte) error {
	ctx = namespaces.WithNamespace(ctx, Namespace)
	imgs, err := c.Import(ctx, bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("import %s: %w", ref, err)
	}
	if len(imgs) != 1 || imgs[0].Name != ref {
		return fmt.Errorf("import %s: got %v, want one image %s", ref, imgs, ref)
	}
	if err := client.NewImage(c, imgs[0]).Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpack %s with %s: %w", ref, snapshotter, err)
	}
	for {
		resp, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err == nil && resp.GetImage() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRI does not see imported image %s: %w (last: %v)", ref, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
