package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cgroupValue reads a cgroup v1 file of pid's cgroup in the hierarchy of
// controller, e.g. ("memory", "memory.limit_in_bytes").
func cgroupValue(t *testing.T, pid int, controller, file string) string {
	t.Helper()
	path := cgroupPath(pid, controller)
	if path == "" {
		t.Fatalf("pid %d: no cgroup of controller %s in /proc/%d/cgroup", pid, controller, pid)
	}
	data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, path, file))
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return strings.TrimSpace(string(data))
}

// TestCRIUpdateContainerResources: the resources a container is created
// with are in its cgroup (below the pod's cgroup parent), and
// UpdateContainerResources changes them in place while it runs: memory
// limit, CPU quota, period and shares, and ContainerStatus reports them.
func TestCRIUpdateContainerResources(t *testing.T) { testCRIUpdateContainerResources(t, newCRIEnv(t)) }

// testCRIUpdateContainerResources is TestCRIUpdateContainerResources on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIUpdateContainerResources(t *testing.T, e *criEnv) {
	p := e.runPod("update")
	id := p.run("app", []string{"sleep", "1000"}, func(c *runtimeapi.ContainerConfig) {
		c.Linux.Resources = &runtimeapi.LinuxContainerResources{
			MemoryLimitInBytes: 128 << 20, CpuPeriod: 100000, CpuQuota: 20000, CpuShares: 256,
		}
	})
	pid := e.taskPid(id)
	if got, want := cgroupPath(pid, "memory"), p.config.Linux.CgroupParent+"/"+id; got != want {
		t.Errorf("container's memory cgroup = %q, want %q (the pod's cgroup parent / id)", got, want)
	}
	check := func(when string, mem int64, quota, shares int64) {
		t.Helper()
		for _, c := range []struct{ controller, file, want string }{
			{"memory", "memory.limit_in_bytes", fmt.Sprint(mem)},
			{"cpu", "cpu.cfs_quota_us", fmt.Sprint(quota)},
			{"cpu", "cpu.cfs_period_us", "100000"},
			{"cpu", "cpu.shares", fmt.Sprint(shares)},
		} {
			if got := cgroupValue(t, pid, c.controller, c.file); got != c.want {
				t.Errorf("%s: %s = %s, want %s", when, c.file, got, c.want)
			}
		}
	}
	check("at create", 128<<20, 20000, 256)

	_, err := e.d.rt.UpdateContainerResources(e.ctx, &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: id,
		Linux: &runtimeapi.LinuxContainerResources{
			MemoryLimitInBytes: 64 << 20, CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512,
		},
	})
	criNotImplemented(t, err, "UpdateContainerResources (task Update)")
	if err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	check("after UpdateContainerResources", 64<<20, 50000, 512)
	res := e.status(id).GetResources().GetLinux()
	if res.GetMemoryLimitInBytes() != 64<<20 || res.GetCpuQuota() != 50000 || res.GetCpuShares() != 512 {
		t.Errorf("ContainerStatus resources = %v, want memory 64 MiB, quota 50000, shares 512", res)
	}
	if got := e.execSync(id, 10, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"); strings.TrimSpace(string(got)) != fmt.Sprint(64<<20) {
		t.Errorf("memory limit seen inside the container = %q, want %d", got, 64<<20)
	}
	e.stopContainer(id, 0)
	e.removeContainer(id)
	p.remove()
}

// TestCRIContainerStats: ContainerStats reports the container's CPU and
// memory use from its cgroup (task Metrics through the shim).
func TestCRIContainerStats(t *testing.T) { testCRIContainerStats(t, newCRIEnv(t)) }

// testCRIContainerStats is TestCRIContainerStats on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIContainerStats(t *testing.T, e *criEnv) {
	p := e.runPod("stats")
	id := p.run("app", []string{"sh", "-c", "echo ready; exec sleep 1000"})
	waitLogLine(t, p.logPath("app"), "ready", 30*time.Second)
	resp, err := e.d.rt.ContainerStats(e.ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
	criNotImplemented(t, err, "ContainerStats (task Stats)")
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	st := resp.GetStats()
	if st.GetAttributes().GetId() != id {
		t.Errorf("stats of %q, want %q", st.GetAttributes().GetId(), id)
	}
	if st.GetMemory().GetWorkingSetBytes().GetValue() == 0 && st.GetMemory().GetUsageBytes().GetValue() == 0 {
		t.Errorf("memory stats all zero: %v", st.GetMemory())
	}
	if st.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 {
		t.Errorf("CPU usage zero: %v", st.GetCpu())
	}
	e.stopContainer(id, 0)
	e.removeContainer(id)
	p.remove()
}

// TestCRIOOMKilled: a container that exceeds its memory limit is killed
// by the kernel and CRI reports exit 137 with reason OOMKilled (from the
// shim's TaskOOM event / the cgroup's OOM counter).
func TestCRIOOMKilled(t *testing.T) { testCRIOOMKilled(t, newCRIEnv(t)) }

// testCRIOOMKilled is TestCRIOOMKilled on e: with or without a pause container
// (TestCRISandboxerPodSteps).
func testCRIOOMKilled(t *testing.T, e *criEnv) {
	p := e.runPod("oom")
	// dd allocates its 64 MiB block before reading into it.
	id := p.run("hog", []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}, func(c *runtimeapi.ContainerConfig) {
		c.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20}
	})
	st := e.waitState(id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	if st.ExitCode != 137 {
		t.Errorf("exit code %d, want 137 (SIGKILL by the OOM killer)", st.ExitCode)
	}
	if st.Reason != "OOMKilled" {
		// containerd 2.4.2's CRI also reads the OOM counter through Stats
		// at exit; 2.2 and 1.6 rely on the TaskOOM event alone, so the
		// shim must publish it before the TaskExit on every daemon.
		t.Errorf("reason %q, want OOMKilled (containerd %s)", st.Reason, e.d.version.name)
	}
	e.removeContainer(id)
	p.remove()
}
