// Command upstream runs tests of containerd's own integration/client
// package, its test binary built unmodified from containerd's module (see
// build.sh), against a private containerd once per runtime, this shim's
// and the runc shim's, and reports each test's result per runtime. The
// runc shim is the reference: a test that fails for it too is a known
// difference only when knownDifferences lists it with a reason.
//
//	go build -o upstream ./tests/upstream
//	upstream -client-test BIN -runc-fp BIN -containerd DIR -shim BIN [-runtimes LIST] [-tests LIST]
//
// What the test binary expects of a machine of containerd's CI, and what
// it gets here instead:
//
//   - A daemon. It runs with -no-daemon and -address: a containerd from
//     -containerd with its own root, state, sockets, config and log in a
//     temp dir (the e2e suite's config: no CRI, no NRI), and a bin/ first
//     on its PATH with copies of both shims and of runc-fp, containerd's
//     failpoint runtime that TestIssue9103 and TestIssue10589 name as
//     BinaryName.
//   - Its seed image. TestMain pulls images.Get(images.BusyBox),
//     ghcr.io/containerd/busybox:1.36; the -image-list flag cannot change
//     it, because the package reads it while initialising, before TestMain
//     parses flags. The binary reaches that name through HTTPS_PROXY: a
//     CONNECT proxy on loopback that leads to a local TLS registry
//     (go-containerregistry's) serving the busybox image the e2e tests
//     build, whose certificate SSL_CERT_FILE makes it trust. Every other
//     host is refused; nothing leaves the machine.
//   - A machine to itself. The tests use fixed names: namespace "testing",
//     container ids from the test names, hence runc state and cgroups
//     /testing/<id> shared by every containerd here, and the runc root
//     /tmp/runc-test. Runs take an exclusive lock (-lock) so that two
//     never overlap.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// defaultTests encode the task contract a runc-compatible shim must keep:
// kill after exit and kill of a container runc no longer has are NotFound,
// Wait after exit, large TTY exec output, an init killed before start
// (containerd 9103), execs racing the init's exit (containerd 10589).
var defaultTests = []string{
	"TestContainerKill",
	"TestContainerWait",
	"TestKillContainerDeletedByRunc",
	"TestContainerExecLargeOutputWithTTY",
	"TestIssue9103",
	"TestIssue10589",
}

// seedImage is what integration/client's TestMain pulls and its tests run.
const seedImage = "ghcr.io/containerd/busybox:1.36"

type config struct {
	clientTest    string
	runcFP        string
	containerdDir string
	shim          string
	runtimes      []string
	tests         []string
	timeout       time.Duration
	busybox       string
	lock          string
	keep          bool
}

func main() {
	var cfg config
	var runtimes, tests string
	flag.StringVar(&cfg.clientTest, "client-test", "", "integration/client test binary (go test -c) (required)")
	flag.StringVar(&cfg.runcFP, "runc-fp", "", "integration/failpoint/cmd/runc-fp binary (required)")
	flag.StringVar(&cfg.containerdDir, "containerd", "", "directory with containerd and containerd-shim-runc-v2 (required)")
	flag.StringVar(&cfg.shim, "shim", "", "containerd-shim-sandbox-v2 binary under test (required)")
	flag.StringVar(&runtimes, "runtimes", "io.containerd.sandbox.v2 io.containerd.runc.v2", "runtimes to run the tests with, in order")
	flag.StringVar(&tests, "tests", strings.Join(defaultTests, " "), "top-level tests to run; each must pass")
	flag.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "test binary timeout, per runtime")
	flag.StringVar(&cfg.busybox, "busybox", image.BusyboxPath, "statically linked busybox for the seed image")
	flag.StringVar(&cfg.lock, "lock", "/run/shimtest-upstream-client.lock", "lock file that keeps runs on this machine apart")
	flag.BoolVar(&cfg.keep, "keep", false, "keep every run's logs (they are kept anyway when it fails)")
	flag.Parse()
	cfg.runtimes, cfg.tests = strings.Fields(runtimes), strings.Fields(tests)
	if cfg.clientTest == "" || cfg.runcFP == "" || cfg.containerdDir == "" || cfg.shim == "" ||
		len(cfg.runtimes) == 0 || len(cfg.tests) == 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// report is one runtime's run.
type report struct {
	runtime   string
	results   map[string]*result
	other     []string // output outside any test
	exitErr   error    // the test binary's (through test2json)
	leftovers []string
	failures  []string // why this runtime's run failed; empty when it passed
	logDir    string   // kept logs, "" when removed
}

