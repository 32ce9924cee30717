package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// bundleStateFile is what the shim remembers about a container in its
// bundle, for the `delete` subcommand run after the shim died.
const bundleStateFile = "shim-state.json"

type bundleState struct {
	Options ociruntime.Options `json:"options"`
}

func writeBundleState(bundle string, st bundleState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(bundle, "."+bundleStateFile)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write bundle state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(bundle, bundleStateFile))
}

// readBundleState returns the saved state, or the zero state (defaults)
// when the shim never got as far as writing it.
func readBundleState(bundle string) (bundleState, error) {
	var st bundleState
	data, err := os.ReadFile(filepath.Join(bundle, bundleStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("parse bundle state: %w", err)
	}
	return st, nil
}
