package ociruntime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// runcState is the part of runc's record of a container (state.json in its
// state directory, libcontainer's State) that tells whether the shim may do
// a start or a delete itself, exactly as runc would.
type runcState struct {
	InitProcessPid int `json:"init_process_pid"`
	Config         struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
		// Hooks maps a hook name to its list (see noHook).
		Hooks   map[string][]json.RawMessage `json:"Hooks"`
		Cgroups struct {
			Systemd  bool `json:"Systemd"`
			Rootless bool `json:"Rootless"`
		} `json:"cgroups"`
	} `json:"config"`
	Rootless     bool              `json:"rootless"`
	CgroupPaths  map[string]string `json:"cgroup_paths"`
	IntelRdtPath string            `json:"intel_rdt_path"`
}

func readRuncState(dir string) (*runcState, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st runcState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("runc state of %s: %w", dir, err)
	}
	return &st, nil
}

// noHook reports whether runc's record says, in the form runc writes it,
// that the container has no hook called name. runc up to 1.3 writes every
// hook name, with null for none; 1.4 and later leave the whole table out
// when the container has no hooks at all (omitted). A record without the
// table from a runc that always writes it is one this code does not know:
// it says false.
func (s *runcState) noHook(name string, omitted bool) bool {
	if s.Config.Hooks == nil {
		return omitted
	}
	list, ok := s.Config.Hooks[name]
	return ok && len(list) == 0
}

// ownPidNamespace reports whether the container has a PID namespace of its
// own: then every process in it died with its init, and nothing is left
// in its cgroups for a delete to kill.
func (s *runcState) ownPidNamespace() bool {
	for _, ns := range s.Config.Namespaces {
		if ns.Type == "NEWPID" {
			return ns.Path == ""
		}
	}
	return false
}

// plainCgroups reports whether the container's cgroups are directories
// runc made and would only rmdir: not systemd units, not rootless (whose
// removal may need other rights), and no Intel RDT group beside them.
func (s *runcState) plainCgroups() bool {
	return !s.Config.Cgroups.Systemd && !s.Config.Cgroups.Rootless && !s.Rootless &&
		s.IntelRdtPath == "" && len(s.CgroupPaths) > 0
}
