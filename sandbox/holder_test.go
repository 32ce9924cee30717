package sandbox

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// TestHolderStopSignals: SIGTERM and SIGINT end a ready holder with
// status 0, as they end the pause process, whether or not it is PID 1 of
// the pod's PID namespace. (StopSandbox would hide a holder that missed
// its SIGTERM: it SIGKILLs after the timeout.)
func TestHolderStopSignals(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  unix.Signal
		pid  cri.NamespaceMode
	}{
		{"SIGTERM, pod PID namespace", unix.SIGTERM, cri.NamespaceMode_POD},
		{"SIGINT, pod PID namespace", unix.SIGINT, cri.NamespaceMode_POD},
		{"SIGTERM, host PID namespace", unix.SIGTERM, cri.NamespaceMode_NODE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newPodHarness(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := podConfig(t, &cri.PodSandboxConfig{Linux: &cri.LinuxPodSandboxConfig{
				SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Pid: tc.pid}},
			}})
			if err := h.m.CreateSandbox(ctx, CreateSandboxRequest{ID: "pod1", Bundle: h.bundle, Config: cfg}); err != nil {
				t.Fatal(err)
			}
			st, err := h.m.StartSandbox(ctx, "pod1")
			if err != nil {
				t.Fatal(err)
			}
			waitInStopWait(t, st.Pid)
			if err := unix.Kill(st.Pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			got, err := h.m.WaitSandbox(ctx, "pod1")
			if err != nil || got.State != PodStopped || got.ExitStatus != 0 {
				t.Errorf("WaitSandbox after %v: got %+v %v, want stopped, 0", tc.sig, got, err)
			}
		})
	}
}

// waitInStopWait waits until the holder's main thread is in waitStop's
// rt_sigtimedwait (proc(5): /proc/<pid>/task/<tid>/syscall names the
// system call a blocked thread is in): a signal before that ends it with
// 143, which is not what the test is about.
func waitInStopWait(t *testing.T, pid int) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/task/%d/syscall", pid, pid)
	want := strconv.Itoa(unix.SYS_RT_SIGTIMEDWAIT) + " "
	testutil.WaitFor(t, 5*time.Second, "the holder in rt_sigtimedwait", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.HasPrefix(string(b), want)
	})
}

// TestHolderFootprint: the holder runs with one P and a bounded number
// of threads for the pod's lifetime (startHolder's GOMAXPROCS, waitStop
// instead of os/signal). Each P and thread is memory every pod pays.
func TestHolderFootprint(t *testing.T) {
	// The shipped holder has 3 or 4 threads: the main thread, sysmon and
	// one or two the runtime started while the main goroutine was held
	// on the main thread; os/signal's took it to 6 to 8. The race-enabled
	// test binary, the holder here, may add one for its runtime.
	const maxThreads = 5
	h := newPodHarness(t)
	ctx := context.Background()
	st := h.startPod(ctx)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var procs []string
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
			procs = append(procs, v)
		}
	}
	// The last one is what the runtime reads (exec.Cmd keeps the last of
	// duplicates), so a GOMAXPROCS in the shim's environment is replaced.
	if len(procs) != 1 || procs[0] != "1" {
		t.Errorf("holder's GOMAXPROCS: got %q, want [1]", procs)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) > maxThreads {
		t.Errorf("holder threads: got %d, want at most %d", len(tasks), maxThreads)
	}
}
