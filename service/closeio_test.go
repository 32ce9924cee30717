package service

import (
	"context"
	"testing"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCloseIOUnknownID: CloseIO for a container the shim does not hold is
// NotFound whatever the stdin flag says, as in containerd-shim-runc-v2
// (getContainer first) and as DESIGN.md asks of every unknown id.
func TestCloseIOUnknownID(t *testing.T) {
	tk, _ := newTestTask(t)
	for _, stdin := range []bool{true, false} {
		_, err := tk.methods()["CloseIO"](context.Background(), unmarshalFrom(&taskapi.CloseIORequest{ID: "nosuch", Stdin: stdin}))
		if got := status.Code(err); got != codes.NotFound {
			t.Errorf("CloseIO(nosuch, stdin=%v): got %v (%v), want NotFound", stdin, got, err)
		}
	}
}
