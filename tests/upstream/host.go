package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// lock takes the machine-wide lock at path, waiting for a run that holds
// it, and returns its release.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		fmt.Printf("upstream: another run holds %s; waiting for it\n", path)
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// removeCgroups removes the cgroups a run's containers left: containerd's
// default spec puts a container in /<namespace>/<id> of every hierarchy,
// and the tests' ids start with their names. It returns one line per
// cgroup found (a cgroup that still holds processes stays, and says so).
func removeCgroups(tests []string) []string {
	var left []string
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/" + testNamespace)
	if fi, err := os.Stat("/sys/fs/cgroup/" + testNamespace); err == nil && fi.IsDir() {
		parents = append(parents, "/sys/fs/cgroup/"+testNamespace)
	}
	for _, parent := range parents {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if !e.IsDir() || !hasAnyPrefix(e.Name(), tests) {
				continue
			}
			cg := filepath.Join(parent, e.Name())
			if err := unix.Rmdir(cg); err != nil {
				left = append(left, fmt.Sprintf("cgroup %s: %v", cg, err))
				continue
			}
			left = append(left, "cgroup "+cg+" (removed)")
		}
	}
	return left
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// runcRoots are where runc keeps the state of the tests' containers: the
// shims' default root and the one TestKillContainerDeletedByRunc names,
// each with the namespace below.
var runcRoots = []string{"/run/containerd/runc", "/tmp/runc-test"}

// staleContainers returns the runc state directories named like the
// tests' containers: an interrupted run left them, and a new container
// with the same id would fail to create.
func staleContainers(tests []string) []string {
	var stale []string
	for _, root := range runcRoots {
		entries, _ := os.ReadDir(filepath.Join(root, testNamespace))
		for _, e := range entries {
			if e.IsDir() && hasAnyPrefix(e.Name(), tests) {
				stale = append(stale, filepath.Join(root, testNamespace, e.Name()))
			}
		}
	}
	return stale
}
