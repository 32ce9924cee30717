package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestParsePodConfig(t *testing.T) {
	tests := []struct {
		name string
		in   *cri.PodSandboxConfig
		want *PodConfig
	}{
		{"empty", &cri.PodSandboxConfig{}, &PodConfig{}},
		{"full", &cri.PodSandboxConfig{
			Metadata:     &cri.PodSandboxMetadata{Name: "n", Uid: "u", Namespace: "ns", Attempt: 3},
			Hostname:     "h",
			LogDirectory: "/var/log/pods/x",
			DnsConfig:    &cri.DNSConfig{Servers: []string{"a", "b"}, Searches: []string{"s"}, Options: []string{"ndots:2", "edns0"}},
			PortMappings: []*cri.PortMapping{{ContainerPort: 80}},
			Labels:       map[string]string{"l": "v"},
			Annotations:  map[string]string{"x": "y"},
			Linux: &cri.LinuxPodSandboxConfig{
				CgroupParent: "/kubepods/podu",
				SecurityContext: &cri.LinuxSandboxSecurityContext{
					NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_NODE},
					Privileged:       true,
				},
				Sysctls:   map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"},
				Resources: &cri.LinuxContainerResources{MemoryLimitInBytes: 5},
			},
		}, &PodConfig{
			Name: "n", UID: "u", Namespace: "ns", Hostname: "h",
			DNS:          &DNSConfig{Servers: []string{"a", "b"}, Searches: []string{"s"}, Options: []string{"ndots:2", "edns0"}},
			CgroupParent: "/kubepods/podu",
			Sysctls:      map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000"},
			NetworkMode:  NamespaceNode, PidMode: NamespaceContainer, IpcMode: NamespaceNode,
		}},
		// An empty DNS config is still one: the pause path writes an empty
		// resolv.conf for it, not the host's.
		{"empty dns", &cri.PodSandboxConfig{DnsConfig: &cri.DNSConfig{}}, &PodConfig{DNS: &DNSConfig{}}},
		{"target pid", &cri.PodSandboxConfig{Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Pid: cri.NamespaceMode_TARGET, TargetId: "c1"},
		}}}, &PodConfig{PidMode: NamespaceTarget}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePodConfig(podConfig(t, tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	for name, in := range map[string][]byte{
		"truncated":              {0x12, 0x05, 'a'},
		"hostname not UTF-8":     {0x12, 0x01, 0xff},
		"metadata not a message": {0x0a, 0x02, 0x0a, 0x05},
		"bad tag":                {0x00},
	} {
		if _, err := ParsePodConfig(in); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

// TestPodConfigJSON pins PodConfig's JSON: pod.json holds it, and a shim
// must read the record an older shim wrote.
func TestPodConfigJSON(t *testing.T) {
	c := &PodConfig{
		Name: "n", UID: "u", Namespace: "ns", Hostname: "h",
		DNS:          &DNSConfig{Servers: []string{"a"}, Searches: []string{"s"}, Options: []string{"o"}},
		CgroupParent: "/kubepods/podu",
		Sysctls:      map[string]string{"kernel.shmmax": "1000"},
		NetworkMode:  NamespaceNode, PidMode: NamespaceContainer, IpcMode: NamespacePod,
	}
	const want = `{"name":"n","uid":"u","namespace":"ns","hostname":"h",` +
		`"dns":{"servers":["a"],"searches":["s"],"options":["o"]},` +
		`"cgroup_parent":"/kubepods/podu","sysctls":{"kernel.shmmax":"1000"},` +
		`"network_mode":2,"pid_mode":1,"ipc_mode":0}`
	got, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	var back PodConfig
	if err := json.Unmarshal([]byte(want), &back); err != nil || !reflect.DeepEqual(&back, c) {
		t.Errorf("decode: got %+v (%v), want %+v", back, err, c)
	}
}

func TestCgroupPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"/kubepods/burstable/podu":        "/kubepods/burstable/podu",
		"kubepods/podu":                   "/kubepods/podu",
		"kubepods-burstable-podu.slice":   "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podu.slice",
		"kubepods.slice":                  "/kubepods.slice",
		"bad--name.slice":                 "/bad--name.slice",
		"/kubepods.slice/x.slice":         "/kubepods.slice/x.slice",
		"kubepods-besteffort-pod_a.slice": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod_a.slice",
	} {
		if got := cgroupPath(in); got != want {
			t.Errorf("cgroupPath(%q): got %q, want %q", in, got, want)
		}
	}
}

// TestPodCgroup runs a pod under a cgroup parent of its own on this
// host's hierarchies (v1 here, v2 in the guest): the holder is placed in
// its leaf, metrics read, resources written, the cgroup removed on
// shutdown.
func TestPodCgroup(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	parent := fmt.Sprintf("/sbx-unit-%d", os.Getpid())
	cfg := podConfig(t, &cri.PodSandboxConfig{Linux: &cri.LinuxPodSandboxConfig{CgroupParent: parent}})
	t.Cleanup(func() { _ = removePodCgroup(parent) })
	if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	st, err := h.m.StartSandbox(ctx, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.Contains(line, ":name=") && !strings.Contains(line, "systemd") {
			continue
		}
		if want := ":" + parent + "/pod1"; !strings.HasSuffix(line, want) {
			t.Errorf("holder cgroup line %q: want it to end in %q (holderCgroup)", line, want)
		}
	}
	m, err := h.m.SandboxMetrics(ctx, "pod1")
	if err != nil {
		t.Fatalf("SandboxMetrics: %v", err)
	}
	switch s := m.(type) {
	case *cgroup1stats.Metrics:
		if s.GetPids().GetCurrent() == 0 {
			t.Errorf("v1 metrics: pids.current 0 with the holder in: %v", s)
		}
	case *cgroup2stats.Metrics:
		if s.GetPids().GetCurrent() == 0 {
			t.Errorf("v2 metrics: pids.current 0 with the holder in: %v", s)
		}
	default:
		t.Errorf("SandboxMetrics: got %T", m)
	}
	if err := h.m.UpdateSandbox(ctx, "pod1", PodResources{MemoryLimit: 256 << 20, CPUShares: 512}); err != nil {
		t.Fatalf("UpdateSandbox: %v", err)
	}
	paths := podCgroupPaths("/sys/fs/cgroup", parent)
	if dir := paths["memory"]; dir != "" {
		if b, _ := os.ReadFile(filepath.Join(dir, "memory.limit_in_bytes")); strings.TrimSpace(string(b)) != fmt.Sprint(256<<20) {
			t.Errorf("memory.limit_in_bytes: got %q", b)
		}
	} else if dir := paths[""]; dir != "" {
		if b, _ := os.ReadFile(filepath.Join(dir, "memory.max")); strings.TrimSpace(string(b)) != fmt.Sprint(256<<20) {
			t.Errorf("memory.max: got %q", b)
		}
	}
	if err := h.m.ShutdownSandbox(ctx, "pod1"); err != nil {
		t.Fatal(err)
	}
	for _, dir := range podCgroupPaths("/sys/fs/cgroup", parent) {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("pod cgroup %s left after ShutdownSandbox: %v", dir, err)
		}
	}
}

