package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestListenOrFindConcurrent: of concurrent starts for one pod, exactly
// one binds and the rest find it (DESIGN.md: "of two concurrent starts one
// binds and the other finds it"), whether the socket path is fresh or
// holds a dead shim's socket. Two winners means two shims for one pod.
func TestListenOrFindConcurrent(t *testing.T) {
	const (
		rounds  = 200
		callers = 4
	)
	tests := []struct {
		name  string
		stale bool
	}{
		{name: "fresh path", stale: false},
		{name: "stale socket", stale: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortDir(t)
			for round := 0; round < rounds; round++ {
				path := filepath.Join(dir, "sock")
				os.Remove(path)
				if tt.stale {
					l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
					if err != nil {
						t.Fatal(err)
					}
					l.SetUnlinkOnClose(false)
					l.Close()
				}
				var (
					wg        sync.WaitGroup
					mu        sync.Mutex
					listeners []*net.UnixListener
					others    []error
				)
				start := make(chan struct{})
				for i := 0; i < callers; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						l, err := listenOrFind(context.Background(), path, "c1", nil)
						mu.Lock()
						defer mu.Unlock()
						if err == nil {
							listeners = append(listeners, l)
						} else if !errors.Is(err, errShimRunning) {
							others = append(others, err)
						}
					}()
				}
				close(start)
				wg.Wait()
				for _, l := range listeners {
					l.Close()
				}
				if len(listeners) != 1 {
					t.Fatalf("round %d: %d callers got a listener, want exactly 1 (other errors: %v)", round, len(listeners), others)
				}
			}
		})
	}
}
