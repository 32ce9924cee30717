package service

import (
	"context"
	"fmt"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/ociruntime"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/process"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/rootfs"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/stdio"
)

// Task serves containerd's task API for every container of the pod.
type Task struct {
	m *sandbox.Manager
	// defaults are the runtime options the shim was started with, used
	// when a create request carries none.
	defaults ociruntime.Options
}

// NewTask returns the task service over m.
func NewTask(m *sandbox.Manager, defaults ociruntime.Options) *Task {
	return &Task{m: m, defaults: defaults}
}

func (t *Task) methods() map[string]ttrpc.Method {
	return map[string]ttrpc.Method{
		"State":      method(t.State),
		"Create":     method(t.Create),
		"Start":      method(t.Start),
		"Delete":     method(t.Delete),
		"Pids":       method(t.Pids),
		"Pause":      method(t.Pause),
		"Resume":     method(t.Resume),
		"Checkpoint": method(notImplemented[taskapi.CheckpointTaskRequest]("checkpoint")),
		"Kill":       method(t.Kill),
		"Exec":       method(t.Exec),
		"ResizePty":  method(t.ResizePty),
		"CloseIO":    method(t.CloseIO),
		"Update":     method(t.Update),
		"Wait":       method(t.Wait),
		"Stats":      method(t.Stats),
		"Connect":    method(t.Connect),
		"Shutdown":   method(t.Shutdown),
	}
}

// notImplemented answers an RPC whose issue has not landed yet.
func notImplemented[Req any](op string) func(context.Context, *Req) (*emptypb.Empty, error) {
	return func(context.Context, *Req) (*emptypb.Empty, error) {
		return nil, fmt.Errorf("%s: %w", op, errdefs.ErrNotImplemented)
	}
}

func (t *Task) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (*taskapi.CreateTaskResponse, error) {
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("create %q from checkpoint: %w", r.ID, errdefs.ErrNotImplemented)
	}
	opts, err := runtimeOptions(r.Options, t.defaults)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", r.ID, err)
	}
	mounts := make([]rootfs.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, rootfs.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	pid, err := t.m.Create(ctx, sandbox.CreateRequest{
		ID:      r.ID,
		Bundle:  r.Bundle,
		Rootfs:  mounts,
		Stdio:   stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Options: opts,
	})
	if err != nil {
		return nil, err
	}
	return &taskapi.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// Pause freezes a container.
func (t *Task) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	if err := t.m.Pause(ctx, r.ID); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Resume thaws a paused container.
func (t *Task) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	if err := t.m.Resume(ctx, r.ID); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Update applies new resources to a container (CRI's
// UpdateContainerResources). Annotations are accepted and, as the runc
// shim does, not acted on.
func (t *Task) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	res, err := linuxResources(r.Resources)
	if err != nil {
		return nil, fmt.Errorf("update %q: %w", r.ID, err)
	}
	if err := t.m.Update(ctx, r.ID, res); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *Task) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	var pid int
	var err error
	if r.ExecID != "" {
		pid, err = t.m.StartExec(ctx, r.ID, r.ExecID)
	} else {
		pid, err = t.m.Start(ctx, r.ID)
	}
	if err != nil {
		return nil, err
	}
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

func (t *Task) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	var st process.Status
	var err error
	if r.ExecID != "" {
		st, err = t.m.DeleteExec(ctx, r.ID, r.ExecID)
	} else {
		st, err = t.m.Delete(ctx, r.ID)
	}
	if err != nil {
		return nil, err
	}
	return &taskapi.DeleteResponse{
		Pid:        uint32(st.Pid),
		ExitStatus: uint32(st.ExitStatus),
		ExitedAt:   timestamppb.New(st.ExitedAt),
	}, nil
}

func (t *Task) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	var st process.Status
	var err error
	if r.ExecID != "" {
		st, err = t.m.StateExec(ctx, r.ID, r.ExecID)
	} else {
		st, err = t.m.State(ctx, r.ID)
	}
	if err != nil {
		return nil, err
	}
	resp := &taskapi.StateResponse{
		ID:         st.ID,
		Bundle:     st.Bundle,
		Pid:        uint32(st.Pid),
		Status:     taskStatus(st.State),
		Stdin:      st.Stdio.Stdin,
		Stdout:     st.Stdio.Stdout,
		Stderr:     st.Stdio.Stderr,
		Terminal:   st.Stdio.Terminal,
		ExitStatus: uint32(st.ExitStatus),
	}
	if !st.ExitedAt.IsZero() {
		resp.ExitedAt = timestamppb.New(st.ExitedAt)
	}
	return resp, nil
}

