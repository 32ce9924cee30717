package service

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/api/sandboxpb"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// sandboxService is the Sandbox API containerd's CRI plugin calls when a
// runtime has `sandboxer = "shim"` (plugins/sandbox/controller.go
// upstream). Its messages are sandboxpb's, trimmed copies of containerd's
// (whose generated package links gRPC; package internal/api says more).
// The copies' proto package is not this name: the name is written here,
// as containerd calls it.
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
	server.RegisterService(sandboxService, &ttrpc.ServiceDesc{Methods: s.methods()})
}

// methods are the Sandbox API's methods by their names in the service
// containerd calls: what protoc-gen-go-ttrpc would generate from the
// service declaration the copies leave out (see sandboxService).
func (s *Sandbox) methods() map[string]ttrpc.Method {
	methods := map[string]ttrpc.Method{
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
	}
	for name, m := range methods {
		methods[name] = invalidOnDecode(m)
	}
	return methods
}

// sandboxID returns a request's sandbox_id, which every request carries.
func sandboxID(r interface{ GetSandboxId() string }, op string) (string, error) {
	id := r.GetSandboxId()
	if id == "" {
		return "", fmt.Errorf("%s: sandbox id is empty: %w", op, errdefs.ErrInvalidArgument)
	}
	return id, nil
}

// timestamp converts t for a response; a zero time is left out, as CRI
// reads a missing exited_at as "has not exited".
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// CreateSandbox: options is an Any holding CRI's PodSandboxConfig, which
// package sandbox decodes. rootfs is not read: the pod has no image.
func (s *Sandbox) CreateSandbox(ctx context.Context, r *sandboxpb.CreateSandboxRequest) (*sandboxpb.CreateSandboxResponse, error) {
	id, err := sandboxID(r, "create sandbox")
	if err != nil {
		return nil, err
	}
	req := sandbox.CreateSandboxRequest{
		ID:     id,
		Bundle: r.GetBundlePath(),
		NetNS:  r.GetNetnsPath(),
		Config: r.GetOptions().GetValue(),
	}
	if err := s.m.CreateSandbox(ctx, req); err != nil {
		return nil, err
	}
	return &sandboxpb.CreateSandboxResponse{}, nil
}

// StartSandbox: spec is an Any holding the pod as an OCI spec, JSON under
// the type URL containerd's client registers for specs.Spec.
func (s *Sandbox) StartSandbox(ctx context.Context, r *sandboxpb.StartSandboxRequest) (*sandboxpb.StartSandboxResponse, error) {
	id, err := sandboxID(r, "start sandbox")
	if err != nil {
		return nil, err
	}
	st, err := s.m.StartSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	resp := &sandboxpb.StartSandboxResponse{Pid: uint32(st.Pid), CreatedAt: timestamp(st.CreatedAt)}
	if st.Spec != nil {
		data, err := json.Marshal(podSpecJSON(st.Spec))
		if err != nil {
			return nil, err
		}
		resp.Spec = &anypb.Any{TypeUrl: specTypeURL, Value: data}
	}
	return resp, nil
}

// podSpec is the part of an OCI spec the pod's spec sets
// (sandbox.PodStatus.Spec), with specs-go's JSON names. encoding/json
// builds and keeps an encoder for every type a marshalled type reaches:
// for specs.Spec hundreds, measured 0.25 MiB of the pod shim's heap for
// its lifetime. TestPodSpecJSON checks the copy against specs.Spec.
type podSpec struct {
	Version  string    `json:"ociVersion"`
	Hostname string    `json:"hostname,omitempty"`
	Linux    *podLinux `json:"linux,omitempty"`
}

type podLinux struct {
	Sysctl      map[string]string      `json:"sysctl,omitempty"`
	CgroupsPath string                 `json:"cgroupsPath,omitempty"`
	Namespaces  []specs.LinuxNamespace `json:"namespaces,omitempty"`
}

// podSpecJSON is s as a podSpec.
func podSpecJSON(s *specs.Spec) podSpec {
	ps := podSpec{Version: s.Version, Hostname: s.Hostname}
	if l := s.Linux; l != nil {
		ps.Linux = &podLinux{Sysctl: l.Sysctl, CgroupsPath: l.CgroupsPath, Namespaces: l.Namespaces}
	}
	return ps
}

// specTypeURL is how containerd names an OCI spec in an Any (client.go's
// typeurl.Register of specs.Spec: prefix types.containerd.io, major 1).
const specTypeURL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"

