package sandbox

import (
	"context"
	"net"
	"testing"
)

// TestStartShimSandboxBundle: containerd 2.4 runs `start` for the
// sandbox id with a bundle that has no config.json (the Sandbox API's
// bundle: the spec is nil at CreateSandbox); the shim groups by the
// sandbox id, so the pod's later containers (annotated with it) reach the
// same shim, and the claim is taken for the sandbox id, which
// CreateSandbox consumes.
func TestStartShimSandboxBundle(t *testing.T) {
	sockDir := shortDir(t)
	sandboxBundle := t.TempDir()
	containerBundle := newBundle(t, map[string]string{annotationSandboxID: "pod1"})
	path := socketPath(sockDir, "/run/c.sock", "k8s.io", "pod1")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var claimed []string
	claim := func(ctx context.Context, conn net.Conn, id string) error {
		conn.Close()
		claimed = append(claimed, id)
		return nil
	}
	for _, c := range []struct{ id, bundle string }{{"pod1", sandboxBundle}, {"ctr1", containerBundle}} {
		shim, err := StartShim(context.Background(), StartConfig{
			ID:          c.id,
			Namespace:   "k8s.io",
			Bundle:      c.bundle,
			GRPCAddress: "/run/c.sock",
			SocketDir:   sockDir,
			Executable:  "/nonexistent/must-not-be-started",
			Claim:       claim,
		})
		if err != nil {
			t.Fatalf("StartShim(%s): %v", c.id, err)
		}
		if want := "unix://" + path; shim.Address != want {
			t.Errorf("StartShim(%s): got %q, want %q", c.id, shim.Address, want)
		}
	}
	if len(claimed) != 2 || claimed[0] != "pod1" || claimed[1] != "ctr1" {
		t.Errorf("claims: got %v, want [pod1 ctr1]", claimed)
	}
}
