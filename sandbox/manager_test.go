package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/fakeruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

var lifecycleTopics = []string{TopicTaskCreate, TopicTaskStart, TopicTaskExit, TopicTaskDelete}

func TestManagerEventOrder(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle := newBundle(t, nil)
	out := filepath.Join(t.TempDir(), "stdout")
	if err := unix.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	child := testutil.StartSleeper(t)
	p.engineFor(bundle).OnCreate = fakeruntime.WritePid(child.Process.Pid)
	pid, err := p.m.Create(ctx, CreateRequest{
		ID:      "c1",
		Bundle:  bundle,
		Stdio:   stdio.Stdio{Stdout: out, Stderr: out},
		Options: ociruntime.Options{BinaryName: "crun"},
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got, err := p.m.Start(ctx, "c1"); err != nil || got != pid {
		t.Fatalf("Start: got (%d, %v), want (%d, nil)", got, err, pid)
	}
	exitedAt := time.Date(2024, 3, 4, 5, 6, 7, 0, time.UTC)
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 3, Timestamp: exitedAt})
	st, err := p.m.Wait(ctx, "c1")
	if err != nil || st.ExitStatus != 3 {
		t.Fatalf("Wait: got (%d, %v), want (3, nil)", st.ExitStatus, err)
	}
	st, err = p.m.Delete(ctx, "c1")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if st.ExitStatus != 3 || st.Pid != pid || st.State != process.Deleted {
		t.Errorf("Delete: got %+v, want pid %d, exit 3, deleted", st, pid)
	}
	p.close(t)

	evs := p.pub.all()
	var topics []string
	for _, e := range evs {
		topics = append(topics, e.topic)
	}
	if !slices.Equal(topics, lifecycleTopics) {
		t.Fatalf("topics: got %q, want %q", topics, lifecycleTopics)
	}
	create := evs[0].event.(*eventstypes.TaskCreate)
	if create.ContainerID != "c1" || create.Bundle != bundle || create.Pid != uint32(pid) ||
		create.IO.GetStdout() != out || create.IO.GetStderr() != out || create.IO.GetStdin() != "" || create.IO.GetTerminal() {
		t.Errorf("TaskCreate: got %v", create)
	}
	if start := evs[1].event.(*eventstypes.TaskStart); start.ContainerID != "c1" || start.Pid != uint32(pid) {
		t.Errorf("TaskStart: got %v", start)
	}
	exit := evs[2].event.(*eventstypes.TaskExit)
	if exit.ContainerID != "c1" || exit.ID != "c1" || exit.Pid != uint32(pid) || exit.ExitStatus != 3 || !exit.ExitedAt.AsTime().Equal(exitedAt) {
		t.Errorf("TaskExit: got %v", exit)
	}
	del := evs[3].event.(*eventstypes.TaskDelete)
	if del.ContainerID != "c1" || del.ID != "c1" || del.Pid != uint32(pid) || del.ExitStatus != 3 || !del.ExitedAt.AsTime().Equal(exitedAt) {
		t.Errorf("TaskDelete: got %v", del)
	}

	// The options are kept in the bundle for the delete action.
	bst, err := readBundleState(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if bst.Options.BinaryName != "crun" {
		t.Errorf("bundle state options: got %+v, want BinaryName crun", bst.Options)
	}
}

// TestManagerExitDuringStart: an exit that arrives while runc start is
// still running is published after TaskStart (DESIGN.md race 2).
func TestManagerExitDuringStart(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, e := p.createContainer(t, "c1")
	entered, release := make(chan struct{}), make(chan struct{})
	e.OnStart = func(context.Context, string, int) error {
		close(entered)
		<-release
		return nil
	}
	started := make(chan error, 1)
	go func() {
		_, err := p.m.Start(ctx, "c1")
		started <- err
	}()
	<-entered
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 9, Timestamp: time.Now()})
	close(release)
	if err := <-started; err != nil {
		t.Fatalf("Start: %v", err)
	}
	st, err := p.m.State(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != process.Stopped || st.ExitStatus != 9 {
		t.Errorf("State: got %s/%d, want stopped/9", st.State, st.ExitStatus)
	}
	p.close(t)
	want := []string{TopicTaskCreate, TopicTaskStart, TopicTaskExit}
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, want) {
		t.Errorf("topics: got %q, want %q", got, want)
	}
}

