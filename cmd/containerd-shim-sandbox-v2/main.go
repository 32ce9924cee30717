// Command containerd-shim-sandbox-v2 is a containerd runtime v2 shim that
// serves every container of a pod from one process. containerd runs it
// with `start` (find or start the pod's shim, print its address), with
// `delete` (clean up after a dead shim), with -info, and the start action
// runs it once more, without an action, as the long-lived shim daemon.
// The daemon runs it again as a pod's holder (argv[1] sandbox.HolderArg)
// when containerd hands it a whole pod through the Sandbox API.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/log"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// RuntimeName is the runtime containerd knows this shim by.
const RuntimeName = "io.containerd.sandbox.v2"

// Set with -ldflags by the Makefile.
var (
	version  = "dev"
	revision = ""
)

// flags are the command line containerd gives every shim (see
// core/runtime/v2/command.go upstream), plus the shim's own.
type flags struct {
	namespace     string
	id            string
	address       string
	publishBinary string
	bundle        string
	socket        string
	debug         bool
	version       bool
	info          bool
	action        string
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet(filepath.Base(args[0]), flag.ContinueOnError)
	fs.StringVar(&f.namespace, "namespace", "", "namespace that owns the shim")
	fs.StringVar(&f.id, "id", "", "id of the task")
	fs.StringVar(&f.address, "address", "", "grpc address back to containerd")
	fs.StringVar(&f.publishBinary, "publish-binary", "", "ignored: events go to containerd's TTRPC_ADDRESS")
	fs.StringVar(&f.bundle, "bundle", "", "bundle path (delete action; defaults to the working directory)")
	fs.StringVar(&f.socket, "socket", "", "socket path to serve on instead of the inherited fd 3")
	fs.BoolVar(&f.debug, "debug", false, "enable debug output in logs")
	fs.BoolVar(&f.version, "v", false, "show the shim version and exit")
	fs.BoolVar(&f.version, "version", false, "show the shim version and exit")
	fs.BoolVar(&f.info, "info", false, "read runtime options from stdin, print RuntimeInfo protobuf to stdout, exit")
	if err := fs.Parse(args[1:]); err != nil {
		return f, err
	}
	f.action = fs.Arg(0)
	return f, nil
}

// init runs the pod holder (sandbox/holder.go), which needs the main
// thread: it joins the pod's network namespace with setns, which moves
// one thread, and /proc/<pid>/ns/net (what CRI gives every container)
// shows the main thread's; it waits for its stop signals there too.
// Init functions run on the main thread, the runtime holding them there
// (see runtime.LockOSThread), so running the holder here, after every
// package's init, spares the thread runtime.LockOSThread would start
// (the runtime's template thread): measured 4.2 -> 3.2 threads per
// holder, USS unchanged.
func init() {
	if isHolder(os.Args) {
		os.Exit(sandbox.RunHolder(os.Args[2:]))
	}
}

func isHolder(args []string) bool {
	return len(args) > 1 && args[1] == sandbox.HolderArg
}

func main() {
	f, err := parseFlags(os.Args)
	if err != nil {
		os.Exit(2)
	}
	if err := run(context.Background(), f); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", RuntimeName, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, f flags) error {
	if f.version {
		fmt.Printf("%s:\n  Runtime: %s\n  Version: %s\n  Revision: %s\n", filepath.Base(os.Args[0]), RuntimeName, version, revision)
		return nil
	}
	if f.info {
		return runInfo(ctx, os.Stdin, os.Stdout)
	}
	if f.namespace == "" {
		return fmt.Errorf("shim namespace cannot be empty")
	}
	if f.debug {
		_ = log.SetLevel("debug")
	}
	ctx = log.WithLogger(ctx, log.G(ctx).WithField("runtime", RuntimeName))
	switch f.action {
	case "start":
		return runStart(ctx, f, os.Stdin, os.Stdout)
	case "delete":
		return runDelete(ctx, f, os.Stdout)
	case "":
		return runDaemon(ctx, f)
	}
	return fmt.Errorf("unknown action %q", f.action)
}
