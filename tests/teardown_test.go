package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/ctrd"
)

// teardown stops the daemon and removes everything it made. It returns the
// leaks it had to clean up: containers still present, shim processes still
// running after the daemon stopped, zombies, mounts left under the daemon's
// directory. Only processes started from this daemon's bin directory, and
// their children, are killed.
func (d *daemon) teardown() []string {
	var problems []string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var nss []string
	if d.client != nil {
		nss, _ = d.client.NamespaceService().List(ctx)
		for _, ns := range nss {
			if ids := deleteAllContainers(namespaces.WithNamespace(ctx, ns), d.client); len(ids) > 0 {
				problems = append(problems, fmt.Sprintf("containerd %s: containers left in namespace %s: %v", d.version.name, ns, ids))
			}
		}
	}
	if err := d.stop(); err != nil {
		problems = append(problems, err.Error())
	}

	// With every task deleted, each shim exits by itself, daemon or not.
	shims := pollShimsGone(d, "", 20*time.Second)
	if len(shims) > 0 {
		problems = append(problems, fmt.Sprintf("containerd %s: shim processes still running after their tasks were deleted: %v", d.version.name, describe(shims)))
		killTree(shims)
	}
	reapShims()
	if z := strayZombies(nil); len(z) > 0 {
		problems = append(problems, fmt.Sprintf("containerd %s: zombies left: %v", d.version.name, z))
	}
	if mounts := unmountAll(d.dir); len(mounts) > 0 {
		problems = append(problems, fmt.Sprintf("containerd %s: mounts left under %s: %v", d.version.name, d.dir, mounts))
	}
	// Empty per-namespace directories that runc and its cgroup driver
	// leave behind by design; only empty ones are removed.
	for _, ns := range nss {
		_ = os.Remove(filepath.Join("/run/containerd/runc", ns))
		cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", ns))
		for _, cg := range cgroups {
			_ = syscall.Rmdir(cg)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		problems = append(problems, fmt.Sprintf("remove %s: %v", d.dir, err))
	}
	return problems
}

// deleteAllContainers kills and deletes every task and container in the
// namespace of ctx and returns their ids.
func deleteAllContainers(ctx context.Context, c *client.Client) []string {
	return ctrd.DeleteAll(ctx, c)
}

// pollShimsGone waits up to timeout for d's shims in namespace ns (all
// namespaces for "") to exit, and returns those still alive.
func pollShimsGone(d *daemon, ns string, timeout time.Duration) []int {
	var pids []int
	pollUntil(timeout, func() bool {
		pids = d.shimPids(ns)
		return len(pids) == 0
	})
	return pids
}

// killTree SIGKILLs each pid's children, then the pid.
func killTree(pids []int) {
	for _, p := range listProcs() {
		for _, pid := range pids {
			if p.ppid == pid {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// describe renders pids with their command lines, for failure messages.
func describe(pids []int) []string {
	out := make([]string, len(pids))
	for i, pid := range pids {
		out[i] = fmt.Sprintf("%d %q", pid, cmdlineOf(pid))
	}
	return out
}
