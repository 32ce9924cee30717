package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// newTestInit returns an Init for container c1 in a fresh bundle whose
// fake runtime "creates" child: the pid file names it.
func newTestInit(t *testing.T, eng *fakeruntime.Runtime, child *exec.Cmd) *Init {
	t.Helper()
	if eng.OnCreate == nil && child != nil {
		eng.OnCreate = fakeruntime.WritePid(child.Process.Pid)
	}
	return NewInit(InitConfig{ID: "c1", Bundle: t.TempDir()}, eng)
}

// createdInit returns an Init already in Created, backed by a live child.
func createdInit(t *testing.T, eng *fakeruntime.Runtime) (*Init, *exec.Cmd) {
	t.Helper()
	child := testutil.StartSleeper(t)
	p := newTestInit(t, eng, child)
	if _, err := p.Create(context.Background()); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return p, child
}

func wantState(t *testing.T, p *Init, want State) {
	t.Helper()
	if got := p.Status().State; got != want {
		t.Fatalf("state: got %s, want %s", got, want)
	}
}

// childSignal waits for the child and returns the signal that killed it.
func childSignal(t *testing.T, cmd *exec.Cmd) syscall.Signal {
	t.Helper()
	done := make(chan struct{})
	var ws syscall.WaitStatus
	go func() {
		defer close(done)
		_ = cmd.Wait()
		ws = cmd.ProcessState.Sys().(syscall.WaitStatus)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("child did not die")
	}
	if !ws.Signaled() {
		t.Fatalf("child exited with %d, want a signal death", ws.ExitStatus())
	}
	return ws.Signal()
}

func TestInitLifecycle(t *testing.T) {
	testutil.CheckNoLeaks(t)
	ctx := context.Background()
	eng := &fakeruntime.Runtime{}
	child := testutil.StartSleeper(t)
	var gotOpts *runc.CreateOpts
	eng.OnCreate = func(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error {
		gotOpts = opts
		return fakeruntime.WritePid(child.Process.Pid)(ctx, id, bundle, opts)
	}
	bundle := t.TempDir()
	p := NewInit(InitConfig{
		ID:      "c1",
		Bundle:  bundle,
		Options: ociruntime.Options{NoPivotRoot: true, NoNewKeyring: true},
	}, eng)
	if p.ID() != "c1" {
		t.Errorf("ID: got %q, want c1", p.ID())
	}

	pid, err := p.Create(ctx)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if pid != child.Process.Pid {
		t.Errorf("Create pid: got %d, want %d", pid, child.Process.Pid)
	}
	wantState(t, p, Created)
	if st := p.Status(); st.Pid != pid || st.ID != "c1" || st.Bundle != bundle {
		t.Errorf("Status after Create: got %+v", st)
	}
	if gotOpts == nil {
		t.Fatal("engine.Create got no options")
	}
	if want := filepath.Join(bundle, "init.pid"); gotOpts.PidFile != want {
		t.Errorf("pid file: got %q, want %q", gotOpts.PidFile, want)
	}
	if !gotOpts.NoPivot || !gotOpts.NoNewKeyring {
		t.Errorf("runtime options not passed: NoPivot=%v NoNewKeyring=%v", gotOpts.NoPivot, gotOpts.NoNewKeyring)
	}
	if gotOpts.IO == nil {
		t.Error("engine.Create got no IO")
	}

	if err := p.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	wantState(t, p, Running)

	if err := p.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second Start: got %v, want FailedPrecondition", err)
	}
	wantState(t, p, Running)
	if _, err := p.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Delete while running: got %v, want FailedPrecondition", err)
	}
	wantState(t, p, Running)

	exitedAt := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	p.SetExited(3, exitedAt)
	wantState(t, p, Stopped)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := p.Wait(wctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.ExitStatus != 3 || !st.ExitedAt.Equal(exitedAt) || st.State != Stopped {
		t.Errorf("Wait: got status %d at %v in %s, want 3 at %v in stopped", st.ExitStatus, st.ExitedAt, st.State, exitedAt)
	}

	// A second exit report for the same process changes nothing.
	p.SetExited(99, time.Now())
	if st := p.Status(); st.ExitStatus != 3 || !st.ExitedAt.Equal(exitedAt) {
		t.Errorf("after a second SetExited: got %d at %v, want 3 at %v", st.ExitStatus, st.ExitedAt, exitedAt)
	}

	st, err = p.Delete(ctx)
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if st.State != Deleted || st.ExitStatus != 3 || !st.ExitedAt.Equal(exitedAt) || st.Pid != pid {
		t.Errorf("Delete status: got %+v, want deleted, pid %d, exit 3 at %v", st, pid, exitedAt)
	}
	wantState(t, p, Deleted)

	if err := p.Kill(ctx, int(unix.SIGKILL), false); !errdefs.IsNotFound(err) {
		t.Errorf("Kill after Delete: got %v, want NotFound", err)
	}
	if _, err := p.Delete(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second Delete: got %v, want FailedPrecondition", err)
	}
	if err := p.Start(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start after Delete: got %v, want FailedPrecondition", err)
	}

	want := []string{"create c1", "start c1", "delete c1 stopped=true"}
	if got := eng.Calls(); !slices.Equal(got, want) {
		t.Errorf("engine calls: got %q, want %q", got, want)
	}
}

