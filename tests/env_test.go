package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// env is one test's view of a daemon: a namespace of its own, so that
// containers, images, shims, runc state and cgroups never collide between
// tests or runs, and a context carrying it. Its cleanup deletes what the
// test left and fails the test if a shim, a zombie or a mount outlives the
// test's containers.
type env struct {
	t   *testing.T
	d   *daemon
	ns  string
	ctx context.Context
	c   *client.Client
	img client.Image // imported on first use
	// sockets are the shim socket paths of the tasks env.create made; a
	// shim must remove its socket when it exits. Shared with sub-envs.
	sockets *[]string
}

// testTimeout bounds each test's containerd calls.
const testTimeout = 5 * time.Minute

func newEnv(t *testing.T, v daemonVersion) *env {
	t.Helper()
	return newEnvOn(t, daemonFor(t, v), testTimeout)
}

// newEnvOn is newEnv on daemon d, with the test's containerd calls bounded
// by timeout.
func newEnvOn(t *testing.T, d *daemon, timeout time.Duration) *env {
	t.Helper()
	ns := namespaceFor(t)
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), timeout)
	e := &env{t: t, d: d, ns: ns, ctx: ctx, c: d.client, sockets: new([]string)}
	logStart := d.logSize()
	t.Cleanup(func() {
		cancel()
		e.cleanup(logStart)
		recordRun(t, d.version.name)
	})
	return e
}

// newDefaultEnv is newEnv on the daemon named by SHIM_TEST_CONTAINERD.
func newDefaultEnv(t *testing.T) *env {
	t.Helper()
	requireRoot(t)
	return newEnv(t, defaultDaemonVersion(t))
}

var nsUnsafe = regexp.MustCompile(`[^a-z0-9]+`)

// namespaceFor derives a containerd namespace from the run id and the test
// name. containerd allows [A-Za-z0-9] runs joined by single [._-], at most
// 76 characters; a hash keeps truncated names distinct.
func namespaceFor(t *testing.T) string {
	sum := sha256.Sum256([]byte(t.Name()))
	name := strings.Trim(nsUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 48 {
		name = strings.Trim(name[:48], "-")
	}
	return fmt.Sprintf("st%s-%s-%s", suite.runID, name, hex.EncodeToString(sum[:3]))
}

// image returns the busybox image, imported into the test's namespace and
// unpacked with the overlayfs snapshotter on first use.
func (e *env) image() client.Image {
	e.t.Helper()
	if e.img != nil {
		return e.img
	}
	imgs, err := e.c.Import(e.ctx, bytes.NewReader(imageArchive(e.t)))
	if err != nil {
		e.t.Fatalf("import busybox image: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Name != imageRef {
		e.t.Fatalf("import busybox image: got %v, want one image %s", imgs, imageRef)
	}
	img := client.NewImage(e.c, imgs[0])
	if err := img.Unpack(e.ctx, snapshotter); err != nil {
		e.t.Fatalf("unpack busybox image with %s: %v", snapshotter, err)
	}
	e.img = img
	return img
}

// sub returns e for use inside subtest t (helpers fail t, which must be
// the calling goroutine's test): same daemon, namespace and image.
func (e *env) sub(t *testing.T) *env {
	e.image()
	c := *e
	c.t = t
	return &c
}

// bundleDir is where containerd puts the bundle (config.json, rootfs
// mount, shim address) of task id.
func (e *env) bundleDir(id string) string {
	return filepath.Join(e.d.state, "io.containerd.runtime.v2.task", e.ns, id)
}

// cleanup runs after the test: delete what it left, then check that its
// shims exited, that nothing became a zombie and that no mount is left.
func (e *env) cleanup(logStart int64) {
	t := e.t
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), e.ns), time.Minute)
	defer cancel()
	if ids := deleteAllContainers(ctx, e.c); len(ids) > 0 {
		t.Logf("cleanup: deleted containers the test left: %v", ids)
	}
	shims := pollShimsGone(e.d, e.ns, 20*time.Second)
	if len(shims) > 0 && !knownDifference(t, e.d.version.name, "shim-outlives-its-tasks",
		"shim processes of namespace %s still running 20s after its last task was deleted (killed here): %v", e.ns, describe(shims)) {
		t.Errorf("shim processes of namespace %s still running 20s after its last task was deleted: %v", e.ns, describe(shims))
	}
	shimSet := map[int]bool{}
	for _, pid := range shims {
		shimSet[pid] = true
	}
	var zombies []proc
	if !pollUntil(5*time.Second, func() bool {
		reapShims()
		zombies = strayZombies(shimSet)
		return len(zombies) == 0
	}) {
		t.Errorf("zombies whose parent is a shim or gone: %v", zombies)
	}
	killTree(shims)
	if mounts := unmountAll(filepath.Join(e.d.state, "io.containerd.runtime.v2.task", e.ns)); len(mounts) > 0 {
		t.Errorf("mounts left in the namespace's bundles after its tasks were deleted: %v", mounts)
	}
	if len(shims) == 0 {
		e.checkSocketsRemoved()
	}
	if t.Failed() {
		t.Log(e.d.logTail(logStart, 64<<10))
	}
}

// noteSocket records the shim socket of task id, read from its bundle.
func (e *env) noteSocket(id string) {
	address, _, err := shimAddress(e.bundleDir(id))
	if err != nil {
		e.t.Errorf("task %s: %v", id, err)
		return
	}
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		e.t.Errorf("task %s: shim address %q is not a unix:// path", id, address)
		return
	}
	if slices.Contains(*e.sockets, path) {
		return
	}
	*e.sockets = append(*e.sockets, path)
	// A file socket (an abstract one would be reachable from any process
	// in the network namespace, containers included) in a directory only
	// its owner can enter.
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		e.t.Errorf("task %s: shim address %s is not a socket file (%v)", id, path, err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil {
		e.t.Errorf("task %s: shim socket directory: %v", id, err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		e.t.Errorf("task %s: shim socket directory %s has mode %v, want no access for group and others", id, filepath.Dir(path), fi.Mode())
	}
}

// checkSocketsRemoved fails the test if a shim that has exited left its
// socket file behind, and removes it. The upstream runc shim does leave
// it when the bundle of the pod's first task (which holds the address
// file it cleans up by) was deleted before the last task; for that shim
// the suite only logs it.
func (e *env) checkSocketsRemoved() {
	for _, path := range *e.sockets {
		if _, err := os.Lstat(path); err != nil {
			continue
		}
		if isSandboxRuntime() {
			e.t.Errorf("shim socket %s left behind after its shim exited", path)
		} else {
			e.t.Logf("upstream shim left its socket %s behind", path)
		}
		_ = os.Remove(path)
	}
}

// pollUntil calls cond every 20ms until it returns true or timeout passes;
// it returns cond's last result.
func pollUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// contextWithTimeout derives a context from the test's, bounded by d.
func contextWithTimeout(e *env, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, d)
}

// countFromEnv is the positive count in the environment variable name,
// or def when it is unset.
func countFromEnv(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, s)
	}
	return n
}
