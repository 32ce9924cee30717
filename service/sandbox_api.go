package service

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// sandboxService is the Sandbox API containerd's CRI plugin calls when a
// runtime has `sandboxer = "shim"` (plugins/sandbox/controller.go
// upstream). Messages are read and written as sandbox_wire.go says.
const sandboxService = "containerd.runtime.sandbox.v1.Sandbox"

// The pod's state as CRI reads it: it compares SandboxStatus's state with
// the names of its own sandbox states.
const (
	stateReady    = "SANDBOX_READY"
	stateNotReady = "SANDBOX_NOTREADY"
)

// updatedResourcesKey is the sandbox extension CRI's
// UpdatePodSandboxResources stores the pod's resources under
// (internal/cri/server/podsandbox UpdatedResourcesKey), as JSON of its
// UpdatedResources.
const updatedResourcesKey = "updated-resources"

// Sandbox serves the Sandbox API over the Manager's pod.
type Sandbox struct {
	m *sandbox.Manager
}

// RegisterSandbox serves the Sandbox API over m on server.
func RegisterSandbox(server *ttrpc.Server, m *sandbox.Manager) {
	s := &Sandbox{m: m}
	server.RegisterService(sandboxService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
		"CreateSandbox":   method(s.CreateSandbox),
		"StartSandbox":    method(s.StartSandbox),
		"Platform":        method(s.Platform),
		"StopSandbox":     method(s.StopSandbox),
		"WaitSandbox":     method(s.WaitSandbox),
		"SandboxStatus":   method(s.SandboxStatus),
		"PingSandbox":     method(s.PingSandbox),
		"ShutdownSandbox": method(s.ShutdownSandbox),
		"SandboxMetrics":  method(s.SandboxMetrics),
		"UpdateSandbox":   method(s.UpdateSandbox),
	}})
}

// sandboxID decodes a request and its sandbox_id (field 1 of every
// request).
func sandboxID(r *emptypb.Empty, op string) (wireMsg, string, error) {
	w, err := decodeWire(r)
	if err != nil {
		return w, "", fmt.Errorf("%s: %w", op, err)
	}
	id := w.str(1)
	if id == "" {
		return w, "", fmt.Errorf("%s: sandbox id is empty: %w", op, errdefs.ErrInvalidArgument)
	}
	return w, id, nil
}

// CreateSandbox: CreateSandboxRequest sandbox_id 1, bundle_path 2,
// rootfs 3 (ignored: the pod has no image), options 4 (Any), netns_path
// 5; the response is empty.
func (s *Sandbox) CreateSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	w, id, err := sandboxID(r, "create sandbox")
	if err != nil {
		return nil, err
	}
	req := sandbox.CreateSandboxRequest{ID: id, Bundle: w.str(2), NetNS: w.str(5)}
	if o := w.str(4); o != "" {
		a, err := decodeAny(o)
		if err != nil {
			return nil, fmt.Errorf("create sandbox %q: options: %w", id, err)
		}
		req.Config = a.GetValue()
	}
	if err := s.m.CreateSandbox(ctx, req); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// StartSandbox: StartSandboxResponse pid 1, created_at 2, spec 3 (an Any
// holding the pod as an OCI spec, JSON under the type URL containerd's
// client registers for specs.Spec).
func (s *Sandbox) StartSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "start sandbox")
	if err != nil {
		return nil, err
	}
	st, err := s.m.StartSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	var out wireOut
	out.uint(1, uint64(st.Pid))
	if err := out.time(2, st.CreatedAt); err != nil {
		return nil, err
	}
	if st.Spec != nil {
		data, err := json.Marshal(st.Spec)
		if err != nil {
			return nil, err
		}
		if err := out.msg(3, &anypb.Any{TypeUrl: specTypeURL, Value: data}); err != nil {
			return nil, err
		}
	}
	return out.empty(), nil
}

// specTypeURL is how containerd names an OCI spec in an Any (client.go's
// typeurl.Register of specs.Spec: prefix types.containerd.io, major 1).
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// Platform: PlatformResponse platform 1, a containerd.types.Platform (os
// 1, architecture 2). Called before every container: no work.
func (s *Sandbox) Platform(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "platform")
	if err != nil {
		return nil, err
	}
	if err := s.m.PingSandbox(ctx, id); err != nil {
		return nil, err
	}
	var p wireOut
	p.str(1, runtime.GOOS)
	p.str(2, runtime.GOARCH)
	var out wireOut
	out.bytes(1, p.b)
	return out.empty(), nil
}

// StopSandbox: StopSandboxRequest timeout_secs 2.
func (s *Sandbox) StopSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	w, id, err := sandboxID(r, "stop sandbox")
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(w.varint[2]) * time.Second
	if err := s.m.StopSandbox(ctx, id, timeout); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// WaitSandbox: WaitSandboxResponse exit_status 1, exited_at 2.
func (s *Sandbox) WaitSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "wait sandbox")
	if err != nil {
		return nil, err
	}
	st, err := s.m.WaitSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	var out wireOut
	out.uint(1, uint64(st.ExitStatus))
	if err := out.time(2, st.ExitedAt); err != nil {
		return nil, err
	}
	return out.empty(), nil
}

