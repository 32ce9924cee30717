package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
)

// noUnmarshal leaves the request as new() made it.
func noUnmarshal(any) error { return nil }

// unmarshalFrom returns an unmarshal func that fills the request from m,
// as ttrpc does from the wire.
func unmarshalFrom(m proto.Message) func(any) error {
	return func(dst any) error {
		data, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		return proto.Unmarshal(data, dst.(proto.Message))
	}
}

func TestMethodMapsErrors(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode codes.Code
		wantIs   error
	}{
		{name: "not found", err: fmt.Errorf("state %q: %w", "c1", errdefs.ErrNotFound), wantCode: codes.NotFound, wantIs: errdefs.ErrNotFound},
		{name: "already exists", err: fmt.Errorf("create %q: %w", "c1", errdefs.ErrAlreadyExists), wantCode: codes.AlreadyExists, wantIs: errdefs.ErrAlreadyExists},
		{name: "failed precondition", err: fmt.Errorf("start: %w", errdefs.ErrFailedPrecondition), wantCode: codes.FailedPrecondition, wantIs: errdefs.ErrFailedPrecondition},
		{name: "invalid argument", err: fmt.Errorf("kill: %w", errdefs.ErrInvalidArgument), wantCode: codes.InvalidArgument, wantIs: errdefs.ErrInvalidArgument},
		{name: "not implemented", err: fmt.Errorf("pause: %w", errdefs.ErrNotImplemented), wantCode: codes.Unimplemented, wantIs: errdefs.ErrNotImplemented},
		{name: "unavailable", err: fmt.Errorf("x: %w", errdefs.ErrUnavailable), wantCode: codes.Unavailable, wantIs: errdefs.ErrUnavailable},
		{name: "deadline", err: fmt.Errorf("x: %w", context.DeadlineExceeded), wantCode: codes.DeadlineExceeded, wantIs: context.DeadlineExceeded},
		{name: "canceled", err: fmt.Errorf("x: %w", context.Canceled), wantCode: codes.Canceled, wantIs: context.Canceled},
		{name: "plain error", err: errors.New("exit status 1"), wantCode: codes.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := func(context.Context, *taskapi.StateRequest) (*taskapi.StateResponse, error) { return nil, tt.err }
			resp, err := method(h)(context.Background(), noUnmarshal)
			if resp != nil {
				t.Errorf("response with an error: %v", resp)
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("code: got %v, want %v (err %v)", got, tt.wantCode, err)
			}
			if !strings.Contains(status.Convert(err).Message(), tt.err.Error()) {
				t.Errorf("status message %q lost the error %q", status.Convert(err).Message(), tt.err)
			}
			if tt.wantIs != nil && !errors.Is(errgrpc.ToNative(err), tt.wantIs) {
				t.Errorf("ToNative(%v) is not %v", err, tt.wantIs)
			}
		})
	}
}

