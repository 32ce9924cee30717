package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	runc "github.com/containerd/go-runc"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// What the shim remembers about a container in its bundle, for the
// `delete` action containerd runs after the shim died. The files and
// their format are the runc shim's (cmd/containerd-shim-runc-v2/runc
// upstream), so that each shim's `delete` cleans up after the other:
// containerd runs `delete` with whatever binary is installed under the
// dead shim's name, which after an operator swaps this shim and the runc
// shim (README "Drop-in") is the other one. containerd 1.6's and 1.7's
// runc shim refuse a bundle without the runtime file.
const (
	// optionsFile holds the runtime options as JSON with the protobuf
	// field names (ociruntime.Options has the same json tags as the runc
	// shim's options.Options).
	optionsFile = "options.json"
	// runtimeFile holds the OCI runtime binary, BinaryName, "" for runc.
	runtimeFile = "runtime"
	// legacyStateFile is where builds of this shim before the drop-in
	// work kept the options ({"options": {...}}); read, never written.
	legacyStateFile = "shim-state.json"
	// exitFile is where containerd 2.4's runc shim records the init's
	// exit (a go-runc Exit as JSON), which its `delete` then reports.
	exitFile = "exit.json"
)

type bundleState struct {
	Options ociruntime.Options `json:"options"`
}

// writeBundleState writes the runtime file, then the options, each
// through a rename so that a reader never sees half a file.
func writeBundleState(bundle string, st bundleState) error {
	data, err := json.Marshal(st.Options)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(bundle, runtimeFile, []byte(st.Options.BinaryName)); err != nil {
		return fmt.Errorf("write bundle state: %w", err)
	}
	if err := writeFileAtomic(bundle, optionsFile, data); err != nil {
		return fmt.Errorf("write bundle state: %w", err)
	}
	return nil
}

func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// readBundleState returns the saved options: from the options file, else
// the runtime file (a runc shim that died before writing its options
// still named the binary), else the legacy state file, else the zero
// state (defaults) when the shim never got as far as writing any.
func readBundleState(bundle string) (bundleState, error) {
	var st bundleState
	data, err := os.ReadFile(filepath.Join(bundle, optionsFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &st.Options); err != nil {
			return st, fmt.Errorf("parse %s: %w", optionsFile, err)
		}
		return st, nil
	case !errors.Is(err, os.ErrNotExist):
		return st, err
	}
	data, err = os.ReadFile(filepath.Join(bundle, runtimeFile))
	switch {
	case err == nil:
		st.Options.BinaryName = string(data)
		return st, nil
	case !errors.Is(err, os.ErrNotExist):
		return st, err
	}
	data, err = os.ReadFile(filepath.Join(bundle, legacyStateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return st, nil
	case err != nil:
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", legacyStateFile, err)
	}
	return st, nil
}

// readExitRecord returns the init's exit the runc shim recorded in the
// bundle, with the runc shim's checks; ok is false when there is none.
func readExitRecord(bundle string) (e runc.Exit, ok bool) {
	data, err := os.ReadFile(filepath.Join(bundle, exitFile))
	if err != nil {
		return e, false
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, false
	}
	if e.Pid <= 0 || e.Timestamp.IsZero() || e.Status < 0 {
		return runc.Exit{}, false
	}
	return e, true
}
