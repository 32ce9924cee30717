package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// legacyInput is what containerd 1.6 to 2.2 write to `start`: the runtime
// options as a marshalled Any.
func legacyInput(t *testing.T, typeURL string, o *options.Options) []byte {
	t.Helper()
	return mustMarshal(t, &anypb.Any{TypeUrl: typeURL, Value: mustMarshal(t, o)})
}

// bootstrapInput is what containerd 2.3+ write: BootstrapParams with the
// options as an extension (when o is not nil).
func bootstrapInput(t *testing.T, id, namespace string, o *options.Options) []byte {
	t.Helper()
	dir := "/run/containerd/s"
	p := &bootapi.BootstrapParams{
		InstanceID:             id,
		Namespace:              namespace,
		ContainerdVersion:      "2.4.2",
		ContainerdTtrpcAddress: "/run/containerd/containerd.sock.ttrpc",
		ContainerdGrpcAddress:  "/run/containerd/containerd.sock",
		SocketDir:              &dir,
	}
	if o != nil {
		if err := p.AddExtension(o); err != nil {
			t.Fatal(err)
		}
	}
	return mustMarshal(t, p)
}

func TestParseStartInput(t *testing.T) {
	crun := &options.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true, ShimCgroup: "/shim"}
	crunOpts := ociruntime.Options{BinaryName: "crun", Root: "/run/crun", SystemdCgroup: true, ShimCgroup: "/shim"}
	tests := []struct {
		name          string
		data          []byte
		wantBootstrap bool
		wantOpts      ociruntime.Options
		wantErr       error // nil for success; errAny for any error
	}{
		{name: "empty", data: nil, wantBootstrap: false},
		{name: "legacy options", data: legacyInput(t, "containerd.runc.v1.Options", crun), wantOpts: crunOpts},
		{name: "legacy options with typeurl prefix", data: legacyInput(t, "types.containerd.io/containerd.runc.v1.Options", crun), wantOpts: crunOpts},
		{name: "legacy empty options", data: legacyInput(t, "containerd.runc.v1.Options", &options.Options{}), wantOpts: ociruntime.Options{}},
		{name: "legacy other type", data: legacyInput(t, "containerd.runhcs.v1.Options", crun), wantErr: errdefs.ErrInvalidArgument},
		{name: "bootstrap with options", data: bootstrapInput(t, "c1", "ns", &options.Options{BinaryName: "crun"}), wantBootstrap: true, wantOpts: ociruntime.Options{BinaryName: "crun"}},
		{name: "bootstrap all options", data: bootstrapInput(t, "c1", "ns", crun), wantBootstrap: true, wantOpts: crunOpts},
		{name: "bootstrap without options", data: bootstrapInput(t, "c1", "ns", nil), wantBootstrap: true},
		// Not ours: read as legacy options, which it is not; containerd
		// never sends that, and failing beats running with defaults.
		{name: "bootstrap for another id", data: bootstrapInput(t, "other", "ns", crun), wantErr: errdefs.ErrInvalidArgument},
		{name: "bootstrap for another namespace", data: bootstrapInput(t, "c1", "other", crun), wantErr: errdefs.ErrInvalidArgument},
		{name: "garbage", data: []byte{0xff, 0xff, 0xff}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := parseStartInput(tt.data, "c1", "ns")
			switch {
			case tt.wantErr == errAny:
				if err == nil {
					t.Fatal("parseStartInput: got nil error")
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("parseStartInput: got %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("parseStartInput: %v", err)
			}
			if got := in.bootstrap != nil; got != tt.wantBootstrap {
				t.Errorf("bootstrap: got %v, want %v", got, tt.wantBootstrap)
			}
			if in.options != tt.wantOpts {
				t.Errorf("options: got %+v, want %+v", in.options, tt.wantOpts)
			}
			if tt.wantBootstrap {
				b := in.bootstrap
				if b.GetSocketDir() != "/run/containerd/s" || b.GetContainerdGrpcAddress() != "/run/containerd/containerd.sock" || b.GetContainerdVersion() != "2.4.2" {
					t.Errorf("bootstrap params: got %v", b)
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    flags
		wantErr bool
	}{
		{
			name: "containerd start",
			args: []string{"-namespace", "ns", "-address", "/a", "-publish-binary", "/b", "-id", "x", "-debug", "start"},
			want: flags{namespace: "ns", address: "/a", publishBinary: "/b", id: "x", debug: true, action: "start"},
		},
		{
			name: "containerd delete",
			args: []string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", "c1", "-bundle", "/b/c1", "delete"},
			want: flags{namespace: "k8s.io", address: "/run/containerd/containerd.sock", publishBinary: "/usr/bin/containerd", id: "c1", bundle: "/b/c1", action: "delete"},
		},
		{
			name: "daemon",
			args: []string{"-namespace", "ns", "-id", "c1", "-address", "/a"},
			want: flags{namespace: "ns", id: "c1", address: "/a"},
		},
		{name: "version -v", args: []string{"-v"}, want: flags{version: true}},
		{name: "version --version", args: []string{"--version"}, want: flags{version: true}},
		{name: "info", args: []string{"-info"}, want: flags{info: true}},
		{name: "socket", args: []string{"-namespace", "ns", "-socket", "/tmp/s"}, want: flags{namespace: "ns", socket: "/tmp/s"}},
		{name: "unknown flag", args: []string{"-nosuchflag"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(append([]string{"/usr/local/bin/containerd-shim-sandbox-v2"}, tt.args...))
			if tt.wantErr {
				if err == nil {
					t.Fatal("parseFlags: got nil error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("parseFlags:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRunRejects(t *testing.T) {
	tests := []struct {
		name string
		f    flags
		want string
	}{
		{name: "no namespace", f: flags{id: "c1", action: "start"}, want: "namespace"},
		{name: "unknown action", f: flags{namespace: "ns", id: "c1", action: "bogus"}, want: `unknown action "bogus"`},
		{name: "relative bundle for delete", f: flags{namespace: "ns", id: "c1", bundle: "rel", action: "delete"}, want: "not absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.f)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestRunStartBootstrap: a containerd 2.3+ caller whose pod shim is
// running gets a BootstrapResult for task API v3 with the socket in the
// directory it named, found with the address it gave.
func TestRunStartBootstrap(t *testing.T) {
	sockDir, err := os.MkdirTemp("/tmp", "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"root":{"path":"rootfs"},"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// The socket name is a contract across shim versions: a new binary
	// must find the shim an old one started.
	sum := sha256.Sum256([]byte("/run/c.sock/ns/pod1"))
	path := filepath.Join(sockDir, fmt.Sprintf("%x", sum))
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	params := &bootapi.BootstrapParams{
		InstanceID:             "c1",
		Namespace:              "ns",
		ContainerdGrpcAddress:  "/run/c.sock",
		ContainerdTtrpcAddress: "/run/c.sock.ttrpc",
		SocketDir:              &sockDir,
	}
	if err := params.AddExtension(&options.Options{BinaryName: "crun"}); err != nil {
		t.Fatal(err)
	}
	t.Chdir(bundle)
	var stdout bytes.Buffer
	f := flags{namespace: "ns", id: "c1", address: "/flag/address/not/used"}
	if err := runStart(context.Background(), f, bytes.NewReader(mustMarshal(t, params)), &stdout); err != nil {
		t.Fatalf("runStart: %v", err)
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a BootstrapResult: %v (%q)", err, stdout.Bytes())
	}
	if res.Version != 3 || res.Address != "unix://"+path || res.Protocol != "ttrpc" {
		t.Errorf("BootstrapResult: got %v, want version 3, unix://%s, ttrpc", &res, path)
	}
	if data, err := os.ReadFile(filepath.Join(bundle, "address")); err != nil || string(data) != "unix://"+path {
		t.Errorf("address file: got (%q, %v)", data, err)
	}
}

// TestRunDelete: the delete action runs the runtime named in the saved
// options (for a container the runtime still has a record of) and answers
// with a DeleteResponse.
func TestRunDelete(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "root", "ns", "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	runtime := filepath.Join(dir, "runtime")
	calls := filepath.Join(dir, "calls")
	if err := os.WriteFile(runtime, []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := t.TempDir()
	opts := fmt.Sprintf(`{"binary_name":%q,"root":%q}`, runtime, filepath.Join(dir, "root"))
	if err := os.WriteFile(filepath.Join(bundle, "options.json"), []byte(opts), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "init.pid"), []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := runDelete(context.Background(), flags{namespace: "ns", id: "c1", bundle: bundle}, &stdout); err != nil {
		t.Fatalf("runDelete: %v", err)
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatalf("stdout is not a DeleteResponse: %v", err)
	}
	if resp.Pid != 4321 || resp.ExitStatus != 137 || resp.ExitedAt == nil {
		t.Errorf("DeleteResponse: got %v, want pid 4321, exit 137, a time", &resp)
	}
	data, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); !strings.HasSuffix(got, "delete --force c1") || !strings.Contains(got, "--root "+filepath.Join(dir, "root", "ns")) {
		t.Errorf("runtime call: got %q", got)
	}
}

// TestWriteLegacyAnswer: a caller before containerd 2.3 gets the plain
// address (task API v2), except for a found shim that serves only task
// API v3, which gets the JSON containerd 2.0-2.2 parse (into
// pkg/shim.BootstrapParams: version, address, protocol) with version 3.
func TestWriteLegacyAnswer(t *testing.T) {
	const addr = "unix:///run/containerd/s/0123"
	tests := []struct {
		name     string
		shim     sandbox.Shim
		wantJSON bool
	}{
		{name: "this shim", shim: sandbox.Shim{Address: addr}},
		{name: "shim serving only v3", shim: sandbox.Shim{Address: addr, TaskAPI: 3}, wantJSON: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := writeLegacyAnswer(&out, tt.shim); err != nil {
				t.Fatal(err)
			}
			if !tt.wantJSON {
				if out.String() != addr {
					t.Errorf("answer: got %q, want the plain address %q", out.String(), addr)
				}
				return
			}
			// containerd's type, field for field.
			type bootstrapParams struct {
				Version  int    `json:"version"`
				Address  string `json:"address"`
				Protocol string `json:"protocol"`
			}
			var p bootstrapParams
			if err := json.Unmarshal(out.Bytes(), &p); err != nil {
				t.Fatalf("answer %q is not containerd's BootstrapParams JSON: %v", out.String(), err)
			}
			if want := (bootstrapParams{Version: 3, Address: addr, Protocol: "ttrpc"}); p != want {
				t.Errorf("answer: got %+v, want %+v", p, want)
			}
		})
	}
}