// TestManagerExitDuringCreate: a process that dies before its create has
// returned its pid (fast /bin/true) is not lost (DESIGN.md race 1).
func TestManagerExitDuringCreate(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle := newBundle(t, nil)
	child := testutil.StartSleeper(t)
	pid := child.Process.Pid
	exitedAt := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	p.engineFor(bundle).OnCreate = func(ctx context.Context, id, b string, opts *runc.CreateOpts) error {
		if err := fakeruntime.WritePid(pid)(ctx, id, b, opts); err != nil {
			return err
		}
		p.m.handleExit(reaper.Exit{Pid: pid, Status: 5, Timestamp: exitedAt})
		return nil
	}
	got, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: bundle})
	if err != nil || got != pid {
		t.Fatalf("Create: got (%d, %v), want (%d, nil)", got, err, pid)
	}
	st, err := p.m.State(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != process.Stopped || st.ExitStatus != 5 || !st.ExitedAt.Equal(exitedAt) {
		t.Errorf("State: got %s/%d at %v, want stopped/5 at %v", st.State, st.ExitStatus, st.ExitedAt, exitedAt)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if st, err := p.m.Wait(wctx, "c1"); err != nil || st.ExitStatus != 5 {
		t.Errorf("Wait: got (%d, %v), want (5, nil)", st.ExitStatus, err)
	}
	if _, err := p.m.Start(ctx, "c1"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start of an exited container: got %v, want FailedPrecondition", err)
	}
	if st, err := p.m.Delete(ctx, "c1"); err != nil || st.ExitStatus != 5 {
		t.Errorf("Delete: got (%d, %v), want (5, nil)", st.ExitStatus, err)
	}
	p.close(t)
	want := []string{TopicTaskCreate, TopicTaskExit, TopicTaskDelete}
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, want) {
		t.Errorf("topics: got %q, want %q", got, want)
	}
	p.m.exits.mu.Lock()
	defer p.m.exits.mu.Unlock()
	if len(p.m.exits.windows) != 0 || len(p.m.exits.live) != 0 {
		t.Errorf("after create: windows=%d live=%v, want none", len(p.m.exits.windows), p.m.exits.live)
	}
}

// TestManagerDeleteCreated: runc delete --force kills a never-started
// container; its exit (from the reaper) precedes TaskDelete.
func TestManagerDeleteCreated(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, e := p.createContainer(t, "c1")
	e.OnDelete = func(context.Context, string, bool) error {
		go p.m.handleExit(reaper.Exit{Pid: pid, Status: 137, Timestamp: time.Now()})
		return nil
	}
	st, err := p.m.Delete(ctx, "c1")
	if err != nil || st.ExitStatus != 137 {
		t.Fatalf("Delete: got (%d, %v), want (137, nil)", st.ExitStatus, err)
	}
	p.close(t)
	want := []string{TopicTaskCreate, TopicTaskExit, TopicTaskDelete}
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, want) {
		t.Errorf("topics: got %q, want %q", got, want)
	}
}

