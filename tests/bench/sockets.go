package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// sockets records the ttrpc socket of every shim the run starts, read
// from the task bundles, so that teardown can remove the socket files a
// shim left behind: by path, never by a guess at what else is in
// /run/containerd/s.
type sockets struct {
	mu    sync.Mutex
	paths map[string]string // socket path -> runtime label; guarded by mu
}

// note records the socket of task id's shim from its bundle in state.
func (s *sockets) note(state, ns, id string, rt shimRuntime) error {
	return s.noteBundle(filepath.Join(state, "io.containerd.runtime.v2.task", ns, id), rt.label)
}

// noteBundle records the socket of the shim whose bundle (a task's, or a
// sandbox's) is bundle, under label.
func (s *sockets) noteBundle(bundle, label string) error {
	address, err := bundleAddress(bundle)
	if err != nil {
		return err
	}
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		return fmt.Errorf("bundle %s: shim address %q is not unix://", bundle, address)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths == nil {
		s.paths = map[string]string{}
	}
	s.paths[path] = label
	return nil
}

// bundleAddress reads the shim address containerd 2.x keeps in a bundle
// (bootstrap.json), or the plain address file older protocols use.
func bundleAddress(bundle string) (string, error) {
	if data, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var b struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(data, &b); err != nil {
			return "", fmt.Errorf("parse %s/bootstrap.json: %w", bundle, err)
		}
		return b.Address, nil
	}
	data, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return "", fmt.Errorf("no shim address in bundle %s: %w", bundle, err)
	}
	return strings.TrimSpace(string(data)), nil
}

// removeLeftovers removes the recorded sockets that still exist (call it
// once every shim has exited) and returns how many each runtime left.
func (s *sockets) removeLeftovers() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := map[string]int{}
	for path, label := range s.paths {
		if _, err := os.Lstat(path); err == nil {
			left[label]++
			_ = os.Remove(path)
		}
	}
	return left
}