// SandboxStatus: SandboxStatusRequest verbose 2; SandboxStatusResponse
// sandbox_id 1, pid 2, state 3, info 4 (map), created_at 5, exited_at 6.
func (s *Sandbox) SandboxStatus(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	w, id, err := sandboxID(r, "sandbox status")
	if err != nil {
		return nil, err
	}
	st, err := s.m.SandboxStatus(ctx, id)
	if err != nil {
		return nil, err
	}
	state := stateNotReady
	if st.State == sandbox.PodReady {
		state = stateReady
	}
	var out wireOut
	out.str(1, id)
	out.uint(2, uint64(st.Pid))
	out.str(3, state)
	if w.varint[2] != 0 {
		info, err := statusInfo(st)
		if err != nil {
			return nil, err
		}
		out.strMap(4, map[string]string{"info": info})
	}
	if err := out.time(5, st.CreatedAt); err != nil {
		return nil, err
	}
	if err := out.time(6, st.ExitedAt); err != nil {
		return nil, err
	}
	return out.empty(), nil
}

// statusInfo is the verbose info, under the key "info" as CRI's pause
// path puts it: CRI decodes it into its SandboxInfo (pid and
// processStatus are its fields; the rest it passes through to crictl
// inspectp untouched only as far as SandboxInfo has them, so the
// namespaces, cgroup and containers are for readers of the shim's API).
func statusInfo(st sandbox.PodStatus) (string, error) {
	ns := map[string]string{}
	if st.Pid > 0 && st.State == sandbox.PodReady {
		for _, n := range []string{"net", "ipc", "uts", "pid"} {
			ns[n] = fmt.Sprintf("/proc/%d/ns/%s", st.Pid, n)
		}
	}
	status := "created"
	switch st.State {
	case sandbox.PodReady:
		status = "running"
	case sandbox.PodStopped, sandbox.PodShutdown:
		status = "stopped"
	}
	data, err := json.Marshal(map[string]any{
		"pid":           st.Pid,
		"processStatus": status,
		"namespaces":    ns,
		"netns":         st.NetNS,
		"cgroup":        st.Cgroup,
		"containers":    st.Containers,
		"podConfig":     st.Config,
	})
	return string(data), err
}

// PingSandbox answers while the shim holds the pod.
func (s *Sandbox) PingSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "ping sandbox")
	if err != nil {
		return nil, err
	}
	if err := s.m.PingSandbox(ctx, id); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// ShutdownSandbox releases the pod; the shim then exits by itself.
func (s *Sandbox) ShutdownSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "shutdown sandbox")
	if err != nil {
		return nil, err
	}
	if err := s.m.ShutdownSandbox(ctx, id); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// SandboxMetrics: SandboxMetricsResponse metrics 1, a containerd.types.
// Metric (timestamp 1, id 2, data 3 as an Any named as a task's Stats).
func (s *Sandbox) SandboxMetrics(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	_, id, err := sandboxID(r, "sandbox metrics")
	if err != nil {
		return nil, err
	}
	st, err := s.m.SandboxMetrics(ctx, id)
	if err != nil {
		return nil, err
	}
	data, err := anyOf(st)
	if err != nil {
		return nil, err
	}
	var metric wireOut
	if err := metric.msg(1, timestamppb.Now()); err != nil {
		return nil, err
	}
	metric.str(2, id)
	if err := metric.msg(3, data); err != nil {
		return nil, err
	}
	var out wireOut
	out.bytes(1, metric.b)
	return out.empty(), nil
}

// UpdateSandbox: UpdateSandboxRequest sandbox 4, a containerd.types.
// Sandbox whose extensions (field 7, map<string, Any>) hold CRI's
// updated-resources; other updates are accepted and not acted on.
func (s *Sandbox) UpdateSandbox(ctx context.Context, r *emptypb.Empty) (*emptypb.Empty, error) {
	w, id, err := sandboxID(r, "update sandbox")
	if err != nil {
		return nil, err
	}
	res, ok, err := updatedResources(w.str(4))
	if err != nil {
		return nil, fmt.Errorf("update sandbox %q: %w", id, err)
	}
	if !ok {
		if err := s.m.PingSandbox(ctx, id); err != nil {
			return nil, err
		}
		return &emptypb.Empty{}, nil
	}
	if err := s.m.UpdateSandbox(ctx, id, res); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// criResources are the fields of CRI's LinuxContainerResources the pod
// cgroup takes, by their JSON names (UpdatedResources is stored through
// typeurl as JSON).
type criResources struct {
	CPUPeriod   int64 `json:"cpu_period"`
	CPUQuota    int64 `json:"cpu_quota"`
	CPUShares   int64 `json:"cpu_shares"`
	MemoryLimit int64 `json:"memory_limit_in_bytes"`
}

func updatedResources(sb string) (sandbox.PodResources, bool, error) {
	if sb == "" {
		return sandbox.PodResources{}, false, nil
	}
	w, err := parseWire([]byte(sb))
	if err != nil {
		return sandbox.PodResources{}, false, err
	}
	for _, entry := range w.strs[7] {
		e, err := parseWire([]byte(entry))
		if err != nil {
			return sandbox.PodResources{}, false, err
		}
		if e.str(1) != updatedResourcesKey {
			continue
		}
		a, err := decodeAny(e.str(2))
		if err != nil {
			return sandbox.PodResources{}, false, err
		}
		var u struct{ Resources *criResources }
		if err := json.Unmarshal(a.GetValue(), &u); err != nil {
			return sandbox.PodResources{}, false, fmt.Errorf("decode %s: %w: %w", updatedResourcesKey, err, errdefs.ErrInvalidArgument)
		}
		if u.Resources == nil {
			return sandbox.PodResources{}, false, nil
		}
		return sandbox.PodResources(*u.Resources), true, nil
	}
	return sandbox.PodResources{}, false, nil
}