// TestManagerExitReportedOnce: a second exit for the same pid, or an exit
// for a pid nobody knows, publishes nothing.
func TestManagerExitReportedOnce(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, _ := p.createContainer(t, "c1")
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 1, Timestamp: time.Now()})
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 2, Timestamp: time.Now()})
	p.m.handleExit(reaper.Exit{Pid: 1 << 30, Status: 3, Timestamp: time.Now()})
	if st, _ := p.m.State(ctx, "c1"); st.ExitStatus != 1 {
		t.Errorf("exit status: got %d, want the first report, 1", st.ExitStatus)
	}
	p.close(t)
	want := []string{TopicTaskCreate, TopicTaskStart, TopicTaskExit}
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, want) {
		t.Errorf("topics: got %q, want %q", got, want)
	}
	if n := len(p.pub.all()); n != 3 {
		t.Errorf("events: got %d, want 3", n)
	}
	p.m.exits.mu.Lock()
	defer p.m.exits.mu.Unlock()
	if len(p.m.exits.windows) != 0 {
		t.Errorf("start windows open with no start in flight: %d", len(p.m.exits.windows))
	}
}

func TestManagerDuplicateID(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, e := p.createContainer(t, "c1")
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	bundle := newBundle(t, nil)
	dup := p.engineFor(bundle)
	_, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: bundle})
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("duplicate Create: got %v, want AlreadyExists", err)
	}
	if !strings.Contains(err.Error(), `"c1"`) {
		t.Errorf("error %q does not name the id", err)
	}
	if got := dup.Calls(); len(got) != 0 {
		t.Errorf("duplicate create reached the runtime: %q", got)
	}
	if _, err := os.Stat(filepath.Join(bundle, optionsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("duplicate create wrote bundle state: %v", err)
	}
	st, err := p.m.State(ctx, "c1")
	if err != nil || st.State != process.Running || st.Pid != pid {
		t.Errorf("existing container: got %s pid %d (%v), want running pid %d", st.State, st.Pid, err, pid)
	}
	if want := []string{"create c1", "start c1"}; !slices.Equal(e.Calls(), want) {
		t.Errorf("existing container's runtime calls: got %q, want %q", e.Calls(), want)
	}
}

// TestManagerCreateInFlight: while a create runs, the id is taken (a
// second create fails) but not yet usable (NotFound).
func TestManagerCreateInFlight(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	bundle := newBundle(t, nil)
	child := testutil.StartSleeper(t)
	entered, release := make(chan struct{}), make(chan struct{})
	p.engineFor(bundle).OnCreate = func(ctx context.Context, id, b string, opts *runc.CreateOpts) error {
		close(entered)
		<-release
		return fakeruntime.WritePid(child.Process.Pid)(ctx, id, b, opts)
	}
	created := make(chan error, 1)
	go func() {
		_, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: bundle})
		created <- err
	}()
	<-entered
	if _, err := p.m.Create(ctx, CreateRequest{ID: "c1", Bundle: newBundle(t, nil)}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("Create while the first is in flight: got %v, want AlreadyExists", err)
	}
	if _, err := p.m.State(ctx, "c1"); !errdefs.IsNotFound(err) {
		t.Errorf("State while creating: got %v, want NotFound", err)
	}
	if _, err := p.m.Start(ctx, "c1"); !errdefs.IsNotFound(err) {
		t.Errorf("Start while creating: got %v, want NotFound", err)
	}
	p.m.Shutdown(ctx)
	if p.m.mayExit() {
		t.Error("Shutdown while a create is in flight let the shim exit")
	}
	close(release)
	if err := <-created; err != nil {
		t.Fatalf("Create: %v", err)
	}
	if st, err := p.m.State(ctx, "c1"); err != nil || st.State != process.Created {
		t.Errorf("State after create: got %s (%v), want created", st.State, err)
	}
}