// TestPlaceHolder places a holder into fake v2 and v1 layouts: it goes
// into the leaf named by the sandbox id in every hierarchy, never into
// the pod cgroup itself, which on v2 could then not give controllers to
// the containers' cgroups (holderCgroup).
func TestPlaceHolder(t *testing.T) {
	for _, tt := range []struct {
		name        string
		hierarchies []string // "" is a v2 root
	}{
		{"v2", []string{""}},
		{"v1", []string{"cpu,cpuacct", "memory", "pids", "unified"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, h := range tt.hierarchies {
				if err := os.MkdirAll(filepath.Join(root, h), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, h, "cgroup.procs"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tt.hierarchies[0] == "" {
				if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			const pod, id, pid = "/kubepods/pod1", "sbx1", 4242
			if err := placeInPodCgroup(root, pod, id, pid); err != nil {
				t.Fatalf("placeInPodCgroup: %v", err)
			}
			for _, h := range tt.hierarchies {
				procs := filepath.Join(root, h, pod, id, "cgroup.procs")
				if got, err := os.ReadFile(procs); err != nil || string(got) != "4242" {
					t.Errorf("%s: got %q (%v), want %q", procs, got, err, "4242")
				}
				podProcs := filepath.Join(root, h, pod, "cgroup.procs")
				if _, err := os.Stat(podProcs); !os.IsNotExist(err) {
					t.Errorf("%s: got %v, want nothing written to the pod cgroup itself", podProcs, err)
				}
			}
		})
	}
}

// TestCreateSandboxID: the sandbox id names the holder's cgroup, so one
// that is not a containerd identifier is refused before anything is made.
func TestCreateSandboxID(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	for _, id := range []string{"", "..", "../../escape", "a/b", ".hidden"} {
		t.Run(id, func(t *testing.T) {
			err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: id, Bundle: h.bundle})
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("CreateSandbox id %q: got %v, want InvalidArgument", id, err)
			}
		})
	}
	h.m.mu.Lock()
	defer h.m.mu.Unlock()
	if h.m.pod != nil {
		t.Errorf("pod %q made from an invalid id", h.m.pod.id)
	}
}

