package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/identifiers"
	"github.com/containerd/errdefs"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// maxPath is the longest bundle or stream path accepted; the kernel's
// PATH_MAX.
const maxPath = 4096

// validateCreate rejects a create request before anything is reserved or
// forked, so a bad request cannot disturb the pod. It returns the part of
// the bundle's spec the shim reads.
func validateCreate(req CreateRequest) (*spec, error) {
	if err := identifiers.Validate(req.ID); err != nil {
		return nil, fmt.Errorf("create: container id: %w", err)
	}
	sp, err := validateBundle(req.Bundle)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", req.ID, err)
	}
	for _, m := range req.Rootfs {
		if m.Type == "" {
			return nil, fmt.Errorf("create %q: rootfs mount of %q has no type: %w", req.ID, m.Source, errdefs.ErrInvalidArgument)
		}
		if m.Target != "" && !filepath.IsLocal(m.Target) {
			return nil, fmt.Errorf("create %q: rootfs mount target %q escapes the rootfs: %w", req.ID, m.Target, errdefs.ErrInvalidArgument)
		}
	}
	if err := validateStdio(req.Stdio); err != nil {
		return nil, fmt.Errorf("create %q: %w", req.ID, err)
	}
	return sp, nil
}

// validateStdio rejects stream names no process could be given: too long,
// relative, or a log URI that is malformed or in the wrong place.
func validateStdio(s stdio.Stdio) error {
	for _, p := range []string{s.Stdin, s.Stdout, s.Stderr} {
		if len(p) > maxPath {
			return fmt.Errorf("stream path of %d bytes: %w", len(p), errdefs.ErrInvalidArgument)
		}
	}
	return stdio.ValidateStdio(s)
}

// validateBundle checks that bundle is a clean absolute directory holding a
// readable OCI config.json, and returns what the shim reads of it.
func validateBundle(bundle string) (*spec, error) {
	switch {
	case bundle == "":
		return nil, fmt.Errorf("bundle path is empty: %w", errdefs.ErrInvalidArgument)
	case len(bundle) > maxPath:
		return nil, fmt.Errorf("bundle path of %d bytes: %w", len(bundle), errdefs.ErrInvalidArgument)
	case !filepath.IsAbs(bundle):
		return nil, fmt.Errorf("bundle path %q is not absolute: %w", bundle, errdefs.ErrInvalidArgument)
	case filepath.Clean(bundle) != strings.TrimSuffix(bundle, "/"):
		return nil, fmt.Errorf("bundle path %q is not clean: %w", bundle, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(bundle)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("bundle %q: %w", bundle, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %v: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %q is not a directory: %w", bundle, errdefs.ErrInvalidArgument)
	}
	return readSpec(bundle)
}

// spec is the part of an OCI runtime spec the shim reads itself.
type spec struct {
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Annotations map[string]string `json:"annotations"`
	Linux       *struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
	} `json:"linux"`
}

// ownPidNamespace reports whether the container gets a PID namespace of
// its own (one of type "pid" without a path): then all its processes die
// with its init. Without one (it joins a pod's or the host's), they do
// not, and the shim kills them as the runc shim does.
func (s *spec) ownPidNamespace() bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == "pid" {
			return ns.Path == ""
		}
	}
	return false
}

// maxSpecSize bounds config.json; real specs are a few KiB.
const maxSpecSize = 16 << 20

func readSpec(bundle string) (*spec, error) {
	path := filepath.Join(bundle, "config.json")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("bundle %q has no config.json: %w", bundle, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open %q: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	defer f.Close()
	var s spec
	dec := json.NewDecoder(&limitedReader{f: f, left: maxSpecSize})
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("parse %q: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	if s.Root == nil || s.Root.Path == "" {
		return nil, fmt.Errorf("%q has no root path: %w", path, errdefs.ErrInvalidArgument)
	}
	return &s, nil
}

type limitedReader struct {
	f    *os.File
	left int64
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, fmt.Errorf("config.json is over %d bytes", maxSpecSize)
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.Read(p)
	r.left -= int64(n)
	return n, err
}