func TestManagerUnknownID(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	p.createContainer(t, "other")
	tests := []struct {
		name string
		call func() error
	}{
		{"Start", func() error { _, err := p.m.Start(ctx, "nosuch"); return err }},
		{"Kill", func() error { return p.m.Kill(ctx, "nosuch", 9, false) }},
		{"Kill all", func() error { return p.m.Kill(ctx, "nosuch", 9, true) }},
		{"Delete", func() error { _, err := p.m.Delete(ctx, "nosuch"); return err }},
		{"State", func() error { _, err := p.m.State(ctx, "nosuch"); return err }},
		{"Wait", func() error { _, err := p.m.Wait(ctx, "nosuch"); return err }},
		{"Pids", func() error { _, err := p.m.Pids(ctx, "nosuch"); return err }},
		{"CloseIO", func() error { return p.m.CloseIO(ctx, "nosuch") }},
		{"Connect", func() error { _, _, err := p.m.Connect(ctx, "nosuch"); return err }},
		{"Stats", func() error { _, err := p.m.Stats(ctx, "nosuch"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errdefs.IsNotFound(err) {
				t.Fatalf("%s(nosuch): got %v, want NotFound", tt.name, err)
			}
			if !strings.Contains(err.Error(), `"nosuch"`) {
				t.Errorf("error %q does not name the id", err)
			}
		})
	}
}

func TestManagerPassThrough(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, e := p.createContainer(t, "c1")
	e.OnPs = func(context.Context, string) ([]int, error) { return []int{pid, 4242}, nil }
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	shimPid, taskPid, err := p.m.Connect(ctx, "c1")
	if err != nil || shimPid != os.Getpid() || taskPid != pid {
		t.Errorf("Connect: got (%d, %d, %v), want (%d, %d, nil)", shimPid, taskPid, err, os.Getpid(), pid)
	}
	if got, err := p.m.Pids(ctx, "c1"); err != nil || !slices.Equal(got, []int{pid, 4242}) {
		t.Errorf("Pids: got (%v, %v), want ([%d 4242], nil)", got, err, pid)
	}
	if err := p.m.Kill(ctx, "c1", 9, true); err != nil {
		t.Errorf("Kill all: %v", err)
	}
	if err := p.m.CloseIO(ctx, "c1"); err != nil {
		t.Errorf("CloseIO: %v", err)
	}
	want := []string{"create c1", "start c1", "ps c1", "kill c1 9 all=true"}
	if got := e.Calls(); !slices.Equal(got, want) {
		t.Errorf("runtime calls: got %q, want %q", got, want)
	}
}

// TestManagerBadCreateDoesNotDisturb: no rejected or failed create changes
// a running container of the pod or publishes anything.
func TestManagerBadCreateDoesNotDisturb(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, e := p.createContainer(t, "good")
	if _, err := p.m.Start(ctx, "good"); err != nil {
		t.Fatal(err)
	}
	goodBundle := func() string {
		st, _ := p.m.State(ctx, "good")
		return st.Bundle
	}()

	failing := newBundle(t, nil)
	p.engineFor(failing).OnCreate = func(context.Context, string, string, *runc.CreateOpts) error {
		return errors.New("exit status 1")
	}
	bad := []struct {
		name string
		req  CreateRequest
	}{
		{"duplicate id", CreateRequest{ID: "good", Bundle: newBundle(t, nil)}},
		{"same bundle, bad id", CreateRequest{ID: "a/b", Bundle: goodBundle}},
		{"empty id", CreateRequest{ID: "", Bundle: newBundle(t, nil)}},
		{"relative bundle", CreateRequest{ID: "x", Bundle: "bundle"}},
		{"missing bundle", CreateRequest{ID: "x", Bundle: "/nonexistent/bundle"}},
		{"escaping rootfs target", CreateRequest{ID: "x", Bundle: newBundle(t, nil), Rootfs: []rootfs.Mount{{Type: "bind", Source: "/", Target: "../x"}}}},
		{"relative stdout", CreateRequest{ID: "x", Bundle: newBundle(t, nil), Stdio: stdio.Stdio{Stdout: "out"}}},
		{"runtime create fails", CreateRequest{ID: "x", Bundle: failing}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := p.m.Create(ctx, tt.req); err == nil {
				t.Fatalf("Create(%+v): got nil error", tt.req)
			}
			st, err := p.m.State(ctx, "good")
			if err != nil || st.State != process.Running || st.Pid != pid || st.Bundle != goodBundle {
				t.Fatalf("good container after a bad create: got %+v (%v), want running pid %d", st, err, pid)
			}
		})
	}
	if _, err := p.m.State(ctx, "x"); !errdefs.IsNotFound(err) {
		t.Errorf("failed create left id x behind: State = %v", err)
	}
	if want := []string{"create x", "delete x stopped=false"}; !slices.Equal(p.engineFor(failing).Calls(), want) {
		t.Errorf("failed create's runtime calls: got %q, want %q", p.engineFor(failing).Calls(), want)
	}
	if want := []string{"create good", "start good"}; !slices.Equal(e.Calls(), want) {
		t.Errorf("good container's runtime calls: got %q, want %q", e.Calls(), want)
	}
	p.close(t)
	var topics []string
	for _, ev := range p.pub.all() {
		topics = append(topics, ev.topic+" "+eventContainer(ev.event))
	}
	if want := []string{TopicTaskCreate + " good", TopicTaskStart + " good"}; !slices.Equal(topics, want) {
		t.Errorf("events: got %q, want %q", topics, want)
	}
}

