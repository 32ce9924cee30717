//go:build tools

package tests

import (
	_ "github.com/containerd/cgroups/v3"
	_ "github.com/containerd/console"
	_ "github.com/containerd/containerd/api/events"
	_ "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	_ "github.com/containerd/containerd/api/runtime/task/v2"
	_ "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	_ "github.com/containerd/containerd/api/types/runc/options"
	_ "github.com/containerd/containerd/v2/client"
	_ "github.com/containerd/errdefs"
	_ "github.com/containerd/fifo"
	_ "github.com/containerd/go-runc"
	_ "github.com/containerd/log"
	_ "github.com/containerd/ttrpc"
	_ "github.com/containerd/typeurl/v2"
	_ "github.com/opencontainers/runtime-spec/specs-go"
	_ "golang.org/x/sys/unix"
)