func TestMethodPassesRequestAndResponse(t *testing.T) {
	want := &taskapi.StateResponse{ID: "c1", Pid: 42}
	var gotReq *taskapi.StateRequest
	h := func(_ context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
		gotReq = r
		return want, nil
	}
	resp, err := method(h)(context.Background(), unmarshalFrom(&taskapi.StateRequest{ID: "c1", ExecID: "e1"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp != want {
		t.Errorf("response: got %v, want %v", resp, want)
	}
	if gotReq.ID != "c1" || gotReq.ExecID != "e1" {
		t.Errorf("request: got %v", gotReq)
	}

	unmarshalErr := errors.New("bad payload")
	called := false
	h2 := func(context.Context, *taskapi.StateRequest) (*taskapi.StateResponse, error) {
		called = true
		return nil, nil
	}
	if _, err := method(h2)(context.Background(), func(any) error { return unmarshalErr }); !errors.Is(err, unmarshalErr) {
		t.Errorf("unmarshal failure: got %v, want %v", err, unmarshalErr)
	}
	if called {
		t.Error("handler called with an undecodable request")
	}
}

// taskMethodNames returns the method names of a generated Task service.
func taskMethodNames(fd protoreflect.FileDescriptor) []string {
	svc := fd.Services().ByName("Task")
	var names []string
	for i := 0; i < svc.Methods().Len(); i++ {
		names = append(names, string(svc.Methods().Get(i).Name()))
	}
	slices.Sort(names)
	return names
}

func TestTaskMethodsMatchAPI(t *testing.T) {
	task, _ := newTestTask(t)
	var got []string
	for name := range task.methods() {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{"Checkpoint", "CloseIO", "Connect", "Create", "Delete", "Exec", "Kill", "Pause", "Pids",
		"ResizePty", "Resume", "Shutdown", "Start", "State", "Stats", "Update", "Wait"}
	if !slices.Equal(got, want) {
		t.Errorf("Task methods:\n got %q\nwant %q", got, want)
	}
	if v2 := taskMethodNames(taskapi.File_runtime_task_v2_shim_proto); !slices.Equal(got, v2) {
		t.Errorf("Task methods differ from task v2 API:\n got %q\n  v2 %q", got, v2)
	}
	if v3 := taskMethodNames(taskv3.File_runtime_task_v3_shim_proto); !slices.Equal(got, v3) {
		t.Errorf("Task methods differ from task v3 API:\n got %q\n  v3 %q", got, v3)
	}
}

// TestTaskV3IsV2OnTheWire backs the claim that serving v3 with the v2
// message types is sound: every v3 method takes and returns messages
// with the same fields (numbers, names, kinds) as its v2 twin.
func TestTaskV3IsV2OnTheWire(t *testing.T) {
	v2 := taskapi.File_runtime_task_v2_shim_proto.Services().ByName("Task")
	v3 := taskv3.File_runtime_task_v3_shim_proto.Services().ByName("Task")
	for i := 0; i < v3.Methods().Len(); i++ {
		m3 := v3.Methods().Get(i)
		m2 := v2.Methods().ByName(m3.Name())
		if m2 == nil {
			t.Errorf("v3 method %s has no v2 twin", m3.Name())
			continue
		}
		sameFields(t, string(m3.Name())+" input", m2.Input(), m3.Input())
		sameFields(t, string(m3.Name())+" output", m2.Output(), m3.Output())
	}
}

func sameFields(t *testing.T, what string, a, b protoreflect.MessageDescriptor) {
	t.Helper()
	if a.Fields().Len() != b.Fields().Len() {
		t.Errorf("%s: %d fields in v2, %d in v3", what, a.Fields().Len(), b.Fields().Len())
		return
	}
	for i := 0; i < a.Fields().Len(); i++ {
		fa, fb := a.Fields().Get(i), b.Fields().Get(i)
		if fa.Number() != fb.Number() || fa.Name() != fb.Name() || fa.Kind() != fb.Kind() || fa.Cardinality() != fb.Cardinality() {
			t.Errorf("%s: field %d differs: v2 %s %d %v, v3 %s %d %v", what, i, fa.Name(), fa.Number(), fa.Kind(), fb.Name(), fb.Number(), fb.Kind())
			continue
		}
		if fa.Kind() == protoreflect.MessageKind && fa.Message().FullName() != fb.Message().FullName() {
			sameFields(t, what+"."+string(fa.Name()), fa.Message(), fb.Message())
		}
	}
}

// resourcesType is the type URL containerd gives specs.LinuxResources.
const resourcesType = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

func TestTaskNotImplemented(t *testing.T) {
	task, _ := newTestTask(t)
	methods := task.methods()
	for _, name := range []string{"Checkpoint"} {
		t.Run(name, func(t *testing.T) {
			_, err := methods[name](context.Background(), noUnmarshal)
			if got := status.Code(err); got != codes.Unimplemented {
				t.Errorf("%s: got %v (%v), want Unimplemented", name, got, err)
			}
		})
	}
}

// TestTaskRequestErrors: requests the shim refuses before the Manager,
// and unknown ids, each with their class.
func TestTaskRequestErrors(t *testing.T) {
	task, _ := newTestTask(t)
	methods := task.methods()
	bundle := newBundle(t)
	tests := []struct {
		name   string
		method string
		req    proto.Message
		want   codes.Code
	}{
		{"State unknown", "State", &taskapi.StateRequest{ID: "nosuch"}, codes.NotFound},
		{"Start unknown", "Start", &taskapi.StartRequest{ID: "nosuch"}, codes.NotFound},
		{"Delete unknown", "Delete", &taskapi.DeleteRequest{ID: "nosuch"}, codes.NotFound},
		{"Pids unknown", "Pids", &taskapi.PidsRequest{ID: "nosuch"}, codes.NotFound},
		{"Kill unknown", "Kill", &taskapi.KillRequest{ID: "nosuch", Signal: 9}, codes.NotFound},
		{"Wait unknown", "Wait", &taskapi.WaitRequest{ID: "nosuch"}, codes.NotFound},
		{"Connect unknown", "Connect", &taskapi.ConnectRequest{ID: "nosuch"}, codes.NotFound},
		{"CloseIO unknown", "CloseIO", &taskapi.CloseIORequest{ID: "nosuch", Stdin: true}, codes.NotFound},
		{"Kill signal 0", "Kill", &taskapi.KillRequest{ID: "nosuch", Signal: 0}, codes.InvalidArgument},
		{"Kill signal 65", "Kill", &taskapi.KillRequest{ID: "nosuch", Signal: 65}, codes.InvalidArgument},
		{"Kill signal 64", "Kill", &taskapi.KillRequest{ID: "nosuch", Signal: 64}, codes.NotFound},
		{"Start exec", "Start", &taskapi.StartRequest{ID: "nosuch", ExecID: "e1"}, codes.NotFound},
		{"Delete exec", "Delete", &taskapi.DeleteRequest{ID: "nosuch", ExecID: "e1"}, codes.NotFound},
		{"State exec", "State", &taskapi.StateRequest{ID: "nosuch", ExecID: "e1"}, codes.NotFound},
		{"Kill exec", "Kill", &taskapi.KillRequest{ID: "nosuch", ExecID: "e1", Signal: 9}, codes.NotFound},
		{"Wait exec", "Wait", &taskapi.WaitRequest{ID: "nosuch", ExecID: "e1"}, codes.NotFound},
		{"CloseIO exec", "CloseIO", &taskapi.CloseIORequest{ID: "nosuch", ExecID: "e1", Stdin: true}, codes.NotFound},
		{"Exec no spec", "Exec", &taskapi.ExecProcessRequest{ID: "nosuch", ExecID: "e1"}, codes.InvalidArgument},
		{"Exec bad spec", "Exec", &taskapi.ExecProcessRequest{ID: "nosuch", ExecID: "e1", Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte("{")}}, codes.InvalidArgument},
		{"Exec unknown container", "Exec", &taskapi.ExecProcessRequest{ID: "nosuch", ExecID: "e1", Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(`{"args":["true"],"cwd":"/"}`)}}, codes.NotFound},
		{"Exec bad id", "Exec", &taskapi.ExecProcessRequest{ID: "nosuch", ExecID: "../e", Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(`{"args":["true"],"cwd":"/"}`)}}, codes.InvalidArgument},
		{"Create from checkpoint", "Create", &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Checkpoint: "/cp"}, codes.Unimplemented},
		{"Create bad options", "Create", &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Options: &anypb.Any{TypeUrl: "foo.Bar", Value: []byte{1}}}, codes.InvalidArgument},
		{"Create bad id", "Create", &taskapi.CreateTaskRequest{ID: "../x", Bundle: bundle}, codes.InvalidArgument},
		{"Create missing bundle", "Create", &taskapi.CreateTaskRequest{ID: "c1", Bundle: "/nonexistent"}, codes.NotFound},
		{"Create terminal without stdout", "Create", &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Terminal: true}, codes.InvalidArgument},
		{"ResizePty zero", "ResizePty", &taskapi.ResizePtyRequest{ID: "c1", Width: 0, Height: 24}, codes.InvalidArgument},
		{"ResizePty unknown", "ResizePty", &taskapi.ResizePtyRequest{ID: "nosuch", Width: 80, Height: 24}, codes.NotFound},
		{"Pause unknown", "Pause", &taskapi.PauseRequest{ID: "nosuch"}, codes.NotFound},
		{"Resume unknown", "Resume", &taskapi.ResumeRequest{ID: "nosuch"}, codes.NotFound},
		{"Stats unknown", "Stats", &taskapi.StatsRequest{ID: "nosuch"}, codes.NotFound},
		{"Update no resources", "Update", &taskapi.UpdateTaskRequest{ID: "nosuch"}, codes.InvalidArgument},
		{"Update bad type", "Update", &taskapi.UpdateTaskRequest{ID: "nosuch", Resources: &anypb.Any{TypeUrl: "foo.Bar", Value: []byte("{}")}}, codes.InvalidArgument},
		{"Update bad json", "Update", &taskapi.UpdateTaskRequest{ID: "nosuch", Resources: &anypb.Any{TypeUrl: resourcesType, Value: []byte("{")}}, codes.InvalidArgument},
		{"Update unknown", "Update", &taskapi.UpdateTaskRequest{ID: "nosuch", Resources: &anypb.Any{TypeUrl: resourcesType, Value: []byte(`{"cpu":{"shares":512}}`)}}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := methods[tt.method](context.Background(), unmarshalFrom(tt.req))
			if got := status.Code(err); got != tt.want {
				t.Errorf("%s: got %v (%v), want %v", tt.method, got, err, tt.want)
			}
		})
	}
}