func TestManagerShutdown(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	pid, _ := p.createContainer(t, "c1")
	isDone := p.m.mayExit
	p.m.Shutdown(ctx)
	if isDone() {
		t.Fatal("Shutdown with a container left let the shim exit")
	}
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 0, Timestamp: time.Now()})
	p.m.Shutdown(ctx)
	if isDone() {
		t.Fatal("Shutdown with a stopped but undeleted container let the shim exit")
	}
	if _, err := p.m.Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if isDone() {
		t.Fatal("Delete alone let the shim exit; containerd's Shutdown decides")
	}
	p.m.Shutdown(ctx)
	if !isDone() {
		t.Fatal("Shutdown after the last Delete did not let the shim exit")
	}
	p.m.Shutdown(ctx) // a second Shutdown must not panic
}

// TestManagerCloseFlushes: Close publishes everything queued, in order,
// before returning.
func TestManagerCloseFlushes(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	const n = 20
	var want []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("c%d", i)
		p.createContainer(t, id)
		if _, err := p.m.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		want = append(want, TopicTaskCreate+" "+id, TopicTaskStart+" "+id)
	}
	p.close(t)
	var got []string
	for _, ev := range p.pub.all() {
		got = append(got, ev.topic+" "+eventContainer(ev.event))
	}
	if !slices.Equal(got, want) {
		t.Errorf("events after Close: got %q, want %q", got, want)
	}
}

