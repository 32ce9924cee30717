package service

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"google.golang.org/protobuf/proto"
)

func criOptions(t *testing.T, o *runtimeoptions.Options) []byte {
	t.Helper()
	data, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDecodeCRIOptions: the options CRI sends a runtime_type other than
// io.containerd.runc.v2 carry the runtime table's options section as TOML,
// written by containerd's go-toml (literal strings, keys sorted).
func TestDecodeCRIOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opts.toml")
	if err := os.WriteFile(path, []byte("BinaryName = \"/opt/crun\"\nIoUid = 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts *runtimeoptions.Options
		want ociruntime.Options
		err  error
	}{
		{name: "containerd 1.6: empty", opts: &runtimeoptions.Options{}, want: ociruntime.Options{}},
		{name: "containerd 2.x body", opts: &runtimeoptions.Options{ConfigBody: []byte(
			"BinaryName = 'runc'\nConfigPath = ''\nIoGid = 1000\nIoUid = 1000\nNoNewKeyring = true\nNoPivotRoot = false\nRoot = '/run/x y'\nShimCgroup = '/shim'\nSystemdCgroup = true\n")},
			want: ociruntime.Options{BinaryName: "runc", IoUID: 1000, IoGID: 1000, NoNewKeyring: true, Root: "/run/x y", ShimCgroup: "/shim", SystemdCgroup: true}},
		{name: "basic strings, comments, snake case", opts: &runtimeoptions.Options{ConfigBody: []byte(
			"# the runtime\nbinary_name = \"/usr/bin/run\\\"c\\u00e9\"  # quoted\n\n\"criu_image_path\" = '/c'\nunknown_key = 'ignored'\n")},
			want: ociruntime.Options{BinaryName: "/usr/bin/run\"cé", CriuImagePath: "/c"}},
		{name: "config path", opts: &runtimeoptions.Options{ConfigPath: path}, want: ociruntime.Options{BinaryName: "/opt/crun", IoUID: 7}},
		{name: "missing config path", opts: &runtimeoptions.Options{ConfigPath: path + ".missing"}, err: errdefs.ErrNotFound},
		{name: "table", opts: &runtimeoptions.Options{ConfigBody: []byte("[options]\nBinaryName = 'runc'\n")}, err: errdefs.ErrInvalidArgument},
		{name: "wrong type", opts: &runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = 'yes'\n")}, err: errdefs.ErrInvalidArgument},
		{name: "negative uid", opts: &runtimeoptions.Options{ConfigBody: []byte("IoUid = -1\n")}, err: errdefs.ErrInvalidArgument},
		{name: "array", opts: &runtimeoptions.Options{ConfigBody: []byte("BinaryName = ['runc']\n")}, err: errdefs.ErrInvalidArgument},
		{name: "unterminated", opts: &runtimeoptions.Options{ConfigBody: []byte("BinaryName = 'runc\n")}, err: errdefs.ErrInvalidArgument},
		{name: "no value", opts: &runtimeoptions.Options{ConfigBody: []byte("BinaryName =\n")}, err: errdefs.ErrInvalidArgument},
		{name: "trailing text", opts: &runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = trueish\n")}, err: errdefs.ErrInvalidArgument},
		{name: "duplicate key", opts: &runtimeoptions.Options{ConfigBody: []byte("Root = '/a'\nRoot = '/b'\n")}, err: errdefs.ErrInvalidArgument},
		{name: "bad escape", opts: &runtimeoptions.Options{ConfigBody: []byte("Root = \"\\q\"\n")}, err: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRuntimeOptions("runtimeoptions.v1.Options", criOptions(t, tt.opts))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("DecodeRuntimeOptions = %+v, %v; want %v", got, err, tt.err)
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