// taskStatus maps the process state machine onto containerd's status.
// The in-between states report where the process still is.
func taskStatus(s process.State) task.Status {
	switch s {
	case process.Created, process.Starting:
		return task.Status_CREATED
	case process.Running:
		return task.Status_RUNNING
	case process.Pausing:
		return task.Status_PAUSING
	case process.Paused, process.Resuming:
		return task.Status_PAUSED
	case process.Stopped, process.Deleting, process.Deleted:
		return task.Status_STOPPED
	}
	return task.Status_UNKNOWN
}

func (t *Task) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	spec, err := processSpec(r.Spec)
	if err != nil {
		return nil, fmt.Errorf("exec %q in %q: %w", r.ExecID, r.ID, err)
	}
	// The request's flag decides, as in the runc shim: containerd's Go
	// client sets only it, and runc refuses a console socket for a spec
	// without a terminal (and a terminal without a console socket).
	spec.Terminal = r.Terminal
	if err := t.m.Exec(ctx, sandbox.ExecRequest{
		ContainerID: r.ID,
		ExecID:      r.ExecID,
		Spec:        spec,
		Stdio:       stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	}); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *Task) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	if r.Width == 0 || r.Height == 0 || r.Width > 0xffff || r.Height > 0xffff {
		return nil, fmt.Errorf("resize pty of %q: %dx%d: %w", r.ID, r.Width, r.Height, errdefs.ErrInvalidArgument)
	}
	if err := t.m.ResizePty(ctx, r.ID, r.ExecID, r.Width, r.Height); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *Task) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	if r.Signal == 0 || r.Signal > 64 {
		return nil, fmt.Errorf("kill %q: signal %d: %w", r.ID, r.Signal, errdefs.ErrInvalidArgument)
	}
	var err error
	if r.ExecID != "" {
		err = t.m.KillExec(ctx, r.ID, r.ExecID, int(r.Signal))
	} else {
		err = t.m.Kill(ctx, r.ID, int(r.Signal), r.All)
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *Task) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	var st process.Status
	var err error
	if r.ExecID != "" {
		st, err = t.m.WaitExec(ctx, r.ID, r.ExecID)
	} else {
		st, err = t.m.Wait(ctx, r.ID)
	}
	if err != nil {
		return nil, err
	}
	return &taskapi.WaitResponse{ExitStatus: uint32(st.ExitStatus), ExitedAt: timestamppb.New(st.ExitedAt)}, nil
}

func (t *Task) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	pids, err := t.m.Pids(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	execs := t.m.ExecPids(r.ID)
	resp := &taskapi.PidsResponse{Processes: make([]*task.ProcessInfo, 0, len(pids))}
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if execID, ok := execs[pid]; ok {
			// As the runc shim does: the exec id, in runc's ProcessDetails.
			details, err := anyOf(&options.ProcessDetails{ExecID: execID})
			if err != nil {
				return nil, err
			}
			info.Info = details
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// Stats returns a container's cgroup metrics as containerd-shim-runc-v2
// does: an Any whose type URL is the message's full name
// (io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics),
// which is how containerd's typeurl names and decodes them.
func (t *Task) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	m, err := t.m.Stats(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	stats, err := anyOf(m)
	if err != nil {
		return nil, fmt.Errorf("stats %q: %w", r.ID, err)
	}
	return &taskapi.StatsResponse{Stats: stats}, nil
}

func (t *Task) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	if !r.Stdin {
		// Nothing to close, but an unknown id is still NotFound.
		if _, err := t.State(ctx, &taskapi.StateRequest{ID: r.ID, ExecID: r.ExecID}); err != nil {
			return nil, err
		}
		return &emptypb.Empty{}, nil
	}
	var err error
	if r.ExecID != "" {
		err = t.m.CloseIOExec(ctx, r.ID, r.ExecID)
	} else {
		err = t.m.CloseIO(ctx, r.ID)
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (t *Task) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	shimPid, taskPid, err := t.m.Connect(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	return &taskapi.ConnectResponse{ShimPid: uint32(shimPid), TaskPid: uint32(taskPid)}, nil
}

func (t *Task) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	t.m.Shutdown(ctx)
	return &emptypb.Empty{}, nil
}
