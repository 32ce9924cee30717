// Command bench compares containerd-shim-sandbox-v2 with containerd's
// containerd-shim-runc-v2 side by side (`make bench`).
//
// It starts one private containerd (its own root, state, sockets, config
// and log in a temp dir; CRI disabled; a bin directory first on its PATH
// holding copies of both shims), imports a busybox image built locally
// from busybox-static into a namespace of its own, and measures both
// runtimes alternating A B A B in one run, so that a noisy machine hits
// both equally. Every figure is printed with p50 and p95 (or the value)
// for both and the ratio this/runc-v2, as a table on stdout and, with
// -json, as JSON. Progress goes to stderr. The cri section has a
// containerd of its own with CRI on, and a table of its own: three modes,
// p50 and p90, two ratios to the runc shim's.
//
// Sections (-sections, in this order): lifecycle and floor (one
// alternation: a /bin/true container standalone and as a pod's next
// container, and the same spec under `runc run` with no shim), exec,
// storm (storm.go: a pod shim's RSS idle, right after -storm execs and
// settled again; CPU per exec), kill (Kill(SIGKILL) to exit), stdout (256 MiB), stdin (a line through
// cat), pod (K = 1, 10, 30, 100 containers: shim tree memory, idle CPU), node
// (10 one-container pods), startall (30 containers of one pod started,
// then stopped, concurrently), binruns (binruns.go: the shim binary run
// as containerd runs it for each container, `start` for a running pod's
// next container and `delete` with nothing left, against a minimal
// static Go binary), cri (cri.go: pods through the CRI plugin
// of a second private containerd, in three modes: this shim without and
// with a pause container, the runc shim with one). A shim still running
// between sections is an error (it would share pages with the next
// section's shims): it is killed, and the run goes on and fails at the
// end.
//
// It needs root. It removes what it made (its containers, containerd,
// shims, mounts, cgroups) by pid and path, and exits non-zero if anything
// failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// options are the command line.
type options struct {
	n            int
	warmup       int
	rounds       int
	ioRounds     int
	criPods      int
	storm        int
	stormWorkers int
	pause        string
	idle         time.Duration
	sections     []string
	jsonPath     string
	readme       string
	keep         bool
	shim         string
	containerd   string
	timeout      time.Duration
}

// section is one part of the benchmark, selectable with -sections.
type section struct {
	name string
	run  func(b *bench, ctx context.Context) error
}

// sections in the order they run. lifecycle and floor share one
// alternation (A, B, floor each round) when both are selected.
var sections = []section{
	{"lifecycle", func(b *bench, ctx context.Context) error {
		return b.lifecycle(ctx, true, b.selected("floor"))
	}},
	{"floor", func(b *bench, ctx context.Context) error {
		if b.selected("lifecycle") {
			return nil
		}
		return b.lifecycle(ctx, false, true)
	}},
	{"exec", (*bench).execs},
	{"storm", (*bench).storm},
	{"kill", (*bench).kills},
	{"stdout", (*bench).stdoutThroughput},
	{"stdin", (*bench).stdinRoundTrip},
	{"pod", (*bench).podMemory},
	{"node", (*bench).nodeMemory},
	{"startall", (*bench).startAll},
	{"binruns", (*bench).binaryRuns},
	{"cri", (*bench).criSection},
}

