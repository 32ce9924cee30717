package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/image"
)

// suite holds what the whole test binary shares: one daemon per containerd
// version (started by the first test that asks for it, stopped by
// TestMain), the image archive, and the shim binary.
var suite = struct {
	runID string // random; prefixes every namespace so runs never collide

	mu      sync.Mutex
	daemons map[string]*daemonSlot // by daemonVersion.name; guarded by mu

	imageOnce sync.Once
	archive   []byte // OCI archive of the busybox image
	imageErr  error

	shimOnce sync.Once
	shim     string // shim under test, "" when the runtime is the runc shim
	shimErr  error
	buildDir string // where the suite built the shim, removed at the end
}{daemons: map[string]*daemonSlot{}}

// daemonSlot starts one version's daemon at most once.
type daemonSlot struct {
	once sync.Once
	d    *daemon
	err  error
}

func TestMain(m *testing.M) {
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	suite.runID = hex.EncodeToString(id)
	var err error
	if known.entries, err = loadKnownDifferences(knownDifferencesFile); err != nil {
		fmt.Fprintln(os.Stderr, "tests: the list of known differences:", err)
		os.Exit(1)
	}

	var r *reaper
	if os.Geteuid() == 0 {
		if r, err = startReaper(); err != nil {
			fmt.Fprintln(os.Stderr, "tests: become child subreaper:", err)
			os.Exit(1)
		}
	}
	fmt.Println(describeRunc())
	code := m.Run()

	suite.mu.Lock()
	var problems []string
	for _, slot := range suite.daemons {
		if slot.d != nil {
			problems = append(problems, slot.d.teardown()...)
		}
	}
	suite.mu.Unlock()
	if suite.buildDir != "" {
		os.RemoveAll(suite.buildDir)
	}
	if r != nil {
		r.Stop()
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "LEAK:", p)
	}
	if len(problems) > 0 && code == 0 {
		fmt.Fprintln(os.Stderr, "FAIL: resources leaked (see LEAK lines)")
		code = 1
	}
	// The marks against tests/known-differences.toml: one emitted that
	// the list does not have, or a deterministic one a passing test did
	// not show, fails the run (a gap that closes must leave the list).
	differences := known.check(runtimeUnderTest())
	for _, p := range differences {
		fmt.Fprintln(os.Stderr, "KNOWN DIFFERENCES:", p)
	}
	if len(differences) > 0 {
		fmt.Fprintln(os.Stderr, "FAIL: the run's known differences do not match tests/"+knownDifferencesFile+" (see KNOWN DIFFERENCES lines)")
		code = 1
	}
	os.Exit(code)
}

// requireRoot skips t when the test binary is not root: a daemon, runc
// and overlay mounts all need it.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root (containerd, runc, overlayfs mounts); run as root: sudo -E go test ./tests/...")
	}
}

// daemonFor returns the running daemon for v, starting it on first use.
// It skips t when v is not installed.
func daemonFor(t *testing.T, v daemonVersion) *daemon {
	t.Helper()
	requireRoot(t)
	if why := v.missing(); why != "" {
		t.Skip(why)
	}
	shim := shimUnderTest(t)

	suite.mu.Lock()
	slot, ok := suite.daemons[v.name]
	if !ok {
		slot = &daemonSlot{}
		suite.daemons[v.name] = slot
	}
	suite.mu.Unlock()
	slot.once.Do(func() {
		slot.d, slot.err = startDaemon(v, shim)
		if slot.err != nil && slot.d != nil {
			_ = slot.d.teardown()
			slot.d = nil
		}
	})
	if slot.err != nil {
		t.Fatal(slot.err)
	}
	return slot.d
}

// imageArchive returns the busybox OCI archive, built once per run.
func imageArchive(t *testing.T) []byte {
	t.Helper()
	suite.imageOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shimtest-image-")
		if err != nil {
			suite.imageErr = err
			return
		}
		defer os.RemoveAll(dir)
		rootfs := filepath.Join(dir, "rootfs")
		if err := image.BuildRootfs(rootfs, image.BusyboxPath); err != nil {
			suite.imageErr = fmt.Errorf("%w (is busybox-static installed? tests/install-deps.sh)", err)
			return
		}
		var buf bytes.Buffer
		if _, err := image.WriteArchive(&buf, rootfs, imageRef); err != nil {
			suite.imageErr = err
			return
		}
		suite.archive = buf.Bytes()
	})
	if suite.imageErr != nil {
		t.Fatal(suite.imageErr)
	}
	return suite.archive
}
