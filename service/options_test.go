package service

import (
	"errors"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

var fullOptions = &options.Options{
	NoPivotRoot:   true,
	NoNewKeyring:  true,
	ShimCgroup:    "/shim.slice",
	IoUid:         1001,
	IoGid:         1002,
	BinaryName:    "/usr/local/bin/crun",
	Root:          "/run/crun",
	SystemdCgroup: true,
	CriuImagePath: "/criu/image",
	CriuWorkPath:  "/criu/work",
}

var fullRuntimeOptions = ociruntime.Options{
	BinaryName:    "/usr/local/bin/crun",
	Root:          "/run/crun",
	SystemdCgroup: true,
	NoPivotRoot:   true,
	NoNewKeyring:  true,
	IoUID:         1001,
	IoGID:         1002,
	ShimCgroup:    "/shim.slice",
	CriuImagePath: "/criu/image",
	CriuWorkPath:  "/criu/work",
}

func TestDecodeRuntimeOptions(t *testing.T) {
	full, err := proto.Marshal(fullOptions)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		typeURL string
		value   []byte
		want    ociruntime.Options
		wantErr error
	}{
		{name: "bare name", typeURL: "containerd.runc.v1.Options", value: full, want: fullRuntimeOptions},
		{name: "containerd typeurl", typeURL: "types.containerd.io/containerd.runc.v1.Options", value: full, want: fullRuntimeOptions},
		{name: "anypb typeurl", typeURL: "type.googleapis.com/containerd.runc.v1.Options", value: full, want: fullRuntimeOptions},
		{name: "empty value", typeURL: "containerd.runc.v1.Options", value: nil, want: ociruntime.Options{}},
		{name: "other runtime's options", typeURL: "containerd.runhcs.v1.Options", value: full, wantErr: errdefs.ErrInvalidArgument},
		{name: "runtime name, not type", typeURL: "io.containerd.runc.v1.Options", value: full, wantErr: errdefs.ErrInvalidArgument},
		{name: "suffix without slash", typeURL: "xcontainerd.runc.v1.Options", value: full, wantErr: errdefs.ErrInvalidArgument},
		{name: "longer name", typeURL: "containerd.runc.v1.OptionsX", value: full, wantErr: errdefs.ErrInvalidArgument},
		{name: "empty type", typeURL: "", value: full, wantErr: errdefs.ErrInvalidArgument},
		{name: "garbage bytes", typeURL: "containerd.runc.v1.Options", value: []byte{0xff, 0xff, 0xff}, wantErr: errdefs.ErrInvalidArgument},
		{name: "truncated field", typeURL: "containerd.runc.v1.Options", value: []byte{0x32, 0x10, 'r'}, wantErr: errdefs.ErrInvalidArgument},
		{name: "invalid utf-8 string", typeURL: "containerd.runc.v1.Options", value: []byte{0x32, 0x02, 0xc3, 0x28}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRuntimeOptions(tt.typeURL, tt.value)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("DecodeRuntimeOptions: got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeRuntimeOptions: %v", err)
			}
			if got != tt.want {
				t.Errorf("DecodeRuntimeOptions:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRuntimeOptions(t *testing.T) {
	defaults := ociruntime.Options{BinaryName: "default-runtime", Root: "/default/root"}
	packed, err := anypb.New(fullOptions)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      *anypb.Any
		want    ociruntime.Options
		wantErr error
	}{
		{name: "nil", in: nil, want: defaults},
		{name: "empty Any", in: &anypb.Any{}, want: defaults},
		{name: "anypb.New", in: packed, want: fullRuntimeOptions},
		{name: "bytes without type", in: &anypb.Any{Value: packed.Value}, wantErr: errdefs.ErrInvalidArgument},
		{name: "unknown type", in: &anypb.Any{TypeUrl: "types.containerd.io/foo.Bar", Value: packed.Value}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runtimeOptions(tt.in, defaults)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("runtimeOptions: got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("runtimeOptions: got (%+v, %v), want %+v", got, err, tt.want)
			}
		})
	}
}
