package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

const wantFeaturesType = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"

func runInfoOut(t *testing.T, stdin []byte) (*types.RuntimeInfo, error) {
	t.Helper()
	// Runtime answers are cached per test, never in the host's /run.
	old := ociruntime.FeaturesCacheDir
	ociruntime.FeaturesCacheDir = t.TempDir()
	t.Cleanup(func() { ociruntime.FeaturesCacheDir = old })
	var out bytes.Buffer
	if err := runInfo(context.Background(), bytes.NewReader(stdin), &out); err != nil {
		return nil, err
	}
	var info types.RuntimeInfo
	if err := proto.Unmarshal(out.Bytes(), &info); err != nil {
		t.Fatalf("stdout is not a RuntimeInfo: %v", err)
	}
	return &info, nil
}

func TestRunInfoDefaults(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc is not in PATH; its features cannot be reported")
	}
	info, err := runInfoOut(t, nil)
	if err != nil {
		t.Fatalf("runInfo: %v", err)
	}
	if info.Name != "io.containerd.sandbox.v2" {
		t.Errorf("Name: got %q, want io.containerd.sandbox.v2", info.Name)
	}
	if info.Version.GetVersion() != version {
		t.Errorf("Version: got %q, want %q", info.Version.GetVersion(), version)
	}
	if info.Options != nil {
		t.Errorf("Options without input: got %v, want nil", info.Options)
	}
	if info.Features == nil {
		t.Fatal("Features missing with runc installed")
	}
	if info.Features.TypeUrl != wantFeaturesType {
		t.Errorf("Features type: got %q, want %q", info.Features.TypeUrl, wantFeaturesType)
	}
	var f features.Features
	if err := json.Unmarshal(info.Features.Value, &f); err != nil {
		t.Fatalf("Features value is not features JSON: %v", err)
	}
	if f.OCIVersionMin == "" || f.OCIVersionMax == "" {
		t.Errorf("Features: got OCI versions %q..%q, want both set", f.OCIVersionMin, f.OCIVersionMax)
	}
}

func TestRunInfoOptions(t *testing.T) {
	anyOf := func(o *options.Options) []byte {
		a, err := anypb.New(o)
		if err != nil {
			t.Fatal(err)
		}
		return mustMarshal(t, a)
	}
	tests := []struct {
		name         string
		stdin        []byte
		wantFeatures bool
		wantErr      error // errAny for any error
	}{
		{name: "runtime without features", stdin: anyOf(&options.Options{BinaryName: "/bin/false"}), wantFeatures: false},
		{name: "missing runtime", stdin: anyOf(&options.Options{BinaryName: "/nonexistent/runtime"}), wantFeatures: false},
		{name: "other options type", stdin: mustMarshal(t, &anypb.Any{TypeUrl: "foo.Bar", Value: []byte{1}}), wantErr: errdefs.ErrInvalidArgument},
		{name: "garbage", stdin: []byte{0xff, 0xff}, wantErr: errAny},
	}
	if _, err := exec.LookPath("runc"); err == nil {
		tests = append(tests, struct {
			name         string
			stdin        []byte
			wantFeatures bool
			wantErr      error
		}{name: "runc named", stdin: anyOf(&options.Options{BinaryName: "runc"}), wantFeatures: true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := runInfoOut(t, tt.stdin)
			switch {
			case tt.wantErr == errAny:
				if err == nil {
					t.Fatal("runInfo: got nil error")
				}
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("runInfo: got %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("runInfo: %v", err)
			}
			if got := info.Features != nil; got != tt.wantFeatures {
				t.Errorf("Features present: got %v, want %v", got, tt.wantFeatures)
			}
			var in anypb.Any
			if err := proto.Unmarshal(tt.stdin, &in); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(info.Options, &in) {
				t.Errorf("Options: got %v, want the input %v", info.Options, &in)
			}
		})
	}
}