func TestCheckSysctl(t *testing.T) {
	tests := []struct {
		key              string
		hostNet, hostIPC bool
		ok               bool
	}{
		{"kernel.shmmni", false, false, true},
		{"kernel.shmmni", false, true, false},
		{"fs.mqueue.msg_max", false, false, true},
		{"kernel.sem", false, false, true},
		{"net.ipv4.ip_forward", false, false, true},
		{"net/ipv4/ip_forward", false, false, true},
		{"net.ipv4.ip_forward", true, false, false},
		{"vm.swappiness", false, false, false},
		{"kernel.pid_max", false, false, false},
		{"kernel.domainname", true, false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/hostNet=%v/hostIPC=%v", tt.key, tt.hostNet, tt.hostIPC), func(t *testing.T) {
			err := checkSysctl(tt.key, tt.hostNet, tt.hostIPC)
			if (err == nil) != tt.ok {
				t.Errorf("got %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
}

// TestHostNetworkPodKeepsHostname: a host-network pod's holder shares the
// host's UTS namespace and must not rename the host.
func TestHostNetworkPodKeepsHostname(t *testing.T) {
	h := newPodHarness(t)
	ctx := context.Background()
	before, _ := os.Hostname()
	cfg := podConfig(t, &cri.PodSandboxConfig{Hostname: "not-the-host", Linux: &cri.LinuxPodSandboxConfig{
		SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
	}})
	if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	st, err := h.m.StartSandbox(ctx, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Hostname(); after != before {
		_ = unix.Sethostname([]byte(before))
		t.Fatalf("host renamed from %q to %q", before, after)
	}
	for _, ns := range []string{"uts", "net"} {
		if nsIno(t, fmt.Sprintf("/proc/%d/ns/%s", st.Pid, ns)) != nsIno(t, "/proc/self/ns/"+ns) {
			t.Errorf("host-network holder has its own %s namespace", ns)
		}
	}
}

// TestApplyPodResources writes pod-level resources into fake v2 and v1
// layouts (files the kernel would have; the real v1 host is in
// TestPodCgroup, the v2 guest in the CRI lanes).
func TestApplyPodResources(t *testing.T) {
	r := PodResources{CPUPeriod: 100000, CPUQuota: 50000, CPUShares: 1024, MemoryLimit: 1 << 30}
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "kubepods", "pod1")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := applyPodResources(root, "/kubepods/pod1", r); err != nil {
			t.Fatal(err)
		}
		for file, want := range map[string]string{"cpu.max": "50000 100000", "cpu.weight": "39", "memory.max": "1073741824"} {
			if got, _ := os.ReadFile(filepath.Join(dir, file)); string(got) != want {
				t.Errorf("%s: got %q, want %q", file, got, want)
			}
		}
		if got := podCgroupPaths(root, "/kubepods/pod1"); !reflect.DeepEqual(got, map[string]string{"": dir}) {
			t.Errorf("podCgroupPaths: got %v", got)
		}
	})
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		for _, h := range []string{"cpu,cpuacct", "memory", "pids"} {
			if err := os.MkdirAll(filepath.Join(root, h, "kubepods", "pod1"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, h, "cgroup.procs"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// A plain directory in the cgroup root, not a hierarchy: left alone.
		if err := os.MkdirAll(filepath.Join(root, "stray", "kubepods", "pod1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")); err != nil {
			t.Fatal(err)
		}
		if err := applyPodResources(root, "/kubepods/pod1", r); err != nil {
			t.Fatal(err)
		}
		for file, want := range map[string]string{
			"cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000",
			"cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us":  "50000",
			"cpu,cpuacct/kubepods/pod1/cpu.shares":        "1024",
			"memory/kubepods/pod1/memory.limit_in_bytes":  "1073741824",
		} {
			if got, _ := os.ReadFile(filepath.Join(root, file)); string(got) != want {
				t.Errorf("%s: got %q, want %q", file, got, want)
			}
		}
		paths := podCgroupPaths(root, "/kubepods/pod1")
		want := map[string]string{
			"cpu":     filepath.Join(root, "cpu,cpuacct/kubepods/pod1"),
			"cpuacct": filepath.Join(root, "cpu,cpuacct/kubepods/pod1"),
			"memory":  filepath.Join(root, "memory/kubepods/pod1"),
			"pids":    filepath.Join(root, "pids/kubepods/pod1"),
		}
		if !reflect.DeepEqual(paths, want) {
			t.Errorf("podCgroupPaths: got %v, want %v", paths, want)
		}
		if ents, _ := os.ReadDir(filepath.Join(root, "stray", "kubepods", "pod1")); len(ents) != 0 {
			t.Errorf("files written into a directory that is not a hierarchy: %v", ents)
		}
	})
}

// TestHostsFile: the pod's hosts file is the node's, verbatim when it
// names the pod's hostname (a host-network pod: the pause path's copy),
// else with a loopback line naming it; without the node's file, the
// localhost lines.
func TestHostsFile(t *testing.T) {
	old := etcHosts
	t.Cleanup(func() { etcHosts = old })
	etcHosts = filepath.Join(t.TempDir(), "hosts")
	node := "127.0.0.1 localhost\n10.0.0.1 node1 node1.example # the node\n10.0.0.9 alias"
	if err := os.WriteFile(etcHosts, []byte(node), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ hostname, want string }{
		{"node1", node},
		{"node1.example", node},
		{"", node},
		{"pod-a", node + "\n127.0.1.1\tpod-a\n"},
		{"the", node + "\n127.0.1.1\tthe\n"}, // in a comment only
		{"10.0.0.1", node + "\n127.0.1.1\t10.0.0.1\n"},
	} {
		got, err := hostsFile(tc.hostname)
		if err != nil || string(got) != tc.want {
			t.Errorf("hostsFile(%q) = %q, %v; want %q", tc.hostname, got, err, tc.want)
		}
	}
	if err := os.Remove(etcHosts); err != nil {
		t.Fatal(err)
	}
	got, err := hostsFile("pod-a")
	if want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tpod-a\n"; err != nil || string(got) != want {
		t.Errorf("hostsFile without the node's = %q, %v; want %q", got, err, want)
	}
}
