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

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// maxPath is the longest bundle or stream path accepted; the kernel's
// PATH_MAX.
const maxPath = 4096

// validateCreate rejects a create request before anything is reserved or
// forked, so a bad request cannot disturb the pod.
func validateCreate(req CreateRequest) error {
	if err := identifiers.Validate(req.ID); err != nil {
		return fmt.Errorf("create: container id: %w", err)
	}
	if err := validateBundle(req.Bundle); err != nil {
		return fmt.Errorf("create %q: %w", req.ID, err)
	}
	for _, m := range req.Rootfs {
		if m.Type == "" {
			return fmt.Errorf("create %q: rootfs mount of %q has no type: %w", req.ID, m.Source, errdefs.ErrInvalidArgument)
		}
		if m.Target != "" && !filepath.IsLocal(m.Target) {
			return fmt.Errorf("create %q: rootfs mount target %q escapes the rootfs: %w", req.ID, m.Target, errdefs.ErrInvalidArgument)
		}
	}
	if err := validateStdio(req.Stdio); err != nil {
		return fmt.Errorf("create %q: %w", req.ID, err)
	}
	return nil
}

// validateStdio rejects stream names no process could be given: too long,
// relative, or a log URI that is malformed or in the wrong place.
func validateStdio(s process.Stdio) error {
	for _, p := range []string{s.Stdin, s.Stdout, s.Stderr} {
		if len(p) > maxPath {
			return fmt.Errorf("stream path of %d bytes: %w", len(p), errdefs.ErrInvalidArgument)
		}
	}
	return process.ValidateStdio(s)
}

// validateBundle checks that bundle is a clean absolute directory holding a
// readable OCI config.json.
func validateBundle(bundle string) error {
	switch {
	case bundle == "":
		return fmt.Errorf("bundle path is empty: %w", errdefs.ErrInvalidArgument)
	case len(bundle) > maxPath:
		return fmt.Errorf("bundle path of %d bytes: %w", len(bundle), errdefs.ErrInvalidArgument)
	case !filepath.IsAbs(bundle):
		return fmt.Errorf("bundle path %q is not absolute: %w", bundle, errdefs.ErrInvalidArgument)
	case filepath.Clean(bundle) != strings.TrimSuffix(bundle, "/"):
		return fmt.Errorf("bundle path %q is not clean: %w", bundle, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(bundle)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("bundle %q: %w", bundle, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("bundle %q: %v: %w", bundle, err, errdefs.ErrInvalidArgument)
	}
	if !fi.IsDir() {
		return fmt.Errorf("bundle %q is not a directory: %w", bundle, errdefs.ErrInvalidArgument)
	}
	if _, err := readSpec(bundle); err != nil {
		return err
	}
	return nil
}

// spec is the part of an OCI runtime spec the shim reads itself.
type spec struct {
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Annotations map[string]string `json:"annotations"`
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
