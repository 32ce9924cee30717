package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// binRunsPerN is how many rounds the binary-runs section makes per -n:
// each run is a few ms, and their p50 needs more samples than a
// lifecycle's.
const binRunsPerN = 10

// binRun is one command the section times: the shim binary as containerd
// runs it (core/runtime/v2/command.go: its flags, environment, working
// directory and stdin), or the minimal binary.
type binRun struct {
	bin   string
	args  []string
	dir   string
	env   []string
	stdin []byte
}

// binaryRuns measures what containerd pays to run a shim binary for a
// container (issue 15): `start` for a container of a pod whose shim runs
// (find its socket, print its address) and `delete` with nothing left
// (the runtime's state and the rootfs mount gone, as after a clean task
// Delete), for both shims, against a minimal static Go binary's
// fork+exec+exit, alternating all five every round. Each shim gets a pod
// with one running container; the measured start is for another
// container of that pod, in a bundle of its own holding the pod
// container's config.json, and gets the BootstrapParams containerd 2.4.2
// writes. Nothing is created: this shim's pod keeps a claim for it
// (sandbox.ClaimTTL), which the section waits out after it deletes the
// pods.
func (b *bench) binaryRuns(ctx context.Context) error {
	minimal, err := b.buildMinimal(ctx)
	if err != nil {
		return err
	}
	holders, release, err := b.holders(ctx, "binrun")
	if err != nil {
		return err
	}
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	runs := []binRun{{bin: minimal, dir: b.dir}}
	for i, rt := range runtimes {
		start, del, err := b.binRunsFor(rt, holders[i])
		if err != nil {
			return err
		}
		runs = append(runs, start, del)
	}
	samples := make([][]float64, len(runs))
	rounds := binRunsPerN * b.opts.n
	for round := range b.opts.warmup + rounds {
		for k := range runs {
			i := (k + round) % len(runs) // rotate who goes first
			d, err := runOnce(ctx, runs[i])
			if err != nil {
				return err
			}
			if round >= b.opts.warmup {
				samples[i] = append(samples[i], ms(d))
			}
		}
	}
	const sec = "9b. binary runs: the shim binary as containerd runs it per container"
	b.rep.latency(sec, "start, the pod's shim running", "ms", samples[1], samples[3])
	b.rep.latency(sec, "delete, nothing left", "ms", samples[2], samples[4])
	b.rep.latency(sec, "minimal static Go binary", "ms", samples[0], nil)
	b.rep.values(sec, "start over the minimal binary", "ms", pairedDiff(samples[1], samples[0]), pairedDiff(samples[3], samples[0]))
	b.rep.values(sec, "delete over the minimal binary", "ms", pairedDiff(samples[2], samples[0]), pairedDiff(samples[4], samples[0]))

	release()
	released = true
	// This shim's pod shim stays until the claims the measured starts
	// made expire.
	if left := waitShimsGone(b.d.bin, sandbox.ClaimTTL+shimExitTimeout); len(left) > 0 {
		return fmt.Errorf("shims %v still running %v after the pods were deleted", left, sandbox.ClaimTTL+shimExitTimeout)
	}
	return nil
}

// pairedDiff is each round's a minus the same round's base.
func pairedDiff(a, base []float64) []float64 {
	d := make([]float64, 0, len(a))
	for i := range min(len(a), len(base)) {
		d = append(d, a[i]-base[i])
	}
	return d
}

