package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// TestCRIConfigFiles (no root needed): the shipped runtime tables parse as
// TOML and define exactly the handler the shipped RuntimeClass names,
// with runtime_type io.containerd.sandbox.v2 and the runc options table,
// under each containerd generation's plugin; and the whole config the
// suite renders from them parses.
func TestCRIConfigFiles(t *testing.T) {
	handler, err := runtimeClassHandler(filepath.Join(criConfigDir, "runtimeclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if handler != "sandbox" {
		t.Errorf("RuntimeClass handler = %q, want sandbox", handler)
	}
	for _, tc := range []struct {
		file   string
		plugin string
		v      daemonVersion
	}{
		{"containerd-2.x.toml", "io.containerd.cri.v1.runtime", daemonVersion{name: "2.4.2", configVersion: 3}},
		{"containerd-1.6.toml", "io.containerd.grpc.v1.cri", daemonVersion{name: "1.6", configVersion: 2}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(criConfigDir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Plugins map[string]struct {
					Containerd struct {
						Runtimes map[string]struct {
							RuntimeType string         `toml:"runtime_type"`
							Options     map[string]any `toml:"options"`
						} `toml:"runtimes"`
					} `toml:"containerd"`
				} `toml:"plugins"`
			}
			if err := toml.Unmarshal(data, &cfg); err != nil {
				t.Fatalf("parse %s: %v", tc.file, err)
			}
			rts := cfg.Plugins[tc.plugin].Containerd.Runtimes
			rt, ok := rts[handler]
			if len(cfg.Plugins) != 1 || len(rts) != 1 || !ok {
				t.Fatalf("%s: plugins %v, want only %s with the one runtime %q", tc.file, cfg.Plugins, tc.plugin, handler)
			}
			if rt.RuntimeType != sandboxRuntime {
				t.Errorf("runtime_type = %q, want %q", rt.RuntimeType, sandboxRuntime)
			}
			if rt.Options["BinaryName"] != "runc" || rt.Options["SystemdCgroup"] != false {
				t.Errorf("options = %v, want BinaryName runc and SystemdCgroup false", rt.Options)
			}

			p := daemonPaths{root: "/r", state: "/s", address: "/a", ttrpcAddress: "/t", opt: "/o"}
			full, err := criConfig(tc.v, p, "/d", "/d/certs.d")
			if err != nil {
				t.Fatal(err)
			}
			var any map[string]any
			if err := toml.Unmarshal([]byte(full), &any); err != nil {
				t.Fatalf("the rendered config does not parse: %v\n%s", err, full)
			}
			if !strings.Contains(full, string(data)[strings.Index(string(data), "[plugins"):][:40]) {
				t.Errorf("the rendered config does not hold %s", tc.file)
			}
			t.Logf("rendered config:\n%s", full)
		})
	}
}
