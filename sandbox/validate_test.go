package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

func TestValidateCreate(t *testing.T) {
	good := newBundle(t, nil)
	noConfig := t.TempDir()
	garbage := t.TempDir()
	if err := os.WriteFile(filepath.Join(garbage, "config.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	noRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(noRoot, "config.json"), []byte(`{"ociVersion":"1.0.2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(emptyRoot, "config.json"), []byte(`{"root":{"path":""}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	configDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(configDir, "config.json"), 0o700); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  CreateRequest
		want error // nil, or the errdefs class
	}{
		{name: "good", req: CreateRequest{ID: "c1", Bundle: good}},
		{name: "good with trailing slash", req: CreateRequest{ID: "c1", Bundle: good + "/"}},
		{name: "good id with dots and dashes", req: CreateRequest{ID: "a.b-c_d", Bundle: good}},
		{name: "empty id", req: CreateRequest{ID: "", Bundle: good}, want: errdefs.ErrInvalidArgument},
		{name: "1000-char id", req: CreateRequest{ID: strings.Repeat("a", 1000), Bundle: good}, want: errdefs.ErrInvalidArgument},
		{name: "id with slash", req: CreateRequest{ID: "a/b", Bundle: good}, want: errdefs.ErrInvalidArgument},
		{name: "id dotdot", req: CreateRequest{ID: "..", Bundle: good}, want: errdefs.ErrInvalidArgument},
		{name: "id with space", req: CreateRequest{ID: "a b", Bundle: good}, want: errdefs.ErrInvalidArgument},
		{name: "empty bundle", req: CreateRequest{ID: "c1", Bundle: ""}, want: errdefs.ErrInvalidArgument},
		{name: "relative bundle", req: CreateRequest{ID: "c1", Bundle: "bundles/c1"}, want: errdefs.ErrInvalidArgument},
		{name: "bundle with dotdot", req: CreateRequest{ID: "c1", Bundle: filepath.Dir(good) + "/../" + filepath.Base(filepath.Dir(good)) + "/" + filepath.Base(good)}, want: errdefs.ErrInvalidArgument},
		{name: "bundle with dot", req: CreateRequest{ID: "c1", Bundle: good + "/."}, want: errdefs.ErrInvalidArgument},
		{name: "bundle over PATH_MAX", req: CreateRequest{ID: "c1", Bundle: "/" + strings.Repeat("a", 5000)}, want: errdefs.ErrInvalidArgument},
		{name: "nonexistent bundle", req: CreateRequest{ID: "c1", Bundle: "/nonexistent/bundle"}, want: errdefs.ErrNotFound},
		{name: "bundle is a file", req: CreateRequest{ID: "c1", Bundle: file}, want: errdefs.ErrInvalidArgument},
		{name: "no config.json", req: CreateRequest{ID: "c1", Bundle: noConfig}, want: errdefs.ErrNotFound},
		{name: "config.json is a directory", req: CreateRequest{ID: "c1", Bundle: configDir}, want: errdefs.ErrInvalidArgument},
		{name: "garbage config.json", req: CreateRequest{ID: "c1", Bundle: garbage}, want: errdefs.ErrInvalidArgument},
		{name: "config.json without root", req: CreateRequest{ID: "c1", Bundle: noRoot}, want: errdefs.ErrInvalidArgument},
		{name: "config.json with empty root path", req: CreateRequest{ID: "c1", Bundle: emptyRoot}, want: errdefs.ErrInvalidArgument},
		{name: "rootfs target dotdot", req: CreateRequest{ID: "c1", Bundle: good, Rootfs: []rootfs.Mount{{Type: "bind", Source: "/x", Target: "../x"}}}, want: errdefs.ErrInvalidArgument},
		{name: "rootfs target absolute", req: CreateRequest{ID: "c1", Bundle: good, Rootfs: []rootfs.Mount{{Type: "bind", Source: "/x", Target: "/etc"}}}, want: errdefs.ErrInvalidArgument},
		{name: "rootfs target inside", req: CreateRequest{ID: "c1", Bundle: good, Rootfs: []rootfs.Mount{{Type: "bind", Source: "/x", Target: "a/b"}}}},
		{name: "rootfs mount without type", req: CreateRequest{ID: "c1", Bundle: good, Rootfs: []rootfs.Mount{{Source: "/x"}}}, want: errdefs.ErrInvalidArgument},
		{name: "stream path over PATH_MAX", req: CreateRequest{ID: "c1", Bundle: good, Stdio: stdio.Stdio{Stdout: "/" + strings.Repeat("a", 5000)}}, want: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := validateCreate(tt.req)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("validateCreate: got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("validateCreate: got %v, want %v", err, tt.want)
			}
		})
	}

	// Through the Manager, a rejected request reaches neither the bundle
	// nor the runtime.
	p := newPod(t)
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		t.Run("Manager/"+tt.name, func(t *testing.T) {
			_, err := p.m.Create(context.Background(), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create: got %v, want %v", err, tt.want)
			}
			if len(tt.req.Bundle) < 4096 {
				for _, f := range []string{optionsFile, runtimeFile} {
					if _, err := os.Stat(filepath.Join(tt.req.Bundle, f)); err == nil {
						t.Errorf("rejected create wrote %s", f)
					}
				}
			}
		})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for b, e := range p.engines {
		if calls := e.Calls(); len(calls) != 0 {
			t.Errorf("runtime for %s called by rejected creates: %q", b, calls)
		}
	}
}

func TestReadSpecAnnotations(t *testing.T) {
	b := newBundle(t, map[string]string{annotationSandboxID: "pod1"})
	s, err := readSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Root == nil || s.Root.Path != "rootfs" || s.Annotations[annotationSandboxID] != "pod1" {
		t.Errorf("readSpec: got root %+v, annotations %v", s.Root, s.Annotations)
	}
}