func run(cfg config) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "upstream: must run as root (containerd, runc, mounts)")
		return 1
	}
	unlock, err := lock(cfg.lock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		return 1
	}
	defer unlock()
	if stale := staleContainers(cfg.tests); len(stale) > 0 {
		fmt.Fprintf(os.Stderr, "upstream: an earlier run left runc state under these tests' fixed names; "+
			"its containers would collide with this run's. Remove them (runc --root DIR delete --force ID) and retry:\n  %s\n",
			strings.Join(stale, "\n  "))
		return 1
	}
	// ^C or a SIGTERM ends the test binary, then the run cleans up as
	// after any failure: no container, shim or mount is left under the
	// tests' fixed names.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	top, err := os.MkdirTemp("", "upstream-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		return 1
	}
	keepTop := false
	defer func() {
		if !keepTop {
			os.RemoveAll(top)
		}
	}()

	var archive bytes.Buffer
	rootfs := filepath.Join(top, "rootfs")
	if err := image.BuildRootfs(rootfs, cfg.busybox); err != nil {
		fmt.Fprintln(os.Stderr, "upstream: seed image:", err)
		return 1
	}
	if _, err := image.WriteArchive(&archive, rootfs, seedImage); err != nil {
		fmt.Fprintln(os.Stderr, "upstream: seed image:", err)
		return 1
	}
	os.RemoveAll(rootfs)
	mirrorLog, err := os.Create(filepath.Join(top, "mirror.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		return 1
	}
	defer mirrorLog.Close()
	m, err := startMirror(archive.Bytes(), []string{seedImage}, filepath.Join(top, "mirror-ca.pem"), mirrorLog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream: image mirror:", err)
		return 1
	}
	defer m.Close()

	if out, err := exec.Command(filepath.Join(cfg.containerdDir, "containerd"), "--version").Output(); err == nil {
		fmt.Printf("upstream: %s", out)
	}
	var reports []*report
	for _, rt := range cfg.runtimes {
		if ctx.Err() != nil {
			break
		}
		fmt.Printf("\n==> containerd integration/client tests, TEST_RUNTIME=%s\n", rt)
		r := runRuntime(ctx, cfg, rt, top, m)
		reports = append(reports, r)
		printReport(r, cfg.tests)
		if r.logDir != "" {
			keepTop = true
		}
	}
	if refused := m.Refused(); len(refused) > 0 {
		fmt.Printf("upstream: the image mirror refused: %s\n", strings.Join(refused, ", "))
	}
	code := printSummary(cfg, reports)
	if ctx.Err() != nil {
		fmt.Println("upstream: interrupted")
		code = 1
	}
	return code
}

// runRuntime runs the tests with one runtime, in a daemon of its own.
func runRuntime(ctx context.Context, cfg config, rt, top string, m *mirror) *report {
	r := &report{runtime: rt}
	dir, err := os.MkdirTemp(top, strings.ReplaceAll(rt, ".", "-")+"-")
	if err != nil {
		r.failures = append(r.failures, err.Error())
		return r
	}
	d, err := startDaemon(dir, cfg.containerdDir, map[string]string{
		"containerd-shim-runc-v2":    filepath.Join(cfg.containerdDir, "containerd-shim-runc-v2"),
		"containerd-shim-sandbox-v2": cfg.shim,
		"runc-fp":                    cfg.runcFP,
	})
	if err != nil {
		r.failures = append(r.failures, err.Error())
		r.logDir = dir
		return r
	}
	r.results, r.other, r.exitErr = runTests(ctx, cfg, rt, d, m)

	r.leftovers = append(r.leftovers, d.cleanup()...)
	// A shim exits once containerd has deleted its last task; give the
	// last ones time before calling them leftovers.
	for _, pid := range d.waitShims(10 * time.Second) {
		r.leftovers = append(r.leftovers, fmt.Sprintf("shim pid %d still running 10s after its containers were deleted", pid))
	}
	d.stop()
	r.judge(cfg.tests)
	r.leftovers = append(r.leftovers, d.teardown(len(r.failures) > 0 || len(r.leftovers) > 0 || cfg.keep)...)
	r.leftovers = append(r.leftovers, removeCgroups(cfg.tests)...)
	if len(r.leftovers) > 0 {
		r.failures = append(r.failures, fmt.Sprintf("%d leftovers", len(r.leftovers)))
	}
	if len(r.failures) > 0 || cfg.keep {
		r.logDir = dir
	}
	return r
}