func parseFlags() (options, error) {
	var o options
	var names []string
	for _, s := range sections {
		names = append(names, s.name)
	}
	root := os.Getenv("SHIMTEST_ROOT")
	if root == "" {
		root = "/opt/shimtest"
	}
	flag.IntVar(&o.n, "n", 20, "measured iterations per runtime of each latency figure, after warm-up")
	flag.IntVar(&o.warmup, "warmup", 2, "unmeasured iterations per runtime before each latency figure")
	flag.IntVar(&o.rounds, "rounds", 3, "pods per runtime of the start-all figure")
	flag.IntVar(&o.ioRounds, "stdout-rounds", 5, "runs per runtime of the stdout throughput figure")
	flag.IntVar(&o.storm, "storm", 3000, "execs per runtime of the exec storm")
	flag.IntVar(&o.stormWorkers, "storm-workers", 4, "execs in flight during the exec storm, each worker alternating A B")
	flag.IntVar(&o.criPods, "cri-pods", 10, "pods per mode of the CRI memory figure")
	flag.StringVar(&o.pause, "pause", "", "a static pause binary for the CRI pause image, instead of building tests/cmd/pause")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "idle window for the pod CPU figure")
	list := flag.String("sections", strings.Join(names, ","), "comma-separated sections to run")
	flag.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&o.readme, "readme", "", "rewrite the benchmark table in this README from the run (rows not measured are kept, marked)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (containerd log, config) for debugging")
	flag.StringVar(&o.shim, "shim", "bin/containerd-shim-sandbox-v2", "the containerd-shim-sandbox-v2 binary to measure")
	flag.StringVar(&o.containerd, "containerd", filepath.Join(root, "containerd-v2.4.2"), "directory holding containerd and containerd-shim-runc-v2 v2.4.2")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "abort the run after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for _, s := range strings.Split(*list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(names, s) {
			return o, fmt.Errorf("-sections: unknown section %q (have %s)", s, strings.Join(names, ","))
		}
		o.sections = append(o.sections, s)
	}
	if len(o.sections) == 0 {
		return o, errors.New("-sections: none selected")
	}
	if o.n < 1 || o.warmup < 0 || o.rounds < 1 || o.ioRounds < 1 || o.criPods < 1 || o.storm < 1 || o.stormWorkers < 1 {
		return o, errors.New("-n, -rounds, -stdout-rounds, -cri-pods, -storm and -storm-workers must be at least 1, -warmup at least 0")
	}
	return o, nil
}

func main() {
	os.Exit(run())
}

func run() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "bench: FAIL: "+format+"\n", args...)
		return 1
	}
	opts, err := parseFlags()
	if err != nil {
		return fail("%v", err)
	}
	if os.Geteuid() != 0 {
		return fail("must run as root (containerd, runc, overlay mounts, /proc/PID/smaps_rollup of other processes)")
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, opts.timeout)
	defer cancel()

	start := time.Now()
	b := &bench{opts: opts, ns: fmt.Sprintf("shimbench-%d", os.Getpid()), rep: &report{Rows: []row{}}}
	r, err := startReaper()
	if err != nil {
		return fail("become child subreaper: %v", err)
	}
	runErr := b.runAll(ctx)
	b.rep.DurationSec = time.Since(start).Round(time.Second).Seconds()
	if runErr != nil && b.d != nil && !opts.keep {
		fmt.Fprintln(os.Stderr, b.d.logTail(8<<10))
	}
	if runErr != nil && b.cri != nil && b.cri.daemon != nil && !opts.keep {
		fmt.Fprintln(os.Stderr, b.cri.logTail(8<<10))
	}
	problems := b.teardown(r)

	if !b.rep.empty() {
		b.rep.printTable(os.Stdout)
	}
	if opts.jsonPath != "" && !b.rep.empty() {
		if err := b.rep.writeJSON(opts.jsonPath); err != nil {
			return fail("write %s: %v", opts.jsonPath, err)
		}
	}
	if opts.readme != "" && runErr == nil && len(b.rep.Rows) > 0 {
		if err := b.rep.writeReadme(opts.readme); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(os.Stderr, "bench: wrote the table in %s\n", opts.readme)
	}
	if opts.keep {
		fmt.Fprintf(os.Stderr, "bench: kept %s\n", b.dir)
	}
	for _, n := range b.notes {
		fmt.Fprintln(os.Stderr, "bench: note:", n)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "bench: cleanup:", p)
	}
	switch {
	case runErr != nil && sigCtx.Err() != nil:
		return fail("interrupted: %v", runErr)
	case runErr != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fail("-timeout %v passed: %v", opts.timeout, runErr)
	case runErr != nil:
		return fail("%v", runErr)
	}
	if len(problems) > 0 {
		return fail("cleanup had to force %d things (see cleanup lines)", len(problems))
	}
	fmt.Fprintf(os.Stderr, "bench: done in %s\n", time.Since(start).Round(time.Second))
	return 0
}