// binRunsFor returns rt's measured start and delete, with the bundles
// they run in.
func (b *bench) binRunsFor(rt shimRuntime, holder *task) (start, del binRun, err error) {
	holderBundle := filepath.Join(b.d.state(), "io.containerd.runtime.v2.task", b.ns, holder.id)
	address, err := bundleAddress(holderBundle)
	if err != nil {
		return start, del, err
	}
	spec, err := os.ReadFile(filepath.Join(holderBundle, "config.json"))
	if err != nil {
		return start, del, err
	}
	self := filepath.Join(b.opts.containerd, "containerd")
	env := append(b.d.env(), "GOMAXPROCS=2", "MAX_SHIM_VERSION=2",
		"TTRPC_ADDRESS="+b.d.sock+".ttrpc", "GRPC_ADDRESS="+b.d.sock, "NAMESPACE="+b.ns)
	// A hard link of the shim under another name: the bench's reaper
	// reaps every exited child named containerd-shim* (the orphaned shim
	// daemons), and would take these from os/exec's Wait.
	bin := filepath.Join(b.dir, "binruns", rt.label+"-binrun")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return start, del, err
	}
	if err := os.Link(filepath.Join(b.d.bin, rt.binary), bin); err != nil {
		return start, del, err
	}

	// start: another container of the holder's pod.
	id := b.id("binrun-start")
	bundle := filepath.Join(b.dir, "binruns", id)
	if err := os.MkdirAll(bundle, 0o711); err != nil {
		return start, del, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), spec, 0o644); err != nil {
		return start, del, err
	}
	socketDir := filepath.Dir(strings.TrimPrefix(address, "unix://"))
	stdin, err := proto.Marshal(&bootapi.BootstrapParams{
		InstanceID:             id,
		Namespace:              b.ns,
		LogLevel:               bootapi.LogLevel_LOG_LEVEL_INFO,
		ContainerdVersion:      "v2.4.2",
		ContainerdGrpcAddress:  b.d.sock,
		ContainerdTtrpcAddress: b.d.sock + ".ttrpc",
		ContainerdBinary:       self,
		SocketDir:              &socketDir,
	})
	if err != nil {
		return start, del, err
	}
	start = binRun{bin: bin, dir: bundle, env: env, stdin: stdin,
		args: []string{"-namespace", b.ns, "-address", b.d.sock, "-publish-binary", self, "-id", id, "start"}}
	// Check the answer once: the pod's shim, not a new one.
	out, err := runOutput(context.Background(), start)
	if err != nil {
		return start, del, fmt.Errorf("%s: start: %w", rt.label, err)
	}
	var res bootapi.BootstrapResult
	if err := proto.Unmarshal(out, &res); err != nil || res.Address != address {
		return start, del, fmt.Errorf("%s: start answered %q (%v), want the pod shim's %s", rt.label, out, err, address)
	}

	// delete: a container's bundle after a clean Delete, the shim's files
	// (the holder's) in it, no runtime state, the rootfs unmounted.
	id = b.id("binrun-delete")
	bundle = filepath.Join(b.dir, "binruns", id)
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		return start, del, err
	}
	for _, name := range []string{"config.json", "options.json", "runtime"} {
		data, err := os.ReadFile(filepath.Join(holderBundle, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return start, del, err
		}
		if err := os.WriteFile(filepath.Join(bundle, name), data, 0o644); err != nil {
			return start, del, err
		}
	}
	if err := os.WriteFile(filepath.Join(bundle, "init.pid"), []byte("4194000"), 0o644); err != nil {
		return start, del, err
	}
	del = binRun{bin: bin, dir: bundle, env: env,
		args: []string{"-namespace", b.ns, "-address", b.d.sock, "-publish-binary", self, "-id", id, "-bundle", bundle, "delete"}}
	if _, err := runOutput(context.Background(), del); err != nil {
		return start, del, fmt.Errorf("%s: delete: %w", rt.label, err)
	}
	return start, del, nil
}

// runOnce times one run of r, fork to exit.
func runOnce(ctx context.Context, r binRun) (time.Duration, error) {
	t0 := time.Now()
	_, err := runOutput(ctx, r)
	return time.Since(t0), err
}

func runOutput(ctx context.Context, r binRun) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.bin, r.args...)
	cmd.Dir, cmd.Env = r.dir, r.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if r.stdin != nil {
		cmd.Stdin = bytes.NewReader(r.stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

// buildMinimal builds the minimal static Go binary (an empty main, built
// as the shim is) into the run's directory, outside bin.
func (b *bench) buildMinimal(ctx context.Context) (string, error) {
	dir := filepath.Join(b.dir, "minimal")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src := "package main\n\nfunc main() {}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module minimal\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "minimal")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(slices.Clone(os.Environ()), "CGO_ENABLED=0", "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the minimal binary: %w\n%s", err, msg)
	}
	return out, nil
}