// runTests runs the test binary under test2json against d, until it
// exits or ctx ends.
func runTests(ctx context.Context, cfg config, rt string, d *daemon, m *mirror) (map[string]*result, []string, error) {
	tmp := filepath.Join(d.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, nil, err
	}
	raw, err := os.Create(filepath.Join(d.dir, "test.log"))
	if err != nil {
		return nil, nil, err
	}
	defer raw.Close()
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, nil, fmt.Errorf("test2json needs the go command: %w", err)
	}
	// -test.timeout makes the binary panic with every goroutine's stack;
	// the context's own deadline only ends a binary that could not.
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "tool", "test2json", "-t", "-p", "integration/client", cfg.clientTest,
		"-test.v=test2json", "-test.count=1", "-test.timeout", cfg.timeout.String(),
		"-test.run", "^("+strings.Join(cfg.tests, "|")+")$",
		"-test.root", "-no-daemon", "-address", d.address)
	cmd.Dir = d.dir
	cmd.Env = append(d.env(cfg.containerdDir), "TEST_RUNTIME="+rt, "TMPDIR="+tmp)
	cmd.Env = append(cmd.Env, m.env()...)
	cmd.Stderr = raw
	// test2json and the test binary in a group of their own, which the
	// context's end kills: a ^C on the terminal reaches only this program.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	results, other, cerr := collect(stdout, raw, os.Stdout)
	err = cmd.Wait()
	if cerr != nil && err == nil {
		err = cerr
	}
	return results, other, err
}

// judge sets r.failures from the results: every test must pass unless
// knownDifferences lists it for this runtime, and a listed one must fail.
func (r *report) judge(tests []string) {
	for _, name := range tests {
		res := r.results[name]
		_, known := knownDifferences[r.runtime][name]
		switch {
		case res == nil || res.action == "":
			r.failures = append(r.failures, name+": no result (did not run, or the binary died)")
		case res.action == "pass" && known:
			r.failures = append(r.failures, name+": passes, but knownDifferences lists it: remove it from the list")
		case res.action != "pass" && !known:
			r.failures = append(r.failures, name+": "+strings.ToUpper(res.action))
		}
	}
	if r.exitErr != nil && len(r.failures) == 0 {
		r.failures = append(r.failures, fmt.Sprintf("test binary: %v", r.exitErr))
	}
}

// status is one test's cell in the summary.
func (r *report) status(name string) string {
	res := r.results[name]
	if res == nil || res.action == "" {
		return "NO RESULT"
	}
	s := strings.ToUpper(res.action)
	if _, known := knownDifferences[r.runtime][name]; known && res.action != "pass" {
		s += " (known)"
	}
	return s
}

const maxLines = 40

func printReport(r *report, tests []string) {
	for _, name := range tests {
		res := r.results[name]
		if res == nil || res.action == "pass" {
			continue
		}
		fmt.Printf("--- %s %s, %s:\n", name, strings.ToUpper(orNone(res.action)), r.runtime)
		if reason, ok := knownDifferences[r.runtime][name]; ok {
			fmt.Printf("    known difference: %s\n", reason)
		}
		lines := failureLines(res.output)
		if len(lines) == 0 {
			lines = res.output
		}
		printTail(lines)
	}
	if r.exitErr != nil || len(r.results) == 0 {
		fmt.Printf("--- test binary (%v), output outside any test:\n", orOK(r.exitErr))
		printTail(r.other)
	}
	for _, l := range r.leftovers {
		fmt.Println("LEFTOVER:", l)
	}
	if r.logDir != "" {
		fmt.Printf("upstream: logs of this run (test.log, containerd.log) kept in %s\n", r.logDir)
	}
}

func printTail(lines []string) {
	if len(lines) > maxLines {
		fmt.Printf("    ... %d lines before (see test.log)\n", len(lines)-maxLines)
		lines = lines[len(lines)-maxLines:]
	}
	for _, l := range lines {
		fmt.Println("    " + l)
	}
}

// printSummary prints a test x runtime table and the closing count, and
// returns the exit code.
func printSummary(cfg config, reports []*report) int {
	fmt.Printf("\n==> containerd integration/client tests: summary\n")
	fmt.Printf("%-40s", "")
	for _, r := range reports {
		fmt.Printf(" %-26s", r.runtime)
	}
	fmt.Println()
	passed, failed, known := 0, 0, 0
	for _, name := range cfg.tests {
		fmt.Printf("%-40s", name)
		for _, r := range reports {
			s := r.status(name)
			fmt.Printf(" %-26s", s)
			switch {
			case s == "PASS":
				passed++
			case strings.HasSuffix(s, "(known)"):
				known++
			default:
				failed++
			}
		}
		fmt.Println()
	}
	code := 0
	for _, r := range reports {
		for _, f := range r.failures {
			fmt.Printf("FAIL %s: %s\n", r.runtime, f)
			code = 1
		}
	}
	if known > 0 {
		fmt.Printf("upstream: %d known differences (knownDifferences) are counted as skipped\n", known)
		fmt.Printf("upstream: %d passed, %d failed, %d skipped\n", passed, failed, known)
		return code
	}
	fmt.Printf("upstream: %d passed, %d failed\n", passed, failed)
	return code
}

func orNone(action string) string {
	if action == "" {
		return "no result"
	}
	return action
}

func orOK(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}