func TestTaskStatus(t *testing.T) {
	tests := []struct {
		in   process.State
		want task.Status
	}{
		{process.Created, task.Status_CREATED},
		{process.Starting, task.Status_CREATED},
		{process.Running, task.Status_RUNNING},
		{process.Pausing, task.Status_PAUSING},
		{process.Paused, task.Status_PAUSED},
		{process.Resuming, task.Status_PAUSED},
		{process.Stopped, task.Status_STOPPED},
		{process.Deleting, task.Status_STOPPED},
		{process.Deleted, task.Status_STOPPED},
		{process.State(0), task.Status_UNKNOWN},
	}
	for _, tt := range tests {
		if got := taskStatus(tt.in); got != tt.want {
			t.Errorf("taskStatus(%s): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestTaskLifecycle drives one container through the Task methods with a
// real child as its process and the real reaper bringing its exit.
func TestTaskLifecycle(t *testing.T) {
	ctx := context.Background()
	tk, eng := newTestTask(t)
	bundle := newBundle(t)
	cr, err := tk.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	pid := cr.Pid
	st, err := tk.State(ctx, &taskapi.StateRequest{ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != "c1" || st.Bundle != bundle || st.Pid != pid || st.Status != task.Status_CREATED || st.ExitedAt != nil {
		t.Errorf("State after Create: got %v", st)
	}
	sr, err := tk.Start(ctx, &taskapi.StartRequest{ID: "c1"})
	if err != nil || sr.Pid != pid {
		t.Fatalf("Start: got (%v, %v), want pid %d", sr, err, pid)
	}
	if st, _ := tk.State(ctx, &taskapi.StateRequest{ID: "c1"}); st.Status != task.Status_RUNNING {
		t.Errorf("State after Start: got %v, want RUNNING", st.Status)
	}
	cn, err := tk.Connect(ctx, &taskapi.ConnectRequest{ID: "c1"})
	if err != nil || cn.TaskPid != pid || cn.ShimPid == 0 {
		t.Errorf("Connect: got (%v, %v)", cn, err)
	}
	pr, err := tk.Pids(ctx, &taskapi.PidsRequest{ID: "c1"})
	if err != nil || len(pr.Processes) != 1 || pr.Processes[0].Pid != pid {
		t.Errorf("Pids: got (%v, %v), want [%d]", pr, err, pid)
	}
	if _, err := tk.CloseIO(ctx, &taskapi.CloseIORequest{ID: "c1", Stdin: true}); err != nil {
		t.Errorf("CloseIO: %v", err)
	}
	if _, err := tk.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9}); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	wr, err := tk.Wait(wctx, &taskapi.WaitRequest{ID: "c1"})
	if err != nil || wr.ExitStatus != 137 || wr.ExitedAt == nil {
		t.Fatalf("Wait: got (%v, %v), want exit 137", wr, err)
	}
	st, _ = tk.State(ctx, &taskapi.StateRequest{ID: "c1"})
	if st.Status != task.Status_STOPPED || st.ExitStatus != 137 || !st.ExitedAt.AsTime().Equal(wr.ExitedAt.AsTime()) {
		t.Errorf("State after exit: got %v", st)
	}
	dr, err := tk.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
	if err != nil || dr.Pid != pid || dr.ExitStatus != 137 {
		t.Fatalf("Delete: got (%v, %v)", dr, err)
	}
	if _, err := tk.State(ctx, &taskapi.StateRequest{ID: "c1"}); !errdefs.IsNotFound(err) {
		t.Errorf("State after Delete: got %v, want NotFound", err)
	}
	if _, err := tk.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	want := []string{"create c1", "start c1", "ps c1", "delete c1"}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	if !slices.Equal(eng.calls, want) {
		t.Errorf("runtime calls: got %q, want %q", eng.calls, want)
	}
}
