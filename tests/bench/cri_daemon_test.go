package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestCRIDaemonConfig renders the CRI daemon's config as startCRIDaemon
// does, from the shipped tables, and checks that it parses, keeps the
// CRI plugins on and has every mode's handler.
func TestCRIDaemonConfig(t *testing.T) {
	t.Chdir("../..") // the repository root, where make bench runs
	var cd criDaemon
	tables, err := cd.shippedTables()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{dir: "/tmp/shimbench-x/cri", cri: criConfig("/tmp/cni", "/tmp/hosts") + tables}
	var cfg struct {
		Version         int            `toml:"version"`
		DisabledPlugins []string       `toml:"disabled_plugins"`
		Plugins         map[string]any `toml:"plugins"`
	}
	if err := toml.Unmarshal([]byte(d.config()), &cfg); err != nil {
		t.Fatalf("config does not parse: %v\n%s", err, d.config())
	}
	if cfg.Version != 3 {
		t.Errorf("version = %d, want 3", cfg.Version)
	}
	for _, p := range criPlugins {
		if slices.Contains(cfg.DisabledPlugins, p) {
			t.Errorf("%s is disabled", p)
		}
	}
	rt, _ := cfg.Plugins["io.containerd.cri.v1.runtime"].(map[string]any)
	ctrdCfg, _ := rt["containerd"].(map[string]any)
	handlers, _ := ctrdCfg["runtimes"].(map[string]any)
	for _, h := range []string{cd.pauseHandler, cd.sandboxerHandler} {
		table, ok := handlers[h].(map[string]any)
		if !ok {
			t.Errorf("no runtime table %q in:\n%s", h, d.config())
			continue
		}
		if got := table["runtime_type"]; got != runtimes[0].name {
			t.Errorf("handler %s: runtime_type %v, want %s", h, got, runtimes[0].name)
		}
	}
	if got := handlers[cd.sandboxerHandler].(map[string]any)["sandboxer"]; got != sandboxerName {
		t.Errorf("handler %s: sandboxer %v, want %s", cd.sandboxerHandler, got, sandboxerName)
	}
	if strings.Contains(d.config(), "runtimes."+runcHandler+"]") {
		t.Errorf("the config has a table for %q, which should be containerd's default", runcHandler)
	}
}
