package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"google.golang.org/protobuf/types/known/anypb"
)

// badCase is one malformed or wrong-state request sent straight to the
// shim over ttrpc, so that the shim, not containerd, answers.
type badCase struct {
	name string
	call func(ctx context.Context, api shimTaskAPI) error
	// want is the errdefs class a production shim returns: a malformed
	// id or path is InvalidArgument (the request can never succeed as
	// written); a well-formed but absent bundle, config.json or task is
	// NotFound (it could succeed once the thing exists); an operation in
	// the wrong state is FailedPrecondition; an id in use AlreadyExists.
	want string
	// upstream is what containerd-shim-runc-v2 answers when it differs
	// from want; the suite asserts it when validating itself against the
	// runc shim, so that a change upstream is noticed.
	upstream string
}

// TestShimBadInput sends bad requests to a pod shim that serves a running
// container, over task API v2 and (for containerd 2.x) v3, and checks
// the errdefs class of each answer. Afterwards the running container must
// be undisturbed (still running, output still flowing), the shim alive,
// and the pod must still accept a new container.
func TestShimBadInput(t *testing.T) {
	requireRoot(t)
	for _, v := range daemonVersions() {
		t.Run(v.name, func(t *testing.T) { testShimBadInput(t, newEnv(t, v)) })
	}
}

func testShimBadInput(t *testing.T, e *env) {
	victim := e.run(ctrSpec{id: "victim", pod: "badpod", args: []string{"sh", "-c",
		`i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done`}})
	victim.waitOutput(t, "tick-1\n", time.Minute)
	shim := victim.shimPid()

	address, version, err := shimAddress(e.bundleDir(victim.id))
	if err != nil {
		t.Fatal(err)
	}
	conn := dialShim(t, address)
	apis := map[string]shimTaskAPI{}
	if isSandboxRuntime() || version == 2 {
		apis["v2"] = taskV2{taskv2.NewTTRPCTaskClient(conn)}
	}
	// containerd 2.x speaks v3 to shims that offer it; the upstream runc
	// shim of 2.x registers only v3.
	if !e.d.version.legacy() {
		apis["v3"] = taskV3{taskv3.NewTTRPCTaskClient(conn)}
	}

	bundles := newBundleMaker(t, e)
	cases := badCases(victim.id, bundles)
	for _, name := range []string{"v2", "v3"} {
		api, ok := apis[name]
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
					defer cancel()
					err := tc.call(ctx, api)
					want := tc.want
					if !isSandboxRuntime() && tc.upstream != "" {
						want = tc.upstream
					}
					if got := errClass(err); got != want {
						t.Errorf("got %s, want %s (error: %v)", got, want, err)
					}
				})
			}
			removeStrays(t, e.ctx, api)
		})
	}

	if !alive(shim) {
		t.Fatalf("shim %d died from bad input", shim)
	}
	if got := victim.status(); got != client.Running {
		t.Fatalf("victim status after bad input = %q, want %q", got, client.Running)
	}
	n := lastTick(victim.stdout.Bytes())
	victim.waitOutput(t, fmt.Sprintf("tick-%d\n", n+2), time.Minute)
	if got := victim.shimPid(); got != shim {
		t.Errorf("victim's shim = %d, want %d", got, shim)
	}

	after := e.run(ctrSpec{id: "after", pod: "badpod", args: []string{"echo", "still-serving"}})
	if code := after.wait(time.Minute); code != 0 {
		t.Errorf("new container in the pod: exit code = %d, want 0", code)
	}
	after.delete()
	if got, want := string(after.stdout.Bytes()), "still-serving\n"; got != want {
		t.Errorf("new container in the pod: stdout = %q, want %q", got, want)
	}
	victim.kill(syscall.SIGKILL)
	if code := victim.wait(time.Minute); code != 137 {
		t.Errorf("victim exit code after SIGKILL = %d, want 137", code)
	}
	victim.delete()
}