// Platform is called before every container: no work.
func (s *Sandbox) Platform(ctx context.Context, r *sandboxpb.PlatformRequest) (*sandboxpb.PlatformResponse, error) {
	id, err := sandboxID(r, "platform")
	if err != nil {
		return nil, err
	}
	if err := s.m.PingSandbox(ctx, id); err != nil {
		return nil, err
	}
	return &sandboxpb.PlatformResponse{Platform: &types.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}}, nil
}

// StopSandbox stops the pod, giving it timeout_secs.
func (s *Sandbox) StopSandbox(ctx context.Context, r *sandboxpb.StopSandboxRequest) (*sandboxpb.StopSandboxResponse, error) {
	id, err := sandboxID(r, "stop sandbox")
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(r.GetTimeoutSecs()) * time.Second
	if err := s.m.StopSandbox(ctx, id, timeout); err != nil {
		return nil, err
	}
	return &sandboxpb.StopSandboxResponse{}, nil
}

// WaitSandbox returns when the pod has exited.
func (s *Sandbox) WaitSandbox(ctx context.Context, r *sandboxpb.WaitSandboxRequest) (*sandboxpb.WaitSandboxResponse, error) {
	id, err := sandboxID(r, "wait sandbox")
	if err != nil {
		return nil, err
	}
	st, err := s.m.WaitSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	return &sandboxpb.WaitSandboxResponse{ExitStatus: uint32(st.ExitStatus), ExitedAt: timestamp(st.ExitedAt)}, nil
}

// SandboxStatus: info is filled only when verbose is asked for.
func (s *Sandbox) SandboxStatus(ctx context.Context, r *sandboxpb.SandboxStatusRequest) (*sandboxpb.SandboxStatusResponse, error) {
	id, err := sandboxID(r, "sandbox status")
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
	resp := &sandboxpb.SandboxStatusResponse{
		SandboxId: id,
		Pid:       uint32(st.Pid),
		State:     state,
		CreatedAt: timestamp(st.CreatedAt),
		ExitedAt:  timestamp(st.ExitedAt),
	}
	if r.GetVerbose() {
		info, err := statusInfo(st)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": info}
	}
	return resp, nil
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
func (s *Sandbox) PingSandbox(ctx context.Context, r *sandboxpb.PingRequest) (*sandboxpb.PingResponse, error) {
	id, err := sandboxID(r, "ping sandbox")
	if err != nil {
		return nil, err
	}
	if err := s.m.PingSandbox(ctx, id); err != nil {
		return nil, err
	}
	return &sandboxpb.PingResponse{}, nil
}

// ShutdownSandbox releases the pod; the shim then exits by itself.
func (s *Sandbox) ShutdownSandbox(ctx context.Context, r *sandboxpb.ShutdownSandboxRequest) (*sandboxpb.ShutdownSandboxResponse, error) {
	id, err := sandboxID(r, "shutdown sandbox")
	if err != nil {
		return nil, err
	}
	if err := s.m.ShutdownSandbox(ctx, id); err != nil {
		return nil, err
	}
	return &sandboxpb.ShutdownSandboxResponse{}, nil
}

// SandboxMetrics answers with the pod cgroup's metrics, as an Any named
// as a task's Stats.
func (s *Sandbox) SandboxMetrics(ctx context.Context, r *sandboxpb.SandboxMetricsRequest) (*sandboxpb.SandboxMetricsResponse, error) {
	id, err := sandboxID(r, "sandbox metrics")
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
	return &sandboxpb.SandboxMetricsResponse{Metrics: &types.Metric{Timestamp: timestamppb.Now(), ID: id, Data: data}}, nil
}

// UpdateSandbox acts on CRI's updated-resources in the sandbox's
// extensions; other updates are accepted and not acted on.
func (s *Sandbox) UpdateSandbox(ctx context.Context, r *sandboxpb.UpdateSandboxRequest) (*sandboxpb.UpdateSandboxResponse, error) {
	id, err := sandboxID(r, "update sandbox")
	if err != nil {
		return nil, err
	}
	res, ok, err := updatedResources(r.GetSandbox())
	if err != nil {
		return nil, fmt.Errorf("update sandbox %q: %w", id, err)
	}
	if !ok {
		if err := s.m.PingSandbox(ctx, id); err != nil {
			return nil, err
		}
		return &sandboxpb.UpdateSandboxResponse{}, nil
	}
	if err := s.m.UpdateSandbox(ctx, id, res); err != nil {
		return nil, err
	}
	return &sandboxpb.UpdateSandboxResponse{}, nil
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

// updatedResources returns the pod resources in sb's extensions, and
// whether there are any.
func updatedResources(sb *types.Sandbox) (sandbox.PodResources, bool, error) {
	a, ok := sb.GetExtensions()[updatedResourcesKey]
	if !ok {
		return sandbox.PodResources{}, false, nil
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
