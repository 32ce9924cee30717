package service

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// lockedBuffer is a log destination the server's goroutines and the test
// share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// panicService is a test-only ttrpc service, adapted by method like every
// task RPC, whose handler panics on purpose.
const panicService = "test.Panic"

// TestHandlerPanicRecovered: a handler's panic does not take the shim's
// ttrpc server (and with it the pod) down: the call is answered Internal,
// the panic is logged with its stack and the request's ids, and the next
// calls on the same server and connection are served, the pod's running
// container untouched.
func TestHandlerPanicRecovered(t *testing.T) {
	tk, _ := newTestTask(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tk.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: newBundle(t)}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := tk.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err != nil {
		t.Fatalf("Start: %v", err)
	}

	logs := &lockedBuffer{}
	logger := logrus.New()
	logger.SetOutput(logs)
	logger.SetFormatter(&logrus.JSONFormatter{})
	serverCtx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	client := serveWith(serverCtx, t, func(s *ttrpc.Server) {
		Register(s, tk)
		s.RegisterService(panicService, &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{
			"Panic": method(func(context.Context, *taskapi.StateRequest) (*taskapi.StateResponse, error) {
				panic("handler panics on purpose")
			}),
		}})
	})
	v2 := taskapi.NewTTRPCTaskClient(client)

	for i := range 2 {
		var resp taskapi.StateResponse
		err := client.Call(ctx, panicService, "Panic", &taskapi.StateRequest{ID: "c1", ExecID: "e1"}, &resp)
		if got := status.Code(err); got != codes.Internal {
			t.Fatalf("call %d of the panicking handler: got %v (%v), want Internal", i, got, err)
		}
		if !errdefs.IsInternal(errgrpc.ToNative(err)) {
			t.Errorf("call %d: ToNative(%v) is not ErrInternal", i, err)
		}
		if !strings.Contains(err.Error(), "handler panics on purpose") {
			t.Errorf("call %d: error %q does not name the panic", i, err)
		}
		st, err := v2.State(ctx, &taskapi.StateRequest{ID: "c1"})
		if err != nil || st.Status != task.Status_RUNNING {
			t.Fatalf("State(c1) after panic %d: got (%v, %v), want RUNNING", i, st, err)
		}
	}

	var entries []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if msg, _ := e["error"].(string); strings.Contains(msg, "handler panics on purpose") {
			entries = append(entries, e)
		}
	}
	if len(entries) != 2 {
		t.Fatalf("panic log entries: got %d, want 2; log:\n%s", len(entries), logs)
	}
	e := entries[0]
	if e["level"] != "error" || e["id"] != "c1" || e["exec_id"] != "e1" {
		t.Errorf("panic log entry: got level %v, id %v, exec_id %v; want error, c1, e1", e["level"], e["id"], e["exec_id"])
	}
	// The stack is the panicking goroutine's, down to the handler.
	if stack, _ := e["stack"].(string); !strings.Contains(stack, "TestHandlerPanicRecovered") {
		t.Errorf("panic log entry's stack does not reach the handler:\n%s", stack)
	}
}
