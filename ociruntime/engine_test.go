package ociruntime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/internal/testutil"
)

// fakeHelper writes a script standing in for the exec helper: it records
// "<cwd> <args>" in calls, copies the process spec it reads from its
// --process-fd to spec, writes pid 4242 to the --pid-file, and with fail
// set logs an error line as runc does and exits 1.
func fakeHelper(t *testing.T, fail string) (helper, calls, spec string) {
	t.Helper()
	dir := t.TempDir()
	helper = filepath.Join(dir, ExecHelperName)
	calls = filepath.Join(dir, "calls")
	spec = filepath.Join(dir, "spec.json")
	script := `#!/bin/sh
echo "$(pwd) $*" >>` + calls + `
log= pidfile=
while [ $# -gt 1 ]; do
	case "$1" in
	--process-fd) cat <&"$2" >` + spec + `; shift ;;
	--pid-file) pidfile=$2; shift ;;
	--log) log=$2; shift ;;
	esac
	shift
done
if [ -n '` + fail + `' ]; then
	echo '{"level":"error","msg":"` + fail + `"}' >>"$log"
	exit 1
fi
echo 4242 >"$pidfile"
`
	if err := os.WriteFile(helper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return helper, calls, spec
}

// TestEngineExec: with the libcontainer engine an exec runs the helper,
// in the bundle, with runc's root for the namespace, the process spec,
// the pid file and the log; every other verb and, for a binary that is
// not a covered runc, the exec too, run the binary.
func TestEngineExec(t *testing.T) {
	tests := []struct {
		name       string
		engine     string
		version    string // what the binary says to --version
		wantHelper bool
	}{
		{name: "runc engine", engine: EngineRunc, version: "runc version 1.1.5", wantHelper: false},
		{name: "default engine", engine: "", version: "runc version 1.4.4", wantHelper: false},
		{name: "libcontainer, runc 1.1", engine: EngineLibcontainer, version: "runc version 1.1.5", wantHelper: true},
		{name: "libcontainer, runc 1.5", engine: EngineLibcontainer, version: "runc version 1.5.3", wantHelper: true},
		{name: "libcontainer, uncovered runc", engine: EngineLibcontainer, version: "runc version 1.9.0", wantHelper: false},
		{name: "libcontainer, crun", engine: EngineLibcontainer, version: "crun version 1.8", wantHelper: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			binary, binCalls := filepath.Join(dir, "runtime"), filepath.Join(dir, "calls")
			script := "#!/bin/sh\n[ \"$1\" = --version ] && { echo '" + tt.version + "'; exit 0; }\necho \"$*\" >>" + binCalls + "\n"
			if err := os.WriteFile(binary, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			helper, calls, specFile := fakeHelper(t, "")
			bundle, root := t.TempDir(), t.TempDir()
			r := New(Options{BinaryName: binary, Root: root, Engine: tt.engine}, "ns", bundle)
			r.helper = helper
			pidFile := filepath.Join(bundle, "exec-x.pid")
			proc := specs.Process{Args: []string{"/bin/true"}, Cwd: "/", Env: []string{"A=1"},
				User: specs.User{UID: 7, AdditionalGids: []uint32{5}}}
			err := r.Exec(context.Background(), "c1", proc, &runc.ExecOpts{Detach: true, PidFile: pidFile, LogFile: filepath.Join(bundle, "exec-x-log.json")})
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			_, statErr := os.Stat(calls)
			if got := statErr == nil; got != tt.wantHelper {
				t.Fatalf("helper ran = %v, want %v", got, tt.wantHelper)
			}
			if !tt.wantHelper {
				if got := readCalls(t, binCalls); len(got) != 1 || !strings.Contains(got[0], " exec ") {
					t.Errorf("binary calls = %q, want one exec", got)
				}
				return
			}
			want := bundle + " --root " + filepath.Join(root, "ns") + " --process-fd 3 --log " +
				filepath.Join(bundle, "exec-x-log.json") + " --pid-file " + pidFile + " c1"
			if got := readCalls(t, calls); len(got) != 1 || got[0] != want {
				t.Errorf("helper calls = %q, want [%q]", got, want)
			}
			data, err := os.ReadFile(specFile)
			if err != nil {
				t.Fatal(err)
			}
			var gotProc specs.Process
			if err := json.Unmarshal(data, &gotProc); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gotProc.Args, proc.Args) || gotProc.User.UID != 7 || !slices.Equal(gotProc.User.AdditionalGids, []uint32{5}) {
				t.Errorf("process spec = %+v, want %+v", gotProc, proc)
			}
		})
	}
}

// TestEngineExecError: a failed helper's error carries the line it
// logged, as a failed `runc exec` carries runc's.
func TestEngineExecError(t *testing.T) {
	tests := []struct {
		msg string
	}{
		{msg: "cannot exec in a stopped container"},
		{msg: "container does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			dir := t.TempDir()
			binary := filepath.Join(dir, "runtime")
			if err := os.WriteFile(binary, []byte("#!/bin/sh\necho 'runc version 1.1.5'\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			helper, _, _ := fakeHelper(t, tt.msg)
			bundle := t.TempDir()
			r := New(Options{BinaryName: binary, Root: t.TempDir(), Engine: EngineLibcontainer}, "ns", bundle)
			r.helper = helper
			err := r.Exec(context.Background(), "c1", specs.Process{Args: []string{"true"}},
				&runc.ExecOpts{Detach: true, PidFile: filepath.Join(bundle, "p"), LogFile: filepath.Join(bundle, "log.json")})
			if err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Exec = %v, want an error saying %q", err, tt.msg)
			}
		})
	}
}

