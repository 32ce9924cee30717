package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	runc "github.com/containerd/go-runc"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// TestBundleStateRuncFormat: the options are written as the runc shim
// writes them (options.json read with encoding/json into its
// options.Options, the runtime file holding BinaryName), so its `delete`
// can clean up after this shim, and read back.
func TestBundleStateRuncFormat(t *testing.T) {
	dir := t.TempDir()
	st, err := readBundleState(dir)
	if err != nil || st != (bundleState{}) {
		t.Fatalf("readBundleState with no file: got (%+v, %v), want zero state", st, err)
	}
	want := bundleState{Options: ociruntime.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true,
		NoPivotRoot: true, NoNewKeyring: true, IoUID: 1, IoGID: 2, ShimCgroup: "/shim", CriuImagePath: "/i", CriuWorkPath: "/w"}}
	if err := writeBundleState(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := readBundleState(dir)
	if err != nil || got != want {
		t.Fatalf("readBundleState: got (%+v, %v), want %+v", got, err, want)
	}

	data, err := os.ReadFile(filepath.Join(dir, optionsFile))
	if err != nil {
		t.Fatal(err)
	}
	var o options.Options
	if err := json.Unmarshal(data, &o); err != nil {
		t.Fatalf("%s as the runc shim reads it: %v", optionsFile, err)
	}
	if o.BinaryName != "crun" || o.Root != "/run/crun" || !o.SystemdCgroup || !o.NoPivotRoot || !o.NoNewKeyring ||
		o.IoUid != 1 || o.IoGid != 2 || o.ShimCgroup != "/shim" || o.CriuImagePath != "/i" || o.CriuWorkPath != "/w" {
		t.Errorf("%s as the runc shim reads it: got %+v, want the options written", optionsFile, &o)
	}
	if data, err := os.ReadFile(filepath.Join(dir, runtimeFile)); err != nil || string(data) != "crun" {
		t.Errorf("%s: got (%q, %v), want crun", runtimeFile, data, err)
	}
	for _, tmp := range []string{"." + optionsFile, "." + runtimeFile} {
		if _, err := os.Stat(filepath.Join(dir, tmp)); err == nil {
			t.Errorf("temporary file %s left", tmp)
		}
	}
}

// TestReadBundleState: what each shim may have left in a bundle, read
// with the runc shim's precedence (options, then the runtime file) and
// this shim's earlier file last.
func TestReadBundleState(t *testing.T) {
	runcOpts, err := json.Marshal(&options.Options{BinaryName: "/usr/bin/runc", Root: "/run/r", SystemdCgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		files   map[string]string
		want    ociruntime.Options
		wantErr bool
	}{
		{name: "nothing", files: nil, want: ociruntime.Options{}},
		{name: "runc shim's options and runtime", files: map[string]string{optionsFile: string(runcOpts), runtimeFile: "/usr/bin/runc"},
			want: ociruntime.Options{BinaryName: "/usr/bin/runc", Root: "/run/r", SystemdCgroup: true}},
		{name: "runtime file only", files: map[string]string{runtimeFile: "crun"}, want: ociruntime.Options{BinaryName: "crun"}},
		{name: "empty runtime file", files: map[string]string{runtimeFile: ""}, want: ociruntime.Options{}},
		{name: "earlier state file", files: map[string]string{legacyStateFile: `{"options":{"binary_name":"crun","root":"/run/c"}}`},
			want: ociruntime.Options{BinaryName: "crun", Root: "/run/c"}},
		{name: "options over earlier state file", files: map[string]string{optionsFile: `{"root":"/new"}`, legacyStateFile: `{"options":{"root":"/old"}}`},
			want: ociruntime.Options{Root: "/new"}},
		{name: "broken options", files: map[string]string{optionsFile: "{"}, wantErr: true},
		{name: "broken earlier state file", files: map[string]string{legacyStateFile: "{"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readBundleState(dir)
			if tt.wantErr {
				if err == nil {
					t.Errorf("readBundleState: got (%+v, nil), want an error", got)
				}
				return
			}
			if err != nil || got.Options != tt.want {
				t.Errorf("readBundleState: got (%+v, %v), want %+v", got.Options, err, tt.want)
			}
		})
	}
}

// TestReadExitRecord: the init exit containerd 2.4's runc shim records,
// with its checks.
func TestReadExitRecord(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	record := func(e runc.Exit) string {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	tests := []struct {
		name   string
		data   string // "" for no file
		want   runc.Exit
		wantOK bool
	}{
		{name: "none"},
		{name: "recorded", data: record(runc.Exit{Timestamp: at, Pid: 42, Status: 3}), want: runc.Exit{Timestamp: at, Pid: 42, Status: 3}, wantOK: true},
		{name: "status 0", data: record(runc.Exit{Timestamp: at, Pid: 42, Status: 0}), want: runc.Exit{Timestamp: at, Pid: 42}, wantOK: true},
		{name: "no pid", data: record(runc.Exit{Timestamp: at, Status: 3})},
		{name: "no time", data: record(runc.Exit{Pid: 42, Status: 3})},
		{name: "negative status", data: record(runc.Exit{Timestamp: at, Pid: 42, Status: -1})},
		{name: "broken", data: "{"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.data != "" {
				if err := os.WriteFile(filepath.Join(dir, exitFile), []byte(tt.data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := readExitRecord(dir)
			if ok != tt.wantOK || !got.Timestamp.Equal(tt.want.Timestamp) || got.Pid != tt.want.Pid || got.Status != tt.want.Status {
				t.Errorf("readExitRecord: got (%+v, %v), want (%+v, %v)", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