// TestManagerCloseBoundedByContext: a publisher that never answers cannot
// hold Close past its context.
func TestManagerCloseBoundedByContext(t *testing.T) {
	pub := &fakePublisher{block: make(chan struct{})}
	m := NewManager(context.Background(), Config{Namespace: "ns", Publisher: pub})
	m.events.push(TopicTaskCreate, &eventstypes.TaskCreate{ContainerID: "c1"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Close(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close: got %v, want DeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after its context expired")
	}
}

// TestManagerPublishRetry: a publisher failing a few times (containerd
// restarting) still gets every event, in order.
func TestManagerPublishRetry(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	p.pub.mu.Lock()
	p.pub.fail = 2
	p.pub.mu.Unlock()
	pid, _ := p.createContainer(t, "c1")
	if _, err := p.m.Start(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	p.m.handleExit(reaper.Exit{Pid: pid, Status: 0, Timestamp: time.Now()})
	if _, err := p.m.Delete(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	p.close(t)
	if got := p.pub.topicsOf("c1"); !slices.Equal(got, lifecycleTopics) {
		t.Errorf("topics: got %q, want %q", got, lifecycleTopics)
	}
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	if p.pub.attempts != len(lifecycleTopics)+2 {
		t.Errorf("publish attempts: got %d, want %d", p.pub.attempts, len(lifecycleTopics)+2)
	}
}

// TestManagerPublishRejected: an event containerd refuses is dropped after
// one attempt, and the ones behind it still go out.
func TestManagerPublishRejected(t *testing.T) {
	pub := &fakePublisher{rejectTopic: TopicTaskStart}
	q := newEventQueue(pub)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		q.run(ctx)
	}()
	q.push(TopicTaskCreate, &eventstypes.TaskCreate{ContainerID: "c1"})
	q.push(TopicTaskStart, &eventstypes.TaskStart{ContainerID: "c1"})
	q.push(TopicTaskExit, &eventstypes.TaskExit{ContainerID: "c1"})
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if err := q.close(cctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	<-done
	if got, want := pub.topicsOf("c1"), []string{TopicTaskCreate, TopicTaskExit}; !slices.Equal(got, want) {
		t.Errorf("topics: got %q, want %q", got, want)
	}
	if got, want := pub.attempts, 3; got != want {
		t.Errorf("publish attempts: got %d, want %d", got, want)
	}
}

// TestManagerConcurrentCreates: many containers created at once, half of
// them dying during their own create, each end with their own status and
// exactly one TaskExit after their TaskCreate.
func TestManagerConcurrentCreates(t *testing.T) {
	ctx := context.Background()
	p := newPod(t)
	const n = 20
	type ctr struct {
		id     string
		bundle string
		pid    int
	}
	ctrs := make([]ctr, n)
	for i := range ctrs {
		c := ctr{id: fmt.Sprintf("c%d", i), bundle: newBundle(t, nil), pid: testutil.StartSleeper(t).Process.Pid}
		early := i%2 == 0
		status := 10 + i
		p.engineFor(c.bundle).OnCreate = func(ctx context.Context, id, b string, opts *runc.CreateOpts) error {
			if err := fakeruntime.WritePid(c.pid)(ctx, id, b, opts); err != nil {
				return err
			}
			if early {
				p.m.handleExit(reaper.Exit{Pid: c.pid, Status: status, Timestamp: time.Now()})
			}
			return nil
		}
		ctrs[i] = c
	}
	var wg sync.WaitGroup
	for i, c := range ctrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.m.Create(ctx, CreateRequest{ID: c.id, Bundle: c.bundle}); err != nil {
				t.Errorf("Create %s: %v", c.id, err)
				return
			}
			if i%2 == 1 {
				p.m.handleExit(reaper.Exit{Pid: c.pid, Status: 10 + i, Timestamp: time.Now()})
			}
		}()
	}
	wg.Wait()
	for i, c := range ctrs {
		st, err := p.m.State(ctx, c.id)
		if err != nil || st.State != process.Stopped || st.ExitStatus != 10+i {
			t.Errorf("%s: got %s/%d (%v), want stopped/%d", c.id, st.State, st.ExitStatus, err, 10+i)
		}
	}
	p.close(t)
	for _, c := range ctrs {
		if got, want := p.pub.topicsOf(c.id), []string{TopicTaskCreate, TopicTaskExit}; !slices.Equal(got, want) {
			t.Errorf("%s topics: got %q, want %q", c.id, got, want)
		}
	}
}

func TestMountsToAPI(t *testing.T) {
	in := []rootfs.Mount{
		{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l", "upperdir=/u"}},
		{Type: "bind", Source: "/src", Target: "sub", Options: []string{"rbind", "ro"}},
	}
	got := mountsToAPI(in)
	if len(got) != len(in) {
		t.Fatalf("got %d mounts, want %d", len(got), len(in))
	}
	for i, m := range got {
		if m.Type != in[i].Type || m.Source != in[i].Source || m.Target != in[i].Target || !slices.Equal(m.Options, in[i].Options) {
			t.Errorf("mount %d: got %v, want %+v", i, m, in[i])
		}
	}
	if got := mountsToAPI(nil); got == nil || len(got) != 0 {
		t.Errorf("mountsToAPI(nil): got %v, want an empty non-nil slice", got)
	}
}
