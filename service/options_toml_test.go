package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

func criOptions(t *testing.T, o *runtimeoptions.Options) []byte {
	t.Helper()
	data, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// containerdBody is what containerd 2.x's CRI plugin sends for a runtime
// table whose options section is table (GenerateRuntimeOptions in
// internal/cri/config): the section, decoded with the rest of config.toml
// into a map[string]any, marshalled again with go-toml/v2.
func containerdBody(t *testing.T, table string) []byte {
	t.Helper()
	var section map[string]any
	if err := toml.Unmarshal([]byte(table), &section); err != nil {
		t.Fatalf("containerd would not load this options table: %v", err)
	}
	body, err := toml.Marshal(section)
	if err != nil {
		t.Fatalf("marshal the options table as containerd does: %v", err)
	}
	return body
}

// TestOptionsFromTOML: the options tables users write in config.toml (or
// in the file a ConfigPath names), read as TOML by go-toml. Each table is
// decoded as written (ConfigPath) and as containerd 2.x re-marshals it
// into ConfigBody, unless containerd could not load it at all (raw).
func TestOptionsFromTOML(t *testing.T) {
	tests := []struct {
		name  string
		table string
		raw   bool // only as written: containerd would refuse the config
		want  ociruntime.Options
		err   string // a substring of the error, which is InvalidArgument
	}{
		{name: "empty: the shim's defaults", table: ""},
		{name: "the shipped table", table: "# The OCI runtime.\nBinaryName = \"runc\"\nSystemdCgroup = false\n",
			want: ociruntime.Options{BinaryName: "runc"}},
		{name: "every option by its Go name", table: `
BinaryName = "/usr/local/bin/crun"
Root = "/run/crun"
ShimCgroup = "/shim"
CriuImagePath = "/var/criu/images"
CriuWorkPath = "/var/criu/work"
SystemdCgroup = true
NoPivotRoot = true
NoNewKeyring = true
IoUid = 1000
IoGid = 1001
`, want: ociruntime.Options{BinaryName: "/usr/local/bin/crun", Root: "/run/crun", ShimCgroup: "/shim",
			CriuImagePath: "/var/criu/images", CriuWorkPath: "/var/criu/work", SystemdCgroup: true,
			NoPivotRoot: true, NoNewKeyring: true, IoUID: 1000, IoGID: 1001}},
		{name: "every option in snake_case", table: `
binary_name = "crun"
root = "/run/crun"
shim_cgroup = "/shim"
criu_image_path = "/i"
criu_work_path = "/w"
systemd_cgroup = true
no_pivot_root = true
no_new_keyring = true
io_uid = 7
io_gid = 8
`, want: ociruntime.Options{BinaryName: "crun", Root: "/run/crun", ShimCgroup: "/shim", CriuImagePath: "/i",
			CriuWorkPath: "/w", SystemdCgroup: true, NoPivotRoot: true, NoNewKeyring: true, IoUID: 7, IoGID: 8}},
		{name: "mixed case", table: "binaryname = 'crun'\nSYSTEMDCGROUP = true\nIo_Uid = 5\nioGID = 6\nROOT = '/r'\n",
			want: ociruntime.Options{BinaryName: "crun", SystemdCgroup: true, IoUID: 5, IoGID: 6, Root: "/r"}},
		{name: "quoted keys and literal strings", table: "\"BinaryName\" = 'C:\\not\\escaped'\n'Root' = \"/run/\\u00e9\\t\"\n",
			want: ociruntime.Options{BinaryName: `C:\not\escaped`, Root: "/run/é\t"}},
		{name: "hex, octal, binary and underscored integers", table: "IoUid = 0x3e8\nIoGid = 0o1750\n",
			want: ociruntime.Options{IoUID: 1000, IoGID: 1000}},
		{name: "binary and underscores", table: "IoUid = 0b1111101000\nIoGid = 1_000\n",
			want: ociruntime.Options{IoUID: 1000, IoGID: 1000}},
		{name: "largest gid", table: "IoGid = 4294967295\n", want: ociruntime.Options{IoGID: 1<<32 - 1}},
		{name: "floats elsewhere are ignored", table: "Weight = 0.5\nLimit = inf\nRatio = nan\nBig = 6.02e23\nBinaryName = 'runc'\n",
			want: ociruntime.Options{BinaryName: "runc"}},
		{name: "multi-line basic string", table: "Root = \"\"\"\n/run/\\\n   runc\"\"\"\n",
			want: ociruntime.Options{Root: "/run/runc"}},
		{name: "multi-line literal string", table: "BinaryName = '''\n/opt/bin/runc'''\nNote = '''\nline one\nline two\n'''\n",
			want: ociruntime.Options{BinaryName: "/opt/bin/runc"}},
		{name: "inline tables elsewhere are ignored", table: "Extra = { debug = true, args = ['--log', 'x'] }\nSystemdCgroup = true\n",
			want: ociruntime.Options{SystemdCgroup: true}},
		{name: "sub-tables are ignored, and their keys are not options", table: `
BinaryName = "runc"
[Extra]
  BinaryName = "crun"
  SystemdCgroup = "not a bool, and not an option here"
  [Extra.deeper]
    IoUid = -1
[[Hooks]]
  path = "/a"
[[Hooks]]
  path = "/b"
`, want: ociruntime.Options{BinaryName: "runc"}},
		{name: "dotted keys are tables", table: "runtime.debug = true\nBinaryName = 'runc'\n",
			want: ociruntime.Options{BinaryName: "runc"}},
		{name: "arrays elsewhere are ignored", table: "Args = ['--debug', 1, [true]]\nNoPivotRoot = true\n",
			want: ociruntime.Options{NoPivotRoot: true}},
		{name: "unknown keys, other runtimes' and deprecated ones, are ignored", table: `
ConfigPath = ""
TaskApiAddress = "ttrpc+unix:///x"
TaskApiVersion = 3
PodAnnotations = ["io.kubernetes.cri.*"]
Created = 1979-05-27T07:32:00Z
Day = 1979-05-27
Debug = true
NoNewKeyring = true
`, want: ociruntime.Options{NoNewKeyring: true}},
		{name: "booleans false", table: "SystemdCgroup = false\nNoPivotRoot = false\nNoNewKeyring = false\n"},
		{name: "the libcontainer exec engine", table: "engine = 'libcontainer'\n",
			want: ociruntime.Options{Engine: ociruntime.EngineLibcontainer}},
		{name: "the runc engine, by name", table: "Engine = \"runc\"\n", want: ociruntime.Options{Engine: ociruntime.EngineRunc}},
		{name: "an unknown engine", table: "engine = 'crun'\n", err: `engine: engine "crun", want "runc" or "libcontainer"`},
		{name: "a boolean for the engine", table: "engine = true\n", err: "engine: is a boolean, want a string"},

		{name: "string for a boolean", table: "SystemdCgroup = 'true'\n", err: `SystemdCgroup: is a string, want a boolean`},
		{name: "integer for a boolean", table: "NoPivotRoot = 1\n", err: "NoPivotRoot: is an integer, want a boolean"},
		{name: "boolean for a string", table: "BinaryName = true\n", err: "BinaryName: is a boolean, want a string"},
		{name: "array for a string", table: "BinaryName = ['runc']\n", err: "BinaryName: is an array, want a string"},
		{name: "inline table for a string", table: "root = { path = '/run' }\n", err: "root: is a table, want a string"},
		{name: "sub-table for a string", table: "[BinaryName]\npath = 'runc'\n", err: "BinaryName: is a table, want a string"},
		{name: "dotted key makes an option a table", table: "Root.path = '/run'\n", err: "Root: is a table, want a string"},
		{name: "date for a string", table: "Root = 1979-05-27\n", err: "Root: is a toml.LocalDate, want a string"},
		{name: "string for an id", table: "IoUid = '1000'\n", err: "IoUid: is a string, want an integer"},
		{name: "float for an id", table: "io_gid = 1000.0\n", err: "io_gid: is a float, want an integer"},
		{name: "negative id", table: "IoUid = -1\n", err: "IoUid: -1 is not a uid or gid"},
		{name: "id over uint32", table: "IoGid = 0x1_0000_0000\n", err: "IoGid: 4294967296 is not a uid or gid"},
		{name: "two names of one option", table: "BinaryName = 'runc'\nbinary_name = 'crun'\n",
			err: `keys "BinaryName" and "binary_name" both set BinaryName`},
		{name: "two cases of one option", table: "Root = '/a'\nroot = '/a'\n", err: `keys "Root" and "root" both set Root`},
		{name: "a key given twice", table: "Root = '/a'\nRoot = '/b'\n", raw: true, err: "TOML line 2"},
		{name: "unterminated string", table: "BinaryName = 'runc\n", raw: true, err: "TOML line 1"},
		{name: "no value", table: "\n\nBinaryName =\n", raw: true, err: "TOML line 3"},
		{name: "text after the value", table: "SystemdCgroup = trueish\n", raw: true, err: "TOML line 1"},
		{name: "bad escape", table: "Root = \"\\q\"\n", raw: true, err: "TOML line 1"},
	}
	for _, tt := range tests {
		forms := []struct {
			name string
			doc  func(t *testing.T) []byte
		}{{"as written", func(*testing.T) []byte { return []byte(tt.table) }}}
		if !tt.raw {
			forms = append(forms, struct {
				name string
				doc  func(t *testing.T) []byte
			}{"as containerd sends it", func(t *testing.T) []byte { return containerdBody(t, tt.table) }})
		}
		for _, form := range forms {
			t.Run(tt.name+"/"+form.name, func(t *testing.T) {
				doc := form.doc(t)
				got, err := optionsFromTOML(doc)
				if tt.err != "" {
					if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tt.err) {
						t.Fatalf("optionsFromTOML(%q) = %+v, %v; want InvalidArgument containing %q", doc, got, err, tt.err)
					}
					return
				}
				if err != nil {
					t.Fatalf("optionsFromTOML(%q): %v", doc, err)
				}
				if got != tt.want {
					t.Errorf("optionsFromTOML(%q) = %+v, want %+v", doc, got, tt.want)
				}
			})
		}
	}
}

