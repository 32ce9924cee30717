package tests

import (
	"fmt"
	"strings"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/ctrd"
)

// daemonPaths are the private locations of one test daemon.
type daemonPaths struct {
	root         string // persistent data (content, snapshots, metadata)
	state        string // runtime state: bundles live under io.containerd.runtime.v2.task
	address      string // gRPC socket
	ttrpcAddress string // ttrpc socket (events from shims)
	opt          string // io.containerd.internal.v1.opt path
}

// daemonConfig renders config.toml for a config schema version: 2 is what
// containerd 1.6 and 1.7 read, 3 what 2.0-2.2 write and 2.3+ still read
// (2.4 migrates it to 4 in memory). The [grpc] and [ttrpc] sections are
// top-level in both.
func daemonConfig(schema int, p daemonPaths) (string, error) {
	disabled := ctrd.DisabledPlugins(schema)
	if disabled == nil {
		return "", fmt.Errorf("no config template for schema version %d", schema)
	}
	quoted := make([]string, len(disabled))
	for i, d := range disabled {
		quoted[i] = fmt.Sprintf("%q", d)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = %d\n", schema)
	fmt.Fprintf(&b, "root = %q\n", p.root)
	fmt.Fprintf(&b, "state = %q\n", p.state)
	fmt.Fprintf(&b, "disabled_plugins = [%s]\n\n", strings.Join(quoted, ", "))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n\n", p.address)
	fmt.Fprintf(&b, "[ttrpc]\n  address = %q\n\n", p.ttrpcAddress)
	fmt.Fprintf(&b, "[debug]\n  level = \"debug\"\n\n")
	fmt.Fprintf(&b, "[plugins]\n")
	fmt.Fprintf(&b, "  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = %q\n", p.opt)
	return b.String(), nil
}
