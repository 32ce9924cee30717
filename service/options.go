package service

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
)

// runcOptionsType is the type URL containerd gives io.containerd.runc.v1.Options.
const runcOptionsType = "containerd.runc.v1.Options"

// runtimeOptions decodes a create request's options. No options means the
// shim's defaults; any type but runc's options is refused, as the runc shim
// does, so a misconfigured runtime fails loudly instead of running with
// defaults.
func runtimeOptions(a *anypb.Any, defaults ociruntime.Options) (ociruntime.Options, error) {
	if a == nil || (a.TypeUrl == "" && len(a.Value) == 0) {
		return defaults, nil
	}
	return DecodeRuntimeOptions(a.TypeUrl, a.Value)
}

// DecodeRuntimeOptions decodes runtime options given as a type URL and
// its bytes: io.containerd.runc.v1.Options, which ctr and the client send,
// or the runtimeoptions.v1.Options that containerd's CRI plugin sends a
// runtime_type other than io.containerd.runc.v2, with the runtime table's
// options section as TOML.
func DecodeRuntimeOptions(typeURL string, value []byte) (ociruntime.Options, error) {
	// containerd has sent both the bare name and a URL ending in /name.
	is := func(name string) bool { return typeURL == name || strings.HasSuffix(typeURL, "/"+name) }
	if is(criOptionsType) {
		return decodeCRIOptions(value)
	}
	if !is(runcOptionsType) {
		return ociruntime.Options{}, fmt.Errorf("runtime options of type %q, want %q or %q: %w", typeURL, runcOptionsType, criOptionsType, errdefs.ErrInvalidArgument)
	}
	var o options.Options
	if err := proto.Unmarshal(value, &o); err != nil {
		return ociruntime.Options{}, fmt.Errorf("decode runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return ociruntime.Options{
		BinaryName:    o.BinaryName,
		Root:          o.Root,
		SystemdCgroup: o.SystemdCgroup,
		NoPivotRoot:   o.NoPivotRoot,
		NoNewKeyring:  o.NoNewKeyring,
		IoUID:         o.IoUid,
		IoGID:         o.IoGid,
		ShimCgroup:    o.ShimCgroup,
		CriuImagePath: o.CriuImagePath,
		CriuWorkPath:  o.CriuWorkPath,
	}, nil
}

// processSpec decodes the OCI process of an exec request: JSON of
// specs.Process under the runtime spec's type URL.
func processSpec(a *anypb.Any) (specs.Process, error) {
	var p specs.Process
	if a == nil || len(a.Value) == 0 {
		return p, fmt.Errorf("no process spec: %w", errdefs.ErrInvalidArgument)
	}
	if !strings.HasSuffix(a.TypeUrl, "/Process") && a.TypeUrl != "Process" {
		return p, fmt.Errorf("process spec of type %q: %w", a.TypeUrl, errdefs.ErrInvalidArgument)
	}
	if err := json.Unmarshal(a.Value, &p); err != nil {
		return p, fmt.Errorf("decode process spec: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// linuxResources decodes an update request's resources: JSON of
// specs.LinuxResources under the runtime spec's type URL.
func linuxResources(a *anypb.Any) (*specs.LinuxResources, error) {
	if a == nil || len(a.Value) == 0 {
		return nil, fmt.Errorf("no resources: %w", errdefs.ErrInvalidArgument)
	}
	if !strings.HasSuffix(a.TypeUrl, "/LinuxResources") && a.TypeUrl != "LinuxResources" {
		return nil, fmt.Errorf("resources of type %q, want LinuxResources: %w", a.TypeUrl, errdefs.ErrInvalidArgument)
	}
	var r specs.LinuxResources
	if err := json.Unmarshal(a.Value, &r); err != nil {
		return nil, fmt.Errorf("decode resources: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return &r, nil
}

// anyOf wraps a protobuf message as containerd's typeurl does: the type
// URL is the message's full name.
func anyOf(m proto.Message) (*anypb.Any, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: string(m.ProtoReflect().Descriptor().FullName()), Value: data}, nil
}