func badCases(victim string, b *bundleMaker) []badCase {
	unknownOptions := &anypb.Any{TypeUrl: "example.com/no.such.Options", Value: []byte{0x0a, 0x01, 'x'}}
	create := func(id, bundle string, opts *anypb.Any) func(context.Context, shimTaskAPI) error {
		return func(ctx context.Context, api shimTaskAPI) error { return api.create(ctx, id, bundle, opts) }
	}
	createIO := func(id, bundle, stdout, stderr string) func(context.Context, shimTaskAPI) error {
		return func(ctx context.Context, api shimTaskAPI) error { return api.createIO(ctx, id, bundle, stdout, stderr) }
	}
	return []badCase{
		{name: "create-duplicate-id", call: create(victim, b.valid("dup"), nil), want: "AlreadyExists", upstream: "Unknown"},
		{name: "state-unknown-id", call: func(ctx context.Context, api shimTaskAPI) error {
			_, err := api.state(ctx, "no-such-task")
			return err
		}, want: "NotFound"},
		{name: "kill-unknown-id", call: func(ctx context.Context, api shimTaskAPI) error {
			return api.kill(ctx, "no-such-task", uint32(syscall.SIGKILL))
		}, want: "NotFound"},
		{name: "delete-unknown-id", call: func(ctx context.Context, api shimTaskAPI) error {
			return api.delete(ctx, "no-such-task")
		}, want: "NotFound"},
		{name: "start-running-task", call: func(ctx context.Context, api shimTaskAPI) error {
			return api.start(ctx, victim)
		}, want: "FailedPrecondition", upstream: "Unknown"},
		{name: "delete-running-task", call: func(ctx context.Context, api shimTaskAPI) error {
			return api.delete(ctx, victim)
		}, want: "FailedPrecondition", upstream: "Unknown"},
		{name: "create-empty-id", call: create("", b.valid("empty-id"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-1000-char-id", call: create(strings.Repeat("a", 1000), b.valid("long-id"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-id-with-slash", call: create("a/b", b.valid("slash-id"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-id-dotdot", call: create("..", b.valid("dotdot-id"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-id-escaping", call: create("../../escape", b.valid("escape-id"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-bundle-relative", call: create("rel-bundle", "relative/bundle", nil), want: "InvalidArgument", upstream: "NotFound"},
		// The runc shim resolves "" against its working directory, which
		// is the bundle of the pod's first task, and creates a second task
		// from that bundle.
		{name: "create-bundle-empty", call: create("empty-bundle", "", nil), want: "InvalidArgument", upstream: "OK"},
		{name: "create-bundle-missing", call: create("missing-bundle", b.path("does-not-exist"), nil), want: "NotFound"},
		{name: "create-bundle-without-config", call: create("no-config", b.without("no-config"), nil), want: "NotFound", upstream: "Unknown"},
		{name: "create-garbage-config", call: create("garbage-config", b.garbage("garbage"), nil), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-unknown-options", call: create("unknown-options", b.valid("options"), unknownOptions), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-log-uri-with-host", call: createIO("log-host", b.valid("log-host"), "binary://host/no/such/logger", ""), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-log-uri-unknown-scheme", call: createIO("log-scheme", b.valid("log-scheme"), "syslog:///dev/log", ""), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-log-binary-missing", call: createIO("log-missing", b.valid("log-missing"), "binary:///no/such/logger", ""), want: "NotFound", upstream: "Unknown"},
		{name: "create-log-file-under-a-file", call: createIO("log-notdir", b.valid("log-notdir"), "file://"+b.path("log-notdir")+"/config.json/c.log", ""), want: "InvalidArgument", upstream: "Unknown"},
		{name: "create-log-uri-on-stderr-only", call: createIO("log-stderr", b.valid("log-stderr"), "", "file://"+b.path("log-stderr")+"/c.log"), want: "InvalidArgument", upstream: "Unknown"},
	}
}

// removeStrays deletes any task a create case made although it should
// have failed (the case reported it), so that the pod can drain.
func removeStrays(t *testing.T, ctx context.Context, api shimTaskAPI) {
	for _, id := range []string{"rel-bundle", "empty-bundle", "missing-bundle", "no-config", "garbage-config", "unknown-options",
		"log-host", "log-scheme", "log-missing", "log-notdir", "log-stderr"} {
		if _, err := api.state(ctx, id); err == nil {
			t.Logf("deleting task %s, created by a request that should have failed", id)
			_ = api.kill(ctx, id, uint32(syscall.SIGKILL))
			_ = api.delete(ctx, id)
		}
	}
}

// bundleMaker writes bundle directories for direct Create calls.
type bundleMaker struct {
	t    *testing.T
	e    *env
	root string
}

func newBundleMaker(t *testing.T, e *env) *bundleMaker {
	root := filepath.Join(e.d.dir, "bundles", e.ns)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return &bundleMaker{t: t, e: e, root: root}
}

func (b *bundleMaker) path(name string) string { return filepath.Join(b.root, name) }

// without makes an empty bundle directory.
func (b *bundleMaker) without(name string) string {
	dir := b.path(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	return dir
}

// garbage makes a bundle whose config.json is not JSON.
func (b *bundleMaker) garbage(name string) string {
	dir := b.without(name)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{this is not json"), 0o644); err != nil {
		b.t.Fatal(err)
	}
	return dir
}

// valid makes a bundle a shim could create a task from: a config.json
// running `true` in the daemon's busybox rootfs, read-only.
func (b *bundleMaker) valid(name string) string {
	dir := b.without(name)
	spec, err := oci.GenerateSpec(b.e.ctx, nil, &containers.Container{ID: name},
		oci.WithRootFSPath(b.e.d.rootfs), oci.WithRootFSReadonly(), oci.WithProcessArgs("true"))
	if err != nil {
		b.t.Fatal(err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	return dir
}

var tickRE = regexp.MustCompile(`tick-(\d+)\n`)

// lastTick returns the highest tick number in out.
func lastTick(out []byte) int {
	n := -1
	for _, m := range tickRE.FindAllSubmatch(out, -1) {
		if v, err := strconv.Atoi(string(m[1])); err == nil && v > n {
			n = v
		}
	}
	return n
}
