package api_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestShimLinksNoGRPC guards what the copies are for: the
// shim binary must not link google.golang.org/grpc (its client, server and
// transport), which importing an upstream generated package with gRPC
// stubs would do. The small grpc/status and grpc/codes packages are linked
// on purpose: errgrpc maps errdefs errors to status codes with them.
func TestShimLinksNoGRPC(t *testing.T) {
	// go test puts its own GOROOT/bin first on the test binary's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the shim's packages: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "../../cmd/containerd-shim-sandbox-v2")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v: %s", err, stderr.String())
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "google.golang.org/grpc" || strings.HasPrefix(pkg, "google.golang.org/grpc/internal/transport") {
			t.Errorf("the shim links %s", pkg)
		}
	}
}
