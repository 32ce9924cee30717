package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	sandboxapi "github.com/containerd/containerd/api/runtime/sandbox/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/reaper"
	"github.com/sandbox-shim/containerd-shim-sandbox-v2/sandbox"
)

// The test binary is the pod holder too (see cmd).
func init() {
	if len(os.Args) > 1 && os.Args[1] == sandbox.HolderArg {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == sandbox.HolderArg {
		os.Exit(sandbox.RunHolder(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// serveSandbox serves the Sandbox API over a Manager with a real reaper
// and returns containerd's generated client for it: what the service reads
// and writes with its trimmed copies of the messages, containerd writes
// and reads with the upstream ones.
func serveSandbox(t *testing.T) sandboxapi.TTRPCSandboxService {
	t.Helper()
	testutil.NeedRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m := sandbox.NewManager(context.Background(), sandbox.Config{
		Namespace:        "testns",
		Publisher:        nopPublisher{},
		Reaper:           reaper.NewReaper(),
		HolderExecutable: exe,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = m.ShutdownSandbox(ctx, "pod1")
		if err := m.Close(ctx); err != nil {
			t.Errorf("Manager.Close: %v", err)
		}
	})
	client := serveWith(context.Background(), t, func(s *ttrpc.Server) { RegisterSandbox(s, m) })
	return sandboxapi.NewTTRPCSandboxClient(client)
}

func TestSandboxAPI(t *testing.T) {
	svc := serveSandbox(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bundle := t.TempDir()
	opts, err := anypb.New(&cri.PodSandboxConfig{Hostname: "h1", DnsConfig: &cri.DNSConfig{Servers: []string{"1.1.1.1"}}})
	if err != nil {
		t.Fatal(err)
	}

	errTests := []struct {
		name string
		call func() error
		want error
	}{
		{"status of an unknown id", func() error {
			_, err := svc.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxID: "nope"})
			return err
		}, errdefs.ErrNotFound},
		{"create without an id", func() error {
			_, err := svc.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{BundlePath: bundle})
			return err
		}, errdefs.ErrInvalidArgument},
		{"create with a relative bundle", func() error {
			_, err := svc.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxID: "pod1", BundlePath: "b"})
			return err
		}, errdefs.ErrInvalidArgument},
		{"create with options that are not a config", func() error {
			_, err := svc.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxID: "pod1", BundlePath: bundle,
				Options: &anypb.Any{TypeUrl: "x", Value: []byte{0xff, 0xff}}})
			return err
		}, errdefs.ErrInvalidArgument},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := errgrpc.ToNative(tt.call()); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}

	if _, err := svc.CreateSandbox(ctx, &sandboxapi.CreateSandboxRequest{SandboxID: "pod1", BundlePath: bundle, Options: opts,
		Rootfs: []*types.Mount{}, Annotations: map[string]string{"a": "b"}}); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	start, err := svc.StartSandbox(ctx, &sandboxapi.StartSandboxRequest{SandboxID: "pod1"})
	if err != nil {
		t.Fatalf("StartSandbox: %v", err)
	}
	if start.Pid == 0 || start.CreatedAt == nil || time.Since(start.CreatedAt.AsTime()) > time.Minute {
		t.Errorf("StartSandbox: got pid %d created_at %v", start.Pid, start.CreatedAt)
	}
	if start.GetSpec().GetTypeUrl() != specTypeURL {
		t.Errorf("StartSandbox spec type: got %q, want %q", start.GetSpec().GetTypeUrl(), specTypeURL)
	}
	var spec specs.Spec
	if err := json.Unmarshal(start.GetSpec().GetValue(), &spec); err != nil || spec.Hostname != "h1" || spec.Linux == nil ||
		!slices.Contains(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: fmt.Sprintf("/proc/%d/ns/net", start.Pid)}) {
		t.Errorf("StartSandbox spec: got %s (%v)", start.GetSpec().GetValue(), err)
	}
	if b, _ := os.ReadFile(bundle + "/pod/resolv.conf"); string(b) != "nameserver 1.1.1.1\n" {
		t.Errorf("resolv.conf from the options: got %q", b)
	}
	plat, err := svc.Platform(ctx, &sandboxapi.PlatformRequest{SandboxID: "pod1"})
	if err != nil || plat.GetPlatform().GetOS() != runtime.GOOS || plat.GetPlatform().GetArchitecture() != runtime.GOARCH {
		t.Errorf("Platform: got %v %v", plat, err)
	}
	if _, err := svc.PingSandbox(ctx, &sandboxapi.PingRequest{SandboxID: "pod1"}); err != nil {
		t.Errorf("PingSandbox: %v", err)
	}
	st, err := svc.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxID: "pod1", Verbose: true})
	if err != nil {
		t.Fatalf("SandboxStatus: %v", err)
	}
	if st.SandboxID != "pod1" || st.State != "SANDBOX_READY" || st.Pid != start.Pid || !st.CreatedAt.AsTime().Equal(start.CreatedAt.AsTime()) || st.ExitedAt != nil {
		t.Errorf("SandboxStatus: got %v", st)
	}
	// CRI decodes info["info"] into its SandboxInfo: pid a number.
	var info struct {
		Pid        uint32            `json:"pid"`
		Status     string            `json:"processStatus"`
		Namespaces map[string]string `json:"namespaces"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid != start.Pid || info.Status != "running" || info.Namespaces["net"] == "" {
		t.Errorf("SandboxStatus info: got %q (%v)", st.Info["info"], err)
	}
	met, err := svc.SandboxMetrics(ctx, &sandboxapi.SandboxMetricsRequest{SandboxID: "pod1"})
	if err != nil {
		t.Fatalf("SandboxMetrics: %v", err)
	}
	if met.GetMetrics().GetID() != "pod1" || met.GetMetrics().GetData().GetTypeUrl() == "" || met.GetMetrics().GetTimestamp() == nil {
		t.Errorf("SandboxMetrics: got %v", met)
	}
	// An update without CRI's resources is accepted.
	if _, err := svc.UpdateSandbox(ctx, &sandboxapi.UpdateSandboxRequest{SandboxID: "pod1", Sandbox: &types.Sandbox{SandboxID: "pod1"}}); err != nil {
		t.Errorf("UpdateSandbox: %v", err)
	}

	if _, err := svc.StopSandbox(ctx, &sandboxapi.StopSandboxRequest{SandboxID: "pod1", TimeoutSecs: 5}); err != nil {
		t.Fatalf("StopSandbox: %v", err)
	}
	w, err := svc.WaitSandbox(ctx, &sandboxapi.WaitSandboxRequest{SandboxID: "pod1"})
	if err != nil || w.ExitedAt == nil {
		t.Errorf("WaitSandbox: got %v %v", w, err)
	}
	st, err = svc.SandboxStatus(ctx, &sandboxapi.SandboxStatusRequest{SandboxID: "pod1"})
	if err != nil || st.State != "SANDBOX_NOTREADY" || st.ExitedAt == nil {
		t.Errorf("SandboxStatus after stop: got %v %v", st, err)
	}
	for range 2 {
		if _, err := svc.ShutdownSandbox(ctx, &sandboxapi.ShutdownSandboxRequest{SandboxID: "pod1"}); err != nil {
			t.Errorf("ShutdownSandbox: %v", err)
		}
	}
}

// TestSandboxServiceMatchesUpstream: the service is registered by hand
// (the copies declare no service), so its name and method names are
// checked against containerd's generated descriptor.
func TestSandboxServiceMatchesUpstream(t *testing.T) {
	up := sandboxapi.File_runtime_sandbox_v1_sandbox_proto.Services().ByName("Sandbox")
	if up == nil {
		t.Fatal("containerd's sandbox.proto has no service Sandbox")
	}
	if got, want := sandboxService, string(up.FullName()); got != want {
		t.Errorf("service name: got %q, want %q", got, want)
	}
	var want []string
	for i := range up.Methods().Len() {
		want = append(want, string(up.Methods().Get(i).Name()))
	}
	got := slices.Collect(maps.Keys((&Sandbox{}).methods()))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("methods: got %q, want %q", got, want)
	}
}

// TestSandboxAPIUndecodable sends bytes that are not the request
// message: the caller is told InvalidArgument, and no handler runs (the
// Manager is nil).
func TestSandboxAPIUndecodable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := serveWith(ctx, t, func(s *ttrpc.Server) { RegisterSandbox(s, nil) })
	tests := []struct {
		name   string
		method string
		wire   []byte
	}{
		{"truncated", "StartSandbox", []byte{0x0a, 0x05, 'p'}},
		{"sandbox id not UTF-8", "PingSandbox", []byte{0x0a, 0x01, 0xff}},
		{"options not an Any", "CreateSandbox", []byte{0x0a, 0x01, 'p', 0x22, 0x03, 0x0a, 0x05, 'x'}},
		{"sandbox not a Sandbox", "UpdateSandbox", []byte{0x0a, 0x01, 'p', 0x22, 0x02, 0x3a, 0x09}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An Empty whose unknown fields are the bytes: proto.Marshal
			// writes them verbatim.
			req := &emptypb.Empty{}
			req.ProtoReflect().SetUnknown(tt.wire)
			err := client.Call(ctx, sandboxService, tt.method, req, &emptypb.Empty{})
			if err := errgrpc.ToNative(err); !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
}

func TestUpdatedResources(t *testing.T) {
	res, err := anypb.New(&anypb.Any{})
	if err != nil {
		t.Fatal(err)
	}
	// As typeurl stores CRI's UpdatedResources: JSON of the Go struct.
	res.TypeUrl = "github.com/containerd/containerd/v2/internal/cri/server/podsandbox.UpdatedResources"
	res.Value, _ = json.Marshal(map[string]any{"Resources": &cri.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 1 << 30}})
	got, ok, err := updatedResources(&types.Sandbox{SandboxID: "p", Extensions: map[string]*anypb.Any{"other": {TypeUrl: "x"}, updatedResourcesKey: res}})
	want := sandbox.PodResources{CPUPeriod: 100000, CPUQuota: 50000, CPUShares: 512, MemoryLimit: 1 << 30}
	if err != nil || !ok || got != want {
		t.Errorf("updatedResources: got %+v %v %v, want %+v", got, ok, err, want)
	}
	if _, ok, err := updatedResources(nil); ok || err != nil {
		t.Errorf("updatedResources of no sandbox: got %v %v, want nothing", ok, err)
	}
}

// TestPodSpecJSON: the pod's spec, marshalled through podSpec, reads back
// as specs.Spec into exactly what the Manager made, for every field the
// Manager sets; a field it sets later that podSpec lacks fails here.
func TestPodSpecJSON(t *testing.T) {
	full := &specs.Spec{
		Version:  specs.Version,
		Hostname: "h1",
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace},
				{Type: specs.NetworkNamespace, Path: "/proc/7/ns/net"},
			},
			CgroupsPath: "/kubepods/pod1",
			Sysctl:      map[string]string{"kernel.msgmax": "16384"},
		},
	}
	for _, in := range []*specs.Spec{full, {Version: specs.Version}} {
		data, err := json.Marshal(podSpecJSON(in))
		if err != nil {
			t.Fatal(err)
		}
		var got specs.Spec
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, in) {
			t.Errorf("round trip of %+v: got %+v (%s)", in, got, data)
		}
		want, _ := json.Marshal(in)
		if string(data) != string(want) {
			t.Errorf("podSpec JSON %s, specs.Spec's %s", data, want)
		}
	}
}
