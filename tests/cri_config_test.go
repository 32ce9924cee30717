package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/cri"
)

// TestCRIConfigFiles (no root needed): the shipped runtime tables parse as
// TOML and define exactly one handler under each containerd generation's
// plugin, with the runc options table: the handler the shipped
// RuntimeClass names, with runtime_type io.containerd.sandbox.v2, and in
// the drop-in tables the default handler runc, with runtime_type
// io.containerd.runc.v2 and runtime_path naming the installed shim, and
// in the shim sandboxer's table (2.x only) the handler its RuntimeClass
// names, with sandboxer "shim" and disable_pause_image_pull (no other
// table sets either). The whole config the suite renders from each, for
// each way it installs the shim, parses; where the suite adds the shim
// sandboxer's table, the config holds it verbatim but its runtime_type.
func TestCRIConfigFiles(t *testing.T) {
	handler, err := cri.RuntimeClassHandler(filepath.Join(criConfigDir, "runtimeclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if handler != "sandbox" {
		t.Errorf("RuntimeClass handler = %q, want sandbox", handler)
	}
	shimHandler, err := cri.RuntimeClassHandler(filepath.Join(criConfigDir, sandboxerRuntimeClass))
	if err != nil {
		t.Fatal(err)
	}
	if shimHandler != "sandbox-shim" {
		t.Errorf("%s handler = %q, want sandbox-shim", sandboxerRuntimeClass, shimHandler)
	}
	v2 := daemonVersion{name: "2.4.2", configVersion: 3}
	v16 := daemonVersion{name: "1.6", configVersion: 2}
	own := criInstall{shim: "/s", runtimeType: sandboxRuntime}
	ownSandboxer := criInstall{shim: "/s", runtimeType: sandboxRuntime, sandboxer: true}
	const installed = "/usr/local/bin/containerd-shim-sandbox-v2"
	for _, tc := range []struct {
		file        string
		plugin      string
		v           daemonVersion
		handler     string
		runtimeType string
		runtimePath string
		installs    []criInstall
		sandboxer   bool // the shim sandboxer's table
	}{
		{"containerd-2.x.toml", "io.containerd.cri.v1.runtime", v2, handler, sandboxRuntime, "",
			[]criInstall{own, {runtimeType: runcRuntime}}, false},
		{"containerd-1.6.toml", "io.containerd.grpc.v1.cri", v16, handler, sandboxRuntime, "",
			[]criInstall{own, {runtimeType: runcRuntime}}, false},
		{"containerd-2.x-dropin.toml", "io.containerd.cri.v1.runtime", v2, "runc", runcRuntime, installed,
			[]criInstall{{shim: "/s", runtimeType: runcRuntime, dropIn: dropInRuntimePath}, {shim: "/s", runtimeType: runcRuntime, dropIn: dropInPATH}}, false},
		{"containerd-1.6-dropin.toml", "io.containerd.grpc.v1.cri", v16, "runc", runcRuntime, installed,
			[]criInstall{{shim: "/s", runtimeType: runcRuntime, dropIn: dropInRuntimePath}, {shim: "/s", runtimeType: runcRuntime, dropIn: dropInPATH}}, false},
		{sandboxerTableFile, "io.containerd.cri.v1.runtime", v2, shimHandler, sandboxRuntime, "",
			[]criInstall{ownSandboxer, {runtimeType: runcRuntime, sandboxer: true}}, true},
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
							RuntimeType           string         `toml:"runtime_type"`
							RuntimePath           string         `toml:"runtime_path"`
							Sandboxer             string         `toml:"sandboxer"`
							DisablePauseImagePull bool           `toml:"disable_pause_image_pull"`
							Options               map[string]any `toml:"options"`
						} `toml:"runtimes"`
					} `toml:"containerd"`
				} `toml:"plugins"`
			}
			if err := toml.Unmarshal(data, &cfg); err != nil {
				t.Fatalf("parse %s: %v", tc.file, err)
			}
			rts := cfg.Plugins[tc.plugin].Containerd.Runtimes
			rt, ok := rts[tc.handler]
			if len(cfg.Plugins) != 1 || len(rts) != 1 || !ok {
				t.Fatalf("%s: plugins %v, want only %s with the one runtime %q", tc.file, cfg.Plugins, tc.plugin, tc.handler)
			}
			if rt.RuntimeType != tc.runtimeType || rt.RuntimePath != tc.runtimePath {
				t.Errorf("runtime_type = %q, runtime_path = %q; want %q, %q", rt.RuntimeType, rt.RuntimePath, tc.runtimeType, tc.runtimePath)
			}
			wantSandboxer := ""
			if tc.sandboxer {
				wantSandboxer = sandboxerName
			}
			if rt.Sandboxer != wantSandboxer || rt.DisablePauseImagePull != tc.sandboxer {
				t.Errorf("sandboxer = %q, disable_pause_image_pull = %v; want %q, %v", rt.Sandboxer, rt.DisablePauseImagePull, wantSandboxer, tc.sandboxer)
			}
			if rt.Options["BinaryName"] != "runc" || rt.Options["SystemdCgroup"] != false {
				t.Errorf("options = %v, want BinaryName runc and SystemdCgroup false", rt.Options)
			}

			for _, inst := range tc.installs {
				name := inst.runtimeType
				if inst.dropIn != noDropIn {
					name = "drop-in " + string(inst.dropIn)
				}
				t.Run(name, func(t *testing.T) {
					p := daemonPaths{root: "/r", state: "/s", address: "/a", ttrpcAddress: "/t", opt: "/o"}
					full, err := criConfig(tc.v, inst, p, "/d", "/d/certs.d")
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
					if tc.sandboxer {
						want, err := runtimeSnippet(filepath.Join(criConfigDir, tc.file), inst.runtimeType)
						if err != nil {
							t.Fatal(err)
						}
						if !strings.Contains(full, want) {
							t.Errorf("the rendered config does not hold %s with runtime_type %q", tc.file, inst.runtimeType)
						}
					}
					switch inst.dropIn {
					case dropInRuntimePath:
						if want := `runtime_path = "/d/bin/containerd-shim-sandbox-v2"`; !strings.Contains(full, want) || strings.Contains(full, installed) {
							t.Errorf("the rendered config does not have %s in place of %s", want, installed)
						}
					case dropInPATH:
						if strings.Contains(full, "runtime_path =") {
							t.Errorf("the rendered config for a PATH drop-in has a runtime_path")
						}
					default:
						if want := fmt.Sprintf("runtime_type = %q", inst.runtimeType); !strings.Contains(full, want) {
							t.Errorf("the rendered config does not have %s", want)
						}
					}
					t.Logf("rendered config:\n%s", full)
				})
			}
		})
	}
}

