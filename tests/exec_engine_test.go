package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hardeningProbe prints what an exec'd process is allowed: its ids, cwd,
// env, seccomp mode, no_new_privs, capability sets, NOFILE limits and
// whether it is in its container init's cgroups.
const hardeningProbe = `id; pwd; echo "env=$ENGINE_TEST"
grep -E '^(Seccomp|NoNewPrivs|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status
ulimit -Sn; ulimit -Hn
if [ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ]; then echo same-cgroup; else echo other-cgroup; cat /proc/self/cgroup /proc/1/cgroup; fi`

// TestExecEngines: an exec with a hardened process spec (a user with
// additional gids, a cwd, env, no_new_privs, reduced and ambient
// capabilities, an rlimit) in a container with containerd's default
// seccomp profile, run once per runtime engine: the runc binary and the
// libcontainer helper. Each must apply every setting, and both must
// print the same. The helper's runs are counted to prove which engine
// ran. AppArmor and SELinux labels are not checked: neither is enabled
// on these hosts.
func TestExecEngines(t *testing.T) {
	if !isSandboxRuntime() {
		t.Skip("the runtime engine is an option of this shim only")
	}
	e := newDefaultEnv(t)
	want := []string{
		"uid=1000 gid=1000 groups=5,7",
		"/tmp",
		"env=yes",
		// In /proc/self/status's order.
		"CapInh:\t0000000000000020", // CAP_KILL
		"CapPrm:\t0000000000000020",
		"CapEff:\t0000000000000020",
		"CapBnd:\t0000000000000021", // CAP_CHOWN, CAP_KILL
		"CapAmb:\t0000000000000020",
		"NoNewPrivs:\t1",
		"Seccomp:\t2",
		"777", "777",
		"same-cgroup",
	}
	outputs := map[string]string{}
	for _, engine := range []string{"runc", "libcontainer"} {
		t.Run(engine, func(t *testing.T) {
			base, err := runcRuntimeOptions(nil)
			if err != nil {
				t.Fatal(err)
			}
			ropts, err := withEngine(base, engine)
			if err != nil {
				t.Fatal(err)
			}
			r := e.run(ctrSpec{id: "eng-" + engine, args: []string{"sh", "-c", "echo ready; exec sleep 1000"},
				opts: []oci.SpecOpts{seccomp.WithDefaultProfile()}, runtimeOpts: ropts})
			r.waitOutput(t, "ready\n", time.Minute)
			before := helperRuns(t, e.d)

			spec, err := r.container.Spec(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			p := *spec.Process
			p.Args = []string{"sh", "-c", hardeningProbe}
			p.Env = append(slices.Clone(p.Env), "ENGINE_TEST=yes")
			p.Cwd = "/tmp"
			p.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{5, 7}}
			p.NoNewPrivileges = true
			p.Capabilities = &specs.LinuxCapabilities{
				Bounding:    []string{"CAP_CHOWN", "CAP_KILL"},
				Effective:   []string{"CAP_KILL"},
				Permitted:   []string{"CAP_KILL"},
				Inheritable: []string{"CAP_KILL"},
				Ambient:     []string{"CAP_KILL"},
			}
			p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 777, Soft: 777}}
			fifoDir := filepath.Join(e.d.dir, "fifo")
			if err := os.MkdirAll(fifoDir, 0o700); err != nil {
				t.Fatal(err)
			}
			x := &execProc{id: "probe", stdout: newSyncBuffer(), stderr: newSyncBuffer()}
			x.proc, err = r.task.Exec(e.ctx, x.id, &p, cio.NewCreator(cio.WithStreams(nil, x.stdout, x.stderr), cio.WithFIFODir(fifoDir)))
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if x.exitC, err = x.proc.Wait(e.ctx); err != nil {
				t.Fatal(err)
			}
			if err := x.proc.Start(e.ctx); err != nil {
				t.Fatalf("start exec: %v", err)
			}
			if code := x.finish(t, e); code != 0 {
				t.Errorf("exit code = %d, want 0; stderr %q", code, x.stderr.Bytes())
			}
			out := string(x.stdout.Bytes())
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if !slices.Equal(lines, want) {
				t.Errorf("the exec's view of itself:\n got %q\nwant %q\nstderr %q", lines, want, x.stderr.Bytes())
			}
			outputs[engine] = out
			runs := helperRuns(t, e.d) - before
			if wantRuns := map[string]int{"runc": 0, "libcontainer": 1}[engine]; runs != wantRuns {
				t.Errorf("exec helper ran %d times, want %d with engine %s", runs, wantRuns, engine)
			}
			r.kill(syscall.SIGKILL)
			r.wait(time.Minute)
			r.delete()
		})
	}
	if a, b := outputs["runc"], outputs["libcontainer"]; a != "" && b != "" && a != b {
		t.Errorf("the engines differ:\nrunc         %q\nlibcontainer %q", a, b)
	}
}