func TestInitKillStopped(t *testing.T) {
	tests := []struct {
		name      string
		sig       unix.Signal
		all       bool
		wantErr   error // nil or the errdefs class
		wantCalls []string
	}{
		// As the runc shim answers it (containerd's TestContainerKill):
		// no signal reaches a finished process, not even a second stop.
		{name: "SIGKILL", sig: unix.SIGKILL, wantErr: errdefs.ErrNotFound, wantCalls: []string{"create c1"}},
		{name: "SIGTERM", sig: unix.SIGTERM, wantErr: errdefs.ErrNotFound, wantCalls: []string{"create c1"}},
		{name: "SIGUSR1", sig: unix.SIGUSR1, wantErr: errdefs.ErrNotFound, wantCalls: []string{"create c1"}},
		{name: "SIGHUP", sig: unix.SIGHUP, wantErr: errdefs.ErrNotFound, wantCalls: []string{"create c1"}},
		{name: "SIGKILL all", sig: unix.SIGKILL, all: true, wantCalls: []string{"create c1", "kill c1 9 all=true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeruntime.Runtime{}
			p, _ := createdInit(t, eng)
			p.SetExited(137, time.Now())
			wantState(t, p, Stopped)
			err := p.Kill(context.Background(), int(tt.sig), tt.all)
			if tt.wantErr == nil && err != nil {
				t.Errorf("Kill(%v, all=%v): got %v, want nil", tt.sig, tt.all, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Kill(%v, all=%v): got %v, want %v", tt.sig, tt.all, err, tt.wantErr)
			}
			if got := eng.Calls(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("engine calls: got %q, want %q", got, tt.wantCalls)
			}
		})
	}
}

// TestInitKillLive: a signal to one live process goes through its pidfd,
// not the runtime; all goes through the runtime.
func TestInitKillLive(t *testing.T) {
	tests := []struct {
		name  string
		start bool
		sig   unix.Signal
	}{
		{name: "created SIGTERM", start: false, sig: unix.SIGTERM},
		{name: "running SIGKILL", start: true, sig: unix.SIGKILL},
		{name: "running SIGUSR1", start: true, sig: unix.SIGUSR1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeruntime.Runtime{}
			p, child := createdInit(t, eng)
			if tt.start {
				if err := p.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Kill(context.Background(), int(tt.sig), false); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if got := childSignal(t, child); got != tt.sig {
				t.Errorf("child died of %v, want %v", got, tt.sig)
			}
			for _, c := range eng.Calls() {
				if strings.HasPrefix(c, "kill") {
					t.Errorf("runtime kill called (%q); want the pidfd used", c)
				}
			}
		})
	}
}

func TestInitKillAllThroughRuntime(t *testing.T) {
	tests := []struct {
		name     string
		kill     func(context.Context, string, int, bool) error
		wantErr  string // "" for nil
		notFound bool
	}{
		{name: "ok"},
		// runc deleted behind the shim's back (containerd's
		// TestKillContainerDeletedByRunc): NotFound, not success.
		{name: "container gone", kill: func(context.Context, string, int, bool) error {
			return errNotFound
		}, notFound: true},
		{name: "failure", kill: func(context.Context, string, int, bool) error {
			return errors.New(`kill "c1": runc kill failed: exit status 1`)
		}, wantErr: `kill "c1": runc kill failed: exit status 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeruntime.Runtime{OnKill: tt.kill}
			p, _ := createdInit(t, eng)
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			err := p.Kill(context.Background(), int(unix.SIGTERM), true)
			switch {
			case tt.notFound:
				if !errdefs.IsNotFound(err) {
					t.Errorf("Kill all: got %v, want NotFound", err)
				}
			case tt.wantErr == "" && err != nil:
				t.Errorf("Kill all: got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Errorf("Kill all: got %v, want %q", err, tt.wantErr)
			}
			want := []string{"create c1", "start c1", "kill c1 15 all=true"}
			if got := eng.Calls(); !slices.Equal(got, want) {
				t.Errorf("engine calls: got %q, want %q", got, want)
			}
		})
	}
}

// TestInitDeleteCreatedWaitsForExit: runc delete --force kills the
// process waiting in runc init; Delete reports that exit, delivered by the
// reaper from another goroutine, not a made-up one.
func TestInitDeleteCreatedWaitsForExit(t *testing.T) {
	eng := &fakeruntime.Runtime{}
	deleting := make(chan struct{})
	eng.OnDelete = func(context.Context, string, bool) error {
		close(deleting)
		return nil
	}
	p, _ := createdInit(t, eng)
	exitedAt := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	go func() {
		<-deleting
		p.SetExited(143, exitedAt)
	}()
	st, err := p.Delete(context.Background())
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if st.State != Deleted || st.ExitStatus != 143 || !st.ExitedAt.Equal(exitedAt) {
		t.Errorf("Delete status: got %s, %d at %v; want deleted, 143 at %v", st.State, st.ExitStatus, st.ExitedAt, exitedAt)
	}
}

// TestInitCreateFailure: a failed runtime create carries runc's own words
// and the original error, cleans up after runc and leaves nothing open.
func TestInitCreateFailure(t *testing.T) {
	cause := errors.New("exit status 1")
	tests := []struct {
		name      string
		create    func(p *Init) func(context.Context, string, string, *runc.CreateOpts) error
		wantIs    error
		wantInMsg string
	}{
		{
			name: "runtime create fails",
			create: func(p *Init) func(context.Context, string, string, *runc.CreateOpts) error {
				return func(context.Context, string, string, *runc.CreateOpts) error {
					return fmt.Errorf(`create "c1": exec: "/nope": no such file or directory: %w`, cause)
				}
			},
			wantIs:    cause,
			wantInMsg: `create "c1": exec: "/nope": no such file or directory: exit status 1`,
		},
		{
			name: "pid file garbage",
			create: func(p *Init) func(context.Context, string, string, *runc.CreateOpts) error {
				return func(_ context.Context, _, _ string, opts *runc.CreateOpts) error {
					return os.WriteFile(opts.PidFile, []byte("garbage"), 0o600)
				}
			},
			wantIs:    errdefs.ErrUnknown,
			wantInMsg: "garbage",
		},
		{
			name: "pid file missing",
			create: func(p *Init) func(context.Context, string, string, *runc.CreateOpts) error {
				return func(context.Context, string, string, *runc.CreateOpts) error { return nil }
			},
			wantIs:    os.ErrNotExist,
			wantInMsg: "read pid file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.CheckNoLeaks(t)
			dir := t.TempDir()
			out := testutil.Mkfifo(t, dir, "out")
			in := testutil.Mkfifo(t, dir, "in")
			eng := &fakeruntime.Runtime{}
			p := NewInit(InitConfig{ID: "c1", Bundle: t.TempDir(), Stdio: stdio.Stdio{Stdin: in, Stdout: out, Stderr: out}}, eng)
			eng.OnCreate = tt.create(p)
			pid, err := p.Create(context.Background())
			if err == nil {
				t.Fatal("Create: got nil error")
			}
			if pid != 0 {
				t.Errorf("pid: got %d, want 0", pid)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("Create error %q does not wrap %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("Create error %q does not contain %q", err, tt.wantInMsg)
			}
			want := []string{"create c1", "delete c1 stopped=false"}
			if got := eng.Calls(); !slices.Equal(got, want) {
				t.Errorf("engine calls: got %q, want %q", got, want)
			}
			if got := p.Status().State; got == Created {
				t.Errorf("state after a failed Create: got %s", got)
			}
		})
	}
}

// TestInitCreateFailureUnmountsRootfs: the rootfs mounted for a create
// that failed is unmounted again.
func TestInitCreateFailureUnmountsRootfs(t *testing.T) {
	testutil.NeedRoot(t)
	bundle := t.TempDir()
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(bundle, "rootfs"), unix.MNT_DETACH) })
	eng := &fakeruntime.Runtime{}
	var mountedDuringCreate int
	eng.OnCreate = func(context.Context, string, string, *runc.CreateOpts) error {
		mountedDuringCreate = len(testutil.MountsAt(t, filepath.Join(bundle, "rootfs")))
		return errors.New("exit status 1")
	}
	p := NewInit(InitConfig{ID: "c1", Bundle: bundle, Rootfs: []rootfs.Mount{{Type: "tmpfs", Source: "tmpfs"}}}, eng)
	if _, err := p.Create(context.Background()); err == nil {
		t.Fatal("Create: got nil error")
	}
	if mountedDuringCreate != 1 {
		t.Errorf("mounts on rootfs during runtime create: got %d, want 1", mountedDuringCreate)
	}
	if got := testutil.MountsAt(t, filepath.Join(bundle, "rootfs")); len(got) != 0 {
		t.Errorf("mounts left after a failed create: %v", got)
	}
}

// TestInitRootfsMountedUntilDelete: the rootfs stays mounted while the
// container lives and is unmounted by Delete.
func TestInitRootfsMountedUntilDelete(t *testing.T) {
	testutil.NeedRoot(t)
	child := testutil.StartSleeper(t)
	bundle := t.TempDir()
	rootDir := filepath.Join(bundle, "rootfs")
	t.Cleanup(func() { _ = unix.Unmount(rootDir, unix.MNT_DETACH) })
	eng := &fakeruntime.Runtime{OnCreate: fakeruntime.WritePid(child.Process.Pid)}
	p := NewInit(InitConfig{ID: "c1", Bundle: bundle, Rootfs: []rootfs.Mount{{Type: "tmpfs", Source: "tmpfs"}}}, eng)
	if _, err := p.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := testutil.MountsAt(t, rootDir); len(got) != 1 {
		t.Fatalf("mounts on rootfs after Create: got %v, want 1", got)
	}
	p.SetExited(0, time.Now())
	if _, err := p.Delete(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := testutil.MountsAt(t, rootDir); len(got) != 0 {
		t.Errorf("mounts on rootfs after Delete: %v", got)
	}
}

func TestInitStartFailure(t *testing.T) {
	eng := &fakeruntime.Runtime{}
	p, _ := createdInit(t, eng)
	cause := errors.New("exit status 1")
	eng.OnStart = func(context.Context, string, int) error {
		return fmt.Errorf(`start "c1": cannot start a container that has stopped: %w`, cause)
	}
	err := p.Start(context.Background())
	if !errors.Is(err, cause) {
		t.Fatalf("Start: got %v, want it to wrap %v", err, cause)
	}
	if want := `start "c1": cannot start a container that has stopped: exit status 1`; err.Error() != want {
		t.Errorf("Start error: got %q, want %q", err, want)
	}
	wantState(t, p, Created)

	eng.OnStart = nil
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start retry: %v", err)
	}
	wantState(t, p, Running)
}

// TestInitExitDuringStart: a process that exits before runc start returns
// (/bin/true) ends Stopped, and Start still succeeds.
func TestInitExitDuringStart(t *testing.T) {
	tests := []struct {
		name     string
		startErr error
	}{
		{name: "start succeeds", startErr: nil},
		{name: "start reports an error after the exit", startErr: errors.New("exit status 1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeruntime.Runtime{}
			p, _ := createdInit(t, eng)
			eng.OnStart = func(context.Context, string, int) error {
				p.SetExited(0, time.Now())
				return tt.startErr
			}
			if err := p.Start(context.Background()); err != nil {
				t.Fatalf("Start: got %v, want nil", err)
			}
			wantState(t, p, Stopped)
			st, err := p.Wait(context.Background())
			if err != nil || st.ExitStatus != 0 {
				t.Errorf("Wait: got (%d, %v), want (0, nil)", st.ExitStatus, err)
			}
		})
	}
}

// TestInitStartingRefusesSecondCaller: while runc start runs, a second
// Start or a Delete fails cleanly instead of racing it.
func TestInitStartingRefusesSecondCaller(t *testing.T) {
	eng := &fakeruntime.Runtime{}
	p, _ := createdInit(t, eng)
	entered, release := make(chan struct{}), make(chan struct{})
	eng.OnStart = func(context.Context, string, int) error {
		close(entered)
		<-release
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- p.Start(context.Background()) }()
	<-entered
	wantState(t, p, Starting)
	if err := p.Start(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second Start while starting: got %v, want FailedPrecondition", err)
	}
	if _, err := p.Delete(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Delete while starting: got %v, want FailedPrecondition", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Start: %v", err)
	}
	wantState(t, p, Running)
}

func TestInitDeleteRuntimeResults(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantErr   bool
		wantState State
	}{
		{name: "ok", err: nil, wantState: Deleted},
		{name: "failure keeps stopped", err: errors.New("exit status 1: device or resource busy"), wantErr: true, wantState: Stopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := &fakeruntime.Runtime{OnDelete: func(context.Context, string, bool) error { return tt.err }}
			p, _ := createdInit(t, eng)
			p.SetExited(1, time.Now())
			_, err := p.Delete(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Delete: got %v, want error %v", err, tt.wantErr)
			}
			wantState(t, p, tt.wantState)
			if tt.wantErr {
				// A failed delete may be retried.
				eng.OnDelete = nil
				if _, err := p.Delete(context.Background()); err != nil {
					t.Fatalf("Delete retry: %v", err)
				}
				wantState(t, p, Deleted)
			}
		})
	}
}

func TestInitWaitContext(t *testing.T) {
	p, _ := createdInit(t, &fakeruntime.Runtime{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context: got %v, want context.Canceled", err)
	}
}

// TestInitWaitManyCallers: every Wait caller wakes on the one exit.
func TestInitWaitManyCallers(t *testing.T) {
	p, _ := createdInit(t, &fakeruntime.Runtime{})
	const n = 10
	var wg sync.WaitGroup
	results := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := p.Wait(ctx)
			if err != nil {
				results <- -1
				return
			}
			results <- st.ExitStatus
		}()
	}
	p.SetExited(42, time.Now())
	wg.Wait()
	close(results)
	for got := range results {
		if got != 42 {
			t.Errorf("Wait: got %d, want 42", got)
		}
	}
}

func TestInitPids(t *testing.T) {
	tests := []struct {
		name    string
		ps      func(context.Context, string) ([]int, error)
		want    []int
		wantErr bool
	}{
		{name: "ok", ps: func(context.Context, string) ([]int, error) { return []int{10, 11}, nil }, want: []int{10, 11}},
		{name: "failure", ps: func(context.Context, string) ([]int, error) { return nil, errors.New("exit status 1") }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := createdInit(t, &fakeruntime.Runtime{OnPs: tt.ps})
			got, err := p.Pids(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Pids: got error %v, want error %v", err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Pids: got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestInitCloseStdin: CloseIO reaches the container's stdin; with no IO
// it is a no-op.
func TestInitCloseStdin(t *testing.T) {
	NewInit(InitConfig{ID: "c1", Bundle: t.TempDir()}, &fakeruntime.Runtime{}).CloseStdin()

	child := testutil.StartSleeper(t)
	in := testutil.Mkfifo(t, t.TempDir(), "in")
	p := NewInit(InitConfig{ID: "c1", Bundle: t.TempDir(), Stdio: stdio.Stdio{Stdin: in}}, &fakeruntime.Runtime{OnCreate: fakeruntime.WritePid(child.Process.Pid)})
	if _, err := p.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.SetExited(0, time.Now())
		_, _ = p.Delete(context.Background())
	}()
	w := testutil.OpenFifoWriter(t, in)
	w.Close()
	p.CloseStdin()
	p.mu.Lock()
	pio := p.io
	p.mu.Unlock()
	select {
	case <-pio.StdinCopied():
	case <-time.After(10 * time.Second):
		t.Fatal("stdin copy still running after CloseStdin")
	}
}

// TestInitDeleteCreatedWithoutExit: when the exit of a never-started
// container does not arrive within deleteExitWait, Delete reports the
// SIGKILL runc sent (137). The process must then look exited everywhere:
// Wait callers (containerd holds one open for every task) return, the
// pidfd is closed, and the reaper's late report changes nothing.
func TestInitDeleteCreatedWithoutExit(t *testing.T) {
	child := testutil.StartSleeper(t)
	before := testutil.CountFDs(t)
	p := newTestInit(t, &fakeruntime.Runtime{}, child)
	if _, err := p.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p.pidfd < 0 {
		t.Fatal("no pidfd for a live child; test cannot check the leak")
	}
	st, err := p.Delete(context.Background()) // waits deleteExitWait
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if st.ExitStatus != KilledStatus {
		t.Errorf("Delete status: got %d, want %d", st.ExitStatus, KilledStatus)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if st, err := p.Wait(ctx); err != nil || st.ExitStatus != KilledStatus {
		t.Errorf("Wait after Delete: got (%d, %v), want (%d, nil)", st.ExitStatus, err, KilledStatus)
	}
	// The reaper's late report must not reopen anything either.
	p.SetExited(0, time.Now())
	if got := testutil.CountFDs(t); got > before {
		t.Errorf("fds after Delete: got %d, want %d (pidfd leaked)\n%s", got, before, testutil.ListFDs())
	}
}

// TestInitUpdate: resources reach the runtime for a created or running
// container; a stopped one is a FailedPrecondition that names its state,
// and a runtime failure carries runc's log line.
func TestInitUpdate(t *testing.T) {
	ctx := context.Background()
	shares := uint64(512)
	res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}
	var got *specs.LinuxResources
	eng := &fakeruntime.Runtime{OnUpdate: func(_ context.Context, _ string, r *specs.LinuxResources) error { got = r; return nil }}
	p, child := createdInit(t, eng)
	if err := p.Update(ctx, res); err != nil {
		t.Fatalf("Update created: %v", err)
	}
	if got != res {
		t.Errorf("runtime got resources %+v, want %+v", got, res)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eng.OnUpdate = func(context.Context, string, *specs.LinuxResources) error {
		return errors.New(`update "c1": cgroup write failed: exit status 1`)
	}
	if err := p.Update(ctx, res); err == nil || !strings.Contains(err.Error(), "cgroup write failed") {
		t.Errorf("Update with a failing runtime = %v, want runc's log line", err)
	}
	child.Process.Kill()
	child.Wait()
	p.SetExited(137, time.Now())
	err := p.Update(ctx, res)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Update stopped = %v, want FailedPrecondition naming the state", err)
	}
}