// bench is one run: its directory, daemon, client, namespace and image,
// and the report it fills.
type bench struct {
	opts    options
	dir     string // temp dir holding everything below
	d       *daemon
	cri     *criDaemon // section 10's, while it runs
	c       *client.Client
	ns      string // containerd namespace; also names its cgroups
	img     client.Image
	fifoDir string
	rootfs  string // the busybox tree the image was made from
	runc    string // the runc the shims find on the daemon's PATH
	rep     *report
	// helper says the libcontainer exec helper is installed beside this
	// shim (exec.go measures that engine too).
	helper  bool
	sockets sockets      // shim sockets, for teardown
	notes   []string     // what teardown found worth saying, not failures
	seq     atomic.Int64 // makes ids unique
}

func (b *bench) selected(name string) bool { return slices.Contains(b.opts.sections, name) }

// id returns a new unique container or pod id starting with prefix.
func (b *bench) id(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, b.seq.Add(1))
}

func (b *bench) nsContext(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, b.ns)
}

// runAll sets up and runs the selected sections in order.
func (b *bench) runAll(ctx context.Context) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	ctx = b.nsContext(ctx)
	// A straggler settle found is killed, so the next section is not
	// skewed by it: the run goes on, and fails at the end.
	var stragglers []error
	for _, s := range sections {
		if !b.selected(s.name) {
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s ...\n", s.name)
		if err := s.run(b, ctx); err != nil {
			return fmt.Errorf("section %s: %w", s.name, err)
		}
		if err := b.settle(); err != nil {
			err = fmt.Errorf("after section %s: %w", s.name, err)
			fmt.Fprintf(os.Stderr, "bench: %v; going on\n", err)
			stragglers = append(stragglers, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", s.name, time.Since(t0).Round(100*time.Millisecond))
	}
	return errors.Join(stragglers...)
}

// setup checks the prerequisites, writes the header, starts the daemon
// and imports the image.
func (b *bench) setup(ctx context.Context) error {
	shim, err := filepath.Abs(b.opts.shim)
	if err != nil {
		return err
	}
	runcShim := filepath.Join(b.opts.containerd, runtimes[1].binary)
	for _, f := range []string{shim, runcShim, filepath.Join(b.opts.containerd, "containerd")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w (run `make` and tests/install-deps.sh, or see -shim and -containerd)", err)
		}
	}
	if b.dir, err = os.MkdirTemp("", "shimbench-"); err != nil {
		return err
	}
	b.fifoDir = filepath.Join(b.dir, "fifo")
	if err := os.MkdirAll(b.fifoDir, 0o700); err != nil {
		return err
	}
	installed := map[string]string{
		runtimes[0].binary: shim,
		runtimes[1].binary: runcShim,
	}
	// The libcontainer exec engine's helper, when it was built beside the
	// shim (make build): the exec section then measures that engine too.
	if helper := filepath.Join(filepath.Dir(shim), execHelper); fileExists(helper) {
		installed[execHelper] = helper
		b.helper = true
	}
	b.d, err = startDaemon(ctx, b.dir, b.opts.containerd, installed, "")
	if err != nil {
		return err
	}
	b.c = b.d.client
	if b.runc, err = lookPath("runc", b.d.env()); err != nil {
		return err
	}
	b.header(shim, runcShim)
	fmt.Fprintf(os.Stderr, "bench: containerd in %s, namespace %s\n", b.dir, b.ns)
	return b.importImage(b.nsContext(ctx))
}