// TestDecodeCRIOptions: the runtimeoptions.v1.Options CRI sends a
// runtime_type other than io.containerd.runc.v2 carry the options as TOML
// in ConfigBody (containerd 2.x) or in the file ConfigPath names; 1.6
// sends an empty body unless the section sets ConfigPath.
func TestDecodeCRIOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opts.toml")
	if err := os.WriteFile(path, []byte("BinaryName = \"/opt/crun\"\nIoUid = 7\n[crun]\nflags = ['--debug']\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("IoUid = 'x'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts *runtimeoptions.Options
		want ociruntime.Options
		err  error
		msg  string
	}{
		{name: "containerd 1.6: empty", opts: &runtimeoptions.Options{}, want: ociruntime.Options{}},
		{name: "containerd 2.x body", opts: &runtimeoptions.Options{ConfigBody: containerdBody(t,
			"BinaryName = 'runc'\nIoGid = 1000\nIoUid = 1000\nNoNewKeyring = true\nNoPivotRoot = false\nRoot = '/run/x y'\nShimCgroup = '/shim'\nSystemdCgroup = true\n")},
			want: ociruntime.Options{BinaryName: "runc", IoUID: 1000, IoGID: 1000, NoNewKeyring: true, Root: "/run/x y", ShimCgroup: "/shim", SystemdCgroup: true}},
		{name: "config path", opts: &runtimeoptions.Options{ConfigPath: path}, want: ociruntime.Options{BinaryName: "/opt/crun", IoUID: 7}},
		{name: "body wins over path", opts: &runtimeoptions.Options{ConfigPath: path, ConfigBody: []byte("Root = '/r'\n")},
			want: ociruntime.Options{Root: "/r"}},
		{name: "missing config path", opts: &runtimeoptions.Options{ConfigPath: path + ".missing"}, err: errdefs.ErrNotFound},
		{name: "config path is a directory", opts: &runtimeoptions.Options{ConfigPath: filepath.Dir(path)}, err: errdefs.ErrInvalidArgument},
		{name: "type error in the body", opts: &runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = 'yes'\n")},
			err: errdefs.ErrInvalidArgument, msg: "runtime options ConfigBody: SystemdCgroup: is a string, want a boolean"},
		{name: "type error in the file", opts: &runtimeoptions.Options{ConfigPath: bad},
			err: errdefs.ErrInvalidArgument, msg: "runtime options ConfigPath \"" + bad + "\": IoUid: is a string, want an integer"},
		{name: "syntax error", opts: &runtimeoptions.Options{ConfigBody: []byte("BinaryName = 'runc\n")}, err: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRuntimeOptions("runtimeoptions.v1.Options", criOptions(t, tt.opts))
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(errString(err), tt.msg) {
					t.Fatalf("DecodeRuntimeOptions = %+v, %v; want %v containing %q", got, err, tt.err, tt.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeRuntimeOptions: %v", err)
			}
			if got != tt.want {
				t.Errorf("DecodeRuntimeOptions = %+v, want %+v", got, tt.want)
			}
		})
	}
	// containerd has sent type URLs with a prefix too.
	if _, err := DecodeRuntimeOptions("types.containerd.io/runtimeoptions.v1.Options", criOptions(t, &runtimeoptions.Options{})); err != nil {
		t.Errorf("prefixed type URL: %v", err)
	}
	if _, err := DecodeRuntimeOptions("runtimeoptions.v1.Options", []byte{0xff}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("garbage protobuf: %v, want InvalidArgument", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
