package ociruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	runc "github.com/containerd/go-runc"
)

// FeaturesCacheDir holds what each runtime binary's `features` printed,
// one file per binary file (see binaryKey). containerd runs the shim's
// -info before every task create whose spec has idmapped mounts (every
// container of a pod with a user namespace: core/runtime/v2
// validateRuntimeFeatures) and at CRI start per runtime handler, so the
// answer must not cost a runtime run each time. /run is a tmpfs: the
// cache goes at reboot, and a replaced binary has a new key anyway.
var FeaturesCacheDir = "/run/containerd-shim-sandbox-v2/features"

// Features returns what `<binary> features` prints: the runtime-spec
// features.Features JSON that containerd reads from the shim's -info.
// The answer is read from FeaturesCacheDir when this binary file has
// answered before, and stored there otherwise; a cache that cannot be
// read or written only costs the run. A runtime without the command
// (youki did not have it) is an error the caller may ignore, and is asked
// again next time. It waits for the binary itself, so it is for a
// process without the shim's reaper (the -info command), whose wait4
// would otherwise take the exit.
func Features(ctx context.Context, binary string) ([]byte, error) {
	if binary == "" {
		binary = runc.DefaultCommand
	}
	key, err := keyOf(binary)
	if err != nil {
		return nil, err
	}
	cached := filepath.Join(FeaturesCacheDir, key.fileName())
	if out, err := os.ReadFile(cached); err == nil && json.Valid(out) {
		return out, nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, key.path, "features")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s features: %w (%s)", key.path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if !json.Valid(out) {
		return nil, fmt.Errorf("%s features printed no JSON", key.path)
	}
	// Best effort: the answer is right whether or not it is kept.
	_ = storeFeatures(cached, out)
	return out, nil
}

// fileName names the cache file of one binary file: a digest of its path
// and identity, so the name is fixed-length and safe whatever the path.
func (k binaryKey) fileName() string {
	sum := sha256.Sum256([]byte(k.path + "\x00" +
		strconv.FormatUint(k.dev, 10) + "\x00" + strconv.FormatUint(k.ino, 10) + "\x00" +
		strconv.FormatInt(k.mtime, 10) + "\x00" + strconv.FormatInt(k.size, 10)))
	return hex.EncodeToString(sum[:16]) + ".json"
}

// storeFeatures writes the answer beside its final name and renames it
// into place, so a concurrent -info reads either nothing or all of it.
func storeFeatures(path string, out []byte) (retErr error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, werr := tmp.Write(out)
	if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
