package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The pod's files.
//
// In pause-container mode the CRI plugin writes hostname, hosts and
// resolv.conf and mounts a /dev/shm tmpfs in its own sandbox directories,
// and bind-mounts them into every container it creates. With
// `sandboxer = "shim"` it does neither (only its pause path writes them,
// and it bind-mounts only files that exist there), so the shim writes them
// under the sandbox bundle (<bundle>/pod) and adds the bind mounts to each
// of the pod's containers' config.json before the runtime create, where
// the spec does not already mount those paths (kubelet's own /etc/hosts
// mount, a user's volume). Writing into CRI's directories instead would
// tie the shim to CRI's private layout (its root and state dirs, which the
// shim is not told) and would still not be mounted: CRI decides the
// mounts from the sandbox's metadata, not from the files. The spec is the
// one place the shim owns between containerd and the runtime.
//
// /dev/shm replaces the spec's default tmpfs (the OCI default mount CRI
// keeps in this mode) but never a bind mount someone asked for. With IPC
// mode NODE the pod has no shm of its own and containers keep the spec's.
const (
	podDirName = "pod"
	// defaultShmSize is the pause path's /dev/shm size (containerd
	// internal/cri/server/podsandbox defaultShmSize).
	defaultShmSize = 64 << 20
)

// podFiles are the paths of the pod's files under the sandbox bundle.
type podFiles struct {
	dir string
}

func (f podFiles) hostname() string { return filepath.Join(f.dir, "hostname") }
func (f podFiles) hosts() string    { return filepath.Join(f.dir, "hosts") }
func (f podFiles) resolv() string   { return filepath.Join(f.dir, "resolv.conf") }
func (f podFiles) shm() string      { return filepath.Join(f.dir, "shm") }

// write writes hostname, hosts and resolv.conf, and mounts the pod's
// /dev/shm unless the pod uses the host's IPC namespace. Writing again is
// harmless; an existing shm mount is kept.
func (f podFiles) write(c *PodConfig, hostname string) error {
	if err := os.MkdirAll(f.dir, 0o711); err != nil {
		return fmt.Errorf("pod files: %w", err)
	}
	if err := writeFileAtomic(f.dir, "hostname", []byte(hostname+"\n")); err != nil {
		return fmt.Errorf("pod hostname file: %w", err)
	}
	hosts, err := hostsFile(hostname)
	if err != nil {
		return fmt.Errorf("pod hosts file: %w", err)
	}
	if err := writeFileAtomic(f.dir, "hosts", hosts); err != nil {
		return fmt.Errorf("pod hosts file: %w", err)
	}
	resolv, err := resolvConf(c.DNS)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(f.dir, "resolv.conf", resolv); err != nil {
		return fmt.Errorf("pod resolv.conf: %w", err)
	}
	for _, n := range []string{"hostname", "hosts", "resolv.conf"} {
		if err := os.Chmod(filepath.Join(f.dir, n), 0o644); err != nil {
			return err
		}
	}
	if c.IpcMode == NamespaceNode {
		return nil
	}
	if mounted(f.shm()) {
		return nil
	}
	if err := os.MkdirAll(f.shm(), 0o700); err != nil {
		return fmt.Errorf("pod shm: %w", err)
	}
	data := fmt.Sprintf("mode=1777,size=%d", defaultShmSize)
	if err := unix.Mount("shm", f.shm(), "tmpfs", unix.MS_NOEXEC|unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount pod shm: %w", err)
	}
	return nil
}

// etcHosts is the node's hosts file; a variable for tests.
var etcHosts = "/etc/hosts"

// hostsFile is the pod's /etc/hosts: the node's, as the pause path copies
// it (the kubelet mounts its own over it for most pods), and, where that
// does not name the pod's hostname (a pod with a hostname of its own),
// a loopback line naming it, so that the pod resolves its own name as a
// pause-mode pod resolves the node's. A node without the file gets the
// localhost lines.
func hostsFile(hostname string) ([]byte, error) {
	data, err := os.ReadFile(etcHosts)
	if errors.Is(err, os.ErrNotExist) {
		data, err = []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"), nil
	}
	if err != nil {
		return nil, err
	}
	if hostname == "" || hostsNames(data, hostname) {
		return data, nil
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	return append(data, "127.0.1.1\t"+hostname+"\n"...), nil
}

// hostsNames reports whether a hosts file has an entry naming name.
func hostsNames(hosts []byte, name string) bool {
	for _, line := range strings.Split(string(hosts), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) > 1 && slices.Contains(f[1:], name) {
			return true
		}
	}
	return false
}

// resolvConf is the pause path's (parseDNSOptions upstream); without a
// DNS config the pod gets the host's resolv.conf.
func resolvConf(dns *DNSConfig) ([]byte, error) {
	if dns == nil {
		data, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return data, err
	}
	var b strings.Builder
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	if len(dns.Servers) > 0 {
		fmt.Fprintf(&b, "nameserver %s\n", strings.Join(dns.Servers, "\nnameserver "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

// remove unmounts the pod's shm and removes the files; idempotent.
func (f podFiles) remove() error {
	if err := unix.Unmount(f.shm(), unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount pod shm: %w", err)
	}
	if err := os.RemoveAll(f.dir); err != nil {
		return fmt.Errorf("remove pod files: %w", err)
	}
	return nil
}

// mounted reports whether path is a mount point (its device differs from
// its parent's).
func mounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Lstat(filepath.Dir(path), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// podMounts are the mounts a container of the pod gets, by destination.
func (f podFiles) mounts(withShm bool) []specs.Mount {
	bind := func(src, dst string) specs.Mount {
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "rw"}}
	}
	ms := []specs.Mount{
		bind(f.hostname(), "/etc/hostname"),
		bind(f.hosts(), "/etc/hosts"),
		bind(f.resolv(), "/etc/resolv.conf"),
	}
	if withShm {
		ms = append(ms, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: f.shm(), Options: []string{"rbind", "rprivate", "rw"}})
	}
	return ms
}

// addPodMounts adds ms to the spec's mounts where it does not mount their
// destination already; a default tmpfs /dev/shm is replaced. It reports
// whether it changed anything.
func addPodMounts(s *specs.Spec, ms []specs.Mount) bool {
	changed := false
	for _, m := range ms {
		i := mountIndex(s.Mounts, m.Destination)
		switch {
		case i < 0:
			s.Mounts = append(s.Mounts, m)
			changed = true
		case m.Destination == "/dev/shm" && s.Mounts[i].Type == "tmpfs":
			s.Mounts[i] = m
			changed = true
		}
	}
	return changed
}

func mountIndex(ms []specs.Mount, dst string) int {
	for i, m := range ms {
		if filepath.Clean(m.Destination) == dst {
			return i
		}
	}
	return -1
}

// injectPodMounts rewrites a pod container's config.json with the pod's
// mounts. Fields the specs types do not know are kept: the JSON is
// rewritten through a map, only "mounts" replaced.
func injectPodMounts(bundle string, ms []specs.Mount) error {
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("parse config.json: %w", err)
	}
	var s specs.Spec
	if m, ok := raw["mounts"]; ok {
		if err := json.Unmarshal(m, &s.Mounts); err != nil {
			return fmt.Errorf("parse config.json mounts: %w", err)
		}
	}
	if !addPodMounts(&s, ms) {
		return nil
	}
	if raw["mounts"], err = json.Marshal(s.Mounts); err != nil {
		return err
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := filepath.Join(bundle, ".config.json")
	if err := os.WriteFile(tmp, out, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
