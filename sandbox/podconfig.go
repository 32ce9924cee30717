package sandbox

import (
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/encoding/protowire"
)

// CRI NamespaceMode values (k8s.io/cri-api runtime/v1 api.proto, enum
// NamespaceMode).
const (
	NamespacePod       = 0
	NamespaceContainer = 1
	NamespaceNode      = 2
	NamespaceTarget    = 3
)

// PodConfig is what the shim reads from the CRI PodSandboxConfig that
// CreateSandbox carries in its options.
//
// It is decoded from the protobuf wire format here rather than with
// k8s.io/cri-api's generated types: that package holds its gRPC stubs
// (api_grpc.pb.go) and would link google.golang.org/grpc into the shim.
// The field numbers are those of cri-api v0.37.0's
// pkg/apis/runtime/v1/api.proto, cited at each field; the package test
// encodes configs with the real types and checks the decode.
type PodConfig struct {
	// PodSandboxMetadata (PodSandboxConfig field 1): name 1, uid 2,
	// namespace 3.
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Hostname is PodSandboxConfig field 2.
	Hostname string `json:"hostname,omitempty"`
	// DNS is DNSConfig (PodSandboxConfig field 4): servers 1, searches 2,
	// options 3; nil when the config has none.
	DNS *DNSConfig `json:"dns,omitempty"`
	// CgroupParent is LinuxPodSandboxConfig (PodSandboxConfig field 8)
	// field 1.
	CgroupParent string `json:"cgroup_parent,omitempty"`
	// Sysctls is LinuxPodSandboxConfig field 3, map<string, string>.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// NetworkMode, PidMode and IpcMode are NamespaceOption (field 1 of
	// LinuxSandboxSecurityContext, field 2 of LinuxPodSandboxConfig)
	// fields 1, 2 and 3.
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

// ParsePodConfig decodes a serialized CRI PodSandboxConfig.
func ParsePodConfig(b []byte) (*PodConfig, error) {
	c := &PodConfig{}
	err := walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			return walk(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					c.Name = string(v)
				case 2:
					c.UID = string(v)
				case 3:
					c.Namespace = string(v)
				}
				return nil
			})
		case 2:
			c.Hostname = string(v)
		case 4:
			c.DNS = &DNSConfig{}
			return walk(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					c.DNS.Servers = append(c.DNS.Servers, string(v))
				case 2:
					c.DNS.Searches = append(c.DNS.Searches, string(v))
				case 3:
					c.DNS.Options = append(c.DNS.Options, string(v))
				}
				return nil
			})
		case 8:
			return c.parseLinux(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode PodSandboxConfig: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

func (c *PodConfig) parseLinux(b []byte) error {
	return walk(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			c.CgroupParent = string(v)
		case 2: // security_context
			return walk(v, func(num protowire.Number, v []byte) error {
				if num != 1 { // namespace_options
					return nil
				}
				return walkVarints(v, func(num protowire.Number, x uint64) {
					switch num {
					case 1:
						c.NetworkMode = int(x)
					case 2:
						c.PidMode = int(x)
					case 3:
						c.IpcMode = int(x)
					}
				})
			})
		case 3: // map entry: key 1, value 2
			var k, val string
			if err := walk(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					k = string(v)
				case 2:
					val = string(v)
				}
				return nil
			}); err != nil {
				return err
			}
			if c.Sysctls == nil {
				c.Sysctls = make(map[string]string)
			}
			c.Sysctls[k] = val
		}
		return nil
	})
}

// walk calls fn for every length-delimited field of message b, skipping
// fields of other wire types.
func walk(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := fn(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// walkVarints calls fn for every varint field of message b.
func walkVarints(b []byte, fn func(protowire.Number, uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.VarintType {
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			fn(num, x)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}
