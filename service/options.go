package service

import (
	"fmt"
	"strings"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// runcOptionsType is the type URL containerd gives io.containerd.runc.v1.Options.
const runcOptionsType = "containerd.runc.v1.Options"

// runtimeOptions decodes a create request's options. No options means the
// shim's defaults; any type but runc's options is refused, as the runc shim
// does, so a misconfigured runtime fails loudly instead of running with
// defaults.
func runtimeOptions(a *anypb.Any, defaults process.RuntimeOptions) (process.RuntimeOptions, error) {
	if a == nil || (a.TypeUrl == "" && len(a.Value) == 0) {
		return defaults, nil
	}
	return DecodeRuntimeOptions(a.TypeUrl, a.Value)
}

// DecodeRuntimeOptions decodes io.containerd.runc.v1.Options given as a
// type URL and its bytes.
func DecodeRuntimeOptions(typeURL string, value []byte) (process.RuntimeOptions, error) {
	// containerd has sent both the bare name and a URL ending in /name.
	if typeURL != runcOptionsType && !strings.HasSuffix(typeURL, "/"+runcOptionsType) {
		return process.RuntimeOptions{}, fmt.Errorf("runtime options of type %q, want %q: %w", typeURL, runcOptionsType, errdefs.ErrInvalidArgument)
	}
	var o options.Options
	if err := proto.Unmarshal(value, &o); err != nil {
		return process.RuntimeOptions{}, fmt.Errorf("decode runtime options: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return process.RuntimeOptions{
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
