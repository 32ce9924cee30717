package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/service"
)

// maxStartInput bounds what `start` reads from stdin.
const maxStartInput = 10 << 20

// startInput is what containerd sent to `start`, decoded. containerd 2.3
// and later send BootstrapParams and accept a BootstrapResult; every older
// one sends the runtime options (or nothing) and reads a plain address,
// which means task API v2. Legacy options can decode as BootstrapParams
// too, so a payload counts as bootstrap only when its instance id and
// namespace match the command line, as containerd's own shim library
// checks.
type startInput struct {
	bootstrap *bootapi.BootstrapParams // nil for a legacy caller
	options   ociruntime.Options
}

func parseStartInput(data []byte, id, namespace string) (startInput, error) {
	var params bootapi.BootstrapParams
	if len(data) > 0 && proto.Unmarshal(data, &params) == nil && params.InstanceID == id && params.Namespace == namespace {
		in := startInput{bootstrap: &params}
		var o options.Options
		found, err := params.FindExtension(&o)
		if err != nil {
			return in, err
		}
		if found {
			raw, err := proto.Marshal(&o)
			if err != nil {
				return in, err
			}
			if in.options, err = service.DecodeRuntimeOptions(string(o.ProtoReflect().Descriptor().FullName()), raw); err != nil {
				return in, err
			}
		}
		return in, nil
	}
	var in startInput
	if len(data) == 0 {
		return in, nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return in, fmt.Errorf("decode runtime options from stdin: %w", err)
	}
	opts, err := service.DecodeRuntimeOptions(a.TypeUrl, a.Value)
	if err != nil {
		return in, err
	}
	in.options = opts
	return in, nil
}

func runStart(ctx context.Context, f flags, stdin io.Reader, stdout io.Writer) error {
	data, err := io.ReadAll(io.LimitReader(stdin, maxStartInput))
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	in, err := parseStartInput(data, f.id, f.namespace)
	if err != nil {
		return err
	}
	bundle, err := os.Getwd()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := sandbox.StartConfig{
		ID:           f.id,
		Namespace:    f.namespace,
		Bundle:       bundle,
		GRPCAddress:  f.address,
		TTRPCAddress: os.Getenv("TTRPC_ADDRESS"),
		Debug:        f.debug,
		ShimCgroup:   in.options.ShimCgroup,
		Executable:   self,
		Claim:        service.Claim,
		TaskAPI:      service.TaskAPI,
	}
	if b := in.bootstrap; b != nil {
		if b.ContainerdGrpcAddress != "" {
			cfg.GRPCAddress = b.ContainerdGrpcAddress
		}
		if b.ContainerdTtrpcAddress != "" {
			cfg.TTRPCAddress = b.ContainerdTtrpcAddress
		}
		cfg.SocketDir = b.GetSocketDir()
	}
	shim, err := sandbox.StartShim(ctx, cfg)
	if err != nil {
		return err
	}
	if in.bootstrap == nil {
		return writeLegacyAnswer(stdout, shim)
	}
	out, err := proto.Marshal(&bootapi.BootstrapResult{Version: 3, Address: shim.Address, Protocol: "ttrpc"})
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// writeLegacyAnswer answers a caller older than containerd 2.3. The plain
// address means task API v2, which every such caller speaks and this
// shim serves. A shim found at the pod's socket that serves only task
// API v3 is containerd 2.x's runc shim, started by a 2.0-2.2 caller
// (which accepts version 3) before this binary took its place: it gets
// the JSON form the runc shim answers with, or containerd would speak
// task API v2 to it and fail every call.
func writeLegacyAnswer(stdout io.Writer, shim sandbox.Shim) error {
	if shim.TaskAPI != 3 {
		_, err := io.WriteString(stdout, shim.Address)
		return err
	}
	out, err := json.Marshal(legacyBootstrap{Version: 3, Address: shim.Address, Protocol: "ttrpc"})
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// legacyBootstrap is the JSON answer containerd 1.7 to 2.2 accept from
// `start` (pkg/shim.BootstrapParams upstream).
type legacyBootstrap struct {
	Version  int    `json:"version"`
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
}

func runDelete(ctx context.Context, f flags, stdout io.Writer) error {
	bundle := f.bundle
	if bundle == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		bundle = wd
	}
	if !filepath.IsAbs(bundle) {
		return fmt.Errorf("bundle path %q is not absolute", bundle)
	}
	res, err := sandbox.Cleanup(ctx, f.namespace, f.id, bundle)
	if err != nil {
		return err
	}
	out, err := proto.Marshal(&taskapi.DeleteResponse{
		Pid:        uint32(res.Pid),
		ExitStatus: uint32(res.ExitStatus),
		ExitedAt:   timestamppb.New(res.ExitedAt),
	})
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
