package sandbox

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/api/cripb"
)

// CRI NamespaceMode values, as PodConfig holds them.
const (
	NamespacePod       = int(cripb.NamespaceMode_POD)
	NamespaceContainer = int(cripb.NamespaceMode_CONTAINER)
	NamespaceNode      = int(cripb.NamespaceMode_NODE)
	NamespaceTarget    = int(cripb.NamespaceMode_TARGET)
)

// PodConfig is what the shim reads from the CRI PodSandboxConfig that
// CreateSandbox carries in its options. It is kept in pod.json (podrecord),
// so its JSON names stay as they are.
//
// The config is decoded with internal/api/cripb's trimmed copy of CRI's
// messages, not k8s.io/cri-api's generated package, which would link
// google.golang.org/grpc into the shim; the package test encodes configs
// with the real types and checks the decode.
type PodConfig struct {
	// Name, UID and Namespace are the pod's metadata.
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Hostname  string `json:"hostname,omitempty"`
	// DNS is nil when the config has no DNS config.
	DNS *DNSConfig `json:"dns,omitempty"`
	// CgroupParent and Sysctls are from the config's Linux part.
	CgroupParent string            `json:"cgroup_parent,omitempty"`
	Sysctls      map[string]string `json:"sysctls,omitempty"`
	// NetworkMode, PidMode and IpcMode are the Linux security context's
	// namespace options, Namespace* values.
	NetworkMode int `json:"network_mode"`
	PidMode     int `json:"pid_mode"`
	IpcMode     int `json:"ipc_mode"`
}

// DNSConfig is the pod's DNS configuration.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// SharesPid reports whether the pod's containers share the holder's PID
// namespace: PID mode POD. CRI sends CONTAINER unless the pod sets
// shareProcessNamespace.
func (c *PodConfig) SharesPid() bool { return c.PidMode == NamespacePod }

// ParsePodConfig decodes a serialized CRI PodSandboxConfig. Fields the
// shim does not read are skipped; bytes that are not a PodSandboxConfig
// are an ErrInvalidArgument.
func ParsePodConfig(b []byte) (*PodConfig, error) {
	var pc cripb.PodSandboxConfig
	if err := proto.Unmarshal(b, &pc); err != nil {
		return nil, fmt.Errorf("decode PodSandboxConfig: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	md, linux := pc.GetMetadata(), pc.GetLinux()
	ns := linux.GetSecurityContext().GetNamespaceOptions()
	c := &PodConfig{
		Name:         md.GetName(),
		UID:          md.GetUid(),
		Namespace:    md.GetNamespace(),
		Hostname:     pc.GetHostname(),
		CgroupParent: linux.GetCgroupParent(),
		Sysctls:      linux.GetSysctls(),
		NetworkMode:  int(ns.GetNetwork()),
		PidMode:      int(ns.GetPid()),
		IpcMode:      int(ns.GetIpc()),
	}
	if d := pc.GetDnsConfig(); d != nil {
		c.DNS = &DNSConfig{Servers: d.GetServers(), Searches: d.GetSearches(), Options: d.GetOptions()}
	}
	return c, nil
}
