package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/service"
)

// featuresTypeURL is the type URL containerd registers for the runtime
// spec's features.Features (core/runtime/typeurl.go upstream); the value
// is its JSON, which is exactly what `runc features` prints.
var featuresTypeURL = "types.containerd.io/opencontainers/runtime-spec/" + strconv.Itoa(specs.VersionMajor) + "/features/Features"

// runInfo answers -info: the runtime's name and version, the options it
// was given, and the OCI features of the configured runtime binary when
// that binary reports them.
func runInfo(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(stdin, maxStartInput))
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	info := &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: version, Revision: revision},
	}
	binary := ""
	if len(data) > 0 {
		var a anypb.Any
		if err := proto.Unmarshal(data, &a); err != nil {
			return fmt.Errorf("decode runtime options: %w", err)
		}
		opts, err := service.DecodeRuntimeOptions(a.TypeUrl, a.Value)
		if err != nil {
			return err
		}
		info.Options = &a
		if opts.BinaryName != "" {
			binary = opts.BinaryName
		}
	}
	if feat, err := ociruntime.Features(ctx, binary); err != nil {
		// Not every runtime has `features` (youki did not); that is no error.
		log.G(ctx).WithError(err).Debug("runtime features unavailable")
	} else {
		info.Features = &anypb.Any{TypeUrl: featuresTypeURL, Value: feat}
	}
	out, err := proto.Marshal(info)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