// TestEngineExecSpecPipe: the process spec reaches the helper whole
// through its pipe, however large; a helper that does not read it
// neither hangs the exec nor passes for a success; and no fd or
// goroutine outlives the call.
func TestEngineExecSpecPipe(t *testing.T) {
	// Four times the default pipe buffer (64 KiB): a write made before
	// the helper starts, or not alongside its read, would block.
	big := specs.Process{Args: []string{"/bin/true"}, Env: []string{"BIG=" + strings.Repeat("x", 256<<10)}}
	small := specs.Process{Args: []string{"/bin/true"}}
	tests := []struct {
		name   string
		script string // the helper; "" for fakeHelper
		proc   specs.Process
		err    string // "" for success
	}{
		{name: "small spec", proc: small},
		{name: "spec over the pipe buffer", proc: big},
		{name: "helper fails before reading", script: "#!/bin/sh\nexit 1\n", proc: big, err: "did not terminate successfully"},
		{name: "helper exits 0 without reading", script: "#!/bin/sh\nexit 0\n", proc: big, err: "write the process spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			binary := filepath.Join(dir, "runtime")
			if err := os.WriteFile(binary, []byte("#!/bin/sh\necho 'runc version 1.1.5'\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			helper, _, specFile := fakeHelper(t, "")
			if tt.script != "" {
				if err := os.WriteFile(helper, []byte(tt.script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			bundle := t.TempDir()
			r := New(Options{BinaryName: binary, Root: t.TempDir(), Engine: EngineLibcontainer}, "ns", bundle)
			r.helper = helper
			exec := func(proc specs.Process) error {
				done := make(chan error, 1)
				go func() {
					done <- r.Exec(context.Background(), "c1", proc,
						&runc.ExecOpts{Detach: true, PidFile: filepath.Join(bundle, "p"), LogFile: filepath.Join(bundle, "log.json")})
				}()
				select {
				case err := <-done:
					return err
				case <-time.After(30 * time.Second):
					t.Fatal("Exec did not return")
					return nil
				}
			}
			// The first exec starts the binary's probe, which lasts.
			_ = exec(small)
			fds, gs := testutil.CountFDs(t), runtime.NumGoroutine()
			err := exec(tt.proc)
			if tt.err == "" && err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Exec = %v, want an error saying %q", err, tt.err)
			}
			if tt.err == "" {
				data, err := os.ReadFile(specFile)
				if err != nil {
					t.Fatal(err)
				}
				var got specs.Process
				if err := json.Unmarshal(data, &got); err != nil {
					t.Fatalf("spec the helper read (%d bytes): %v", len(data), err)
				}
				if !slices.Equal(got.Env, tt.proc.Env) || !slices.Equal(got.Args, tt.proc.Args) {
					t.Errorf("spec the helper read: %d env bytes, args %q; want %d, %q",
						len(strings.Join(got.Env, "")), got.Args, len(strings.Join(tt.proc.Env, "")), tt.proc.Args)
				}
			}
			var gotFDs, gotGs int
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				gotFDs, gotGs = testutil.CountFDs(t), runtime.NumGoroutine()
				if (gotFDs <= fds && gotGs <= gs) || time.Now().After(deadline) {
					break
				}
			}
			if gotFDs > fds {
				t.Errorf("fds after the exec: got %d, want %d\n%s", gotFDs, fds, testutil.ListFDs())
			}
			if gotGs > gs {
				t.Errorf("goroutines after the exec: got %d, want %d", gotGs, gs)
			}
		})
	}
}

// TestEngineHelperPath: the helper is looked up beside the running
// binary, and only for the libcontainer engine.
func TestEngineHelperPath(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{Engine: EngineLibcontainer}, "ns", t.TempDir())
	if want := filepath.Join(filepath.Dir(self), ExecHelperName); r.helper != want || !r.useHelper {
		t.Errorf("helper = %q (use %v), want %q", r.helper, r.useHelper, want)
	}
	if r := New(Options{}, "ns", t.TempDir()); r.useHelper || r.helper != "" {
		t.Errorf("default engine: helper = %q (use %v), want none", r.helper, r.useHelper)
	}
	for _, name := range []string{"", EngineRunc, EngineLibcontainer} {
		if !ValidEngine(name) {
			t.Errorf("ValidEngine(%q) = false", name)
		}
	}
	if ValidEngine("crun") {
		t.Error("ValidEngine(crun) = true")
	}
}

// TestHelperCovers: the helper runs only the detached exec it
// implements; anything more runs the binary.
func TestHelperCovers(t *testing.T) {
	started := make(chan int, 1)
	tests := []struct {
		name string
		opts *runc.ExecOpts
		want bool
	}{
		{name: "detached, pid file, log", opts: &runc.ExecOpts{Detach: true, PidFile: "p", LogFile: "l"}, want: true},
		{name: "no options", opts: nil, want: false},
		{name: "not detached", opts: &runc.ExecOpts{PidFile: "p"}, want: false},
		{name: "started channel", opts: &runc.ExecOpts{Detach: true, Started: started}, want: false},
		{name: "extra runc arguments", opts: &runc.ExecOpts{Detach: true, ExtraArgs: []string{"--preserve-fds", "1"}}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := helperCovers(tt.opts); got != tt.want {
				t.Errorf("helperCovers = %v, want %v", got, tt.want)
			}
		})
	}
}