// TestCRIConfigSandboxerNoOptions (no root needed): the shim sandboxer's
// table as the README has containerd 2.2 users write it (and
// TestCRISandboxerPodNetwork runs it there) keeps every key of the
// shipped table but its options table.
func TestCRIConfigSandboxerNoOptions(t *testing.T) {
	v22 := daemonVersion{name: "2.2", configVersion: 3}
	inst := criInstall{shim: "/s", runtimeType: sandboxRuntime, sandboxer: true, sandboxerNoOptions: true}
	p := daemonPaths{root: "/r", state: "/s", address: "/a", ttrpcAddress: "/t", opt: "/o"}
	full, err := criConfig(v22, inst, p, "/d", "/d/certs.d")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(full), &doc); err != nil {
		t.Fatalf("the rendered config does not parse: %v\n%s", err, full)
	}
	handler, err := cri.RuntimeClassHandler(filepath.Join(criConfigDir, sandboxerRuntimeClass))
	if err != nil {
		t.Fatal(err)
	}
	rt, ok := tomlTable(doc, "plugins", criRuntimesKey(v22), "containerd", "runtimes", handler)
	if !ok {
		t.Fatalf("the rendered config has no runtime %q:\n%s", handler, full)
	}
	want := map[string]any{"runtime_type": sandboxRuntime, "sandboxer": sandboxerName, "disable_pause_image_pull": true}
	if len(rt) != len(want) {
		t.Errorf("runtime %s = %v, want exactly %v", handler, rt, want)
	}
	for k, w := range want {
		if rt[k] != w {
			t.Errorf("runtime %s: %s = %v, want %v", handler, k, rt[k], w)
		}
	}
	// The suite's own handler keeps its options: only the sandboxer's go.
	own, ok := tomlTable(doc, "plugins", criRuntimesKey(v22), "containerd", "runtimes", "sandbox", "options")
	if !ok || own["BinaryName"] != "runc" {
		t.Errorf("the suite's handler lost its options: %v", own)
	}
}
