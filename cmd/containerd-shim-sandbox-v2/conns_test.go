package main

import (
	"context"
	"net"
	"testing"
	"time"
)

type passHandshaker struct{}

func (passHandshaker) Handshake(ctx context.Context, conn net.Conn) (net.Conn, any, error) {
	return conn, "auth", nil
}

// TestConnTrackerWaitIdle: waitIdle returns once every admitted
// connection is closed (once, however often it is closed), and not
// before.
func TestConnTrackerWaitIdle(t *testing.T) {
	ctx := context.Background()
	tr := newConnTracker(passHandshaker{})
	tr.waitIdle(ctx, time.Hour) // none yet: returns at once
	a, b := net.Pipe()
	defer b.Close()
	c, auth, err := tr.Handshake(ctx, a)
	if err != nil || auth != "auth" {
		t.Fatalf("Handshake: got %v %v", auth, err)
	}
	returned := make(chan struct{})
	go func() {
		tr.waitIdle(ctx, time.Hour)
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("waitIdle returned with a connection open")
	default:
	}
	c.Close()
	c.Close()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("waitIdle did not return after the connection closed")
	}
	tr.mu.Lock()
	open := tr.open
	tr.mu.Unlock()
	if open != 0 {
		t.Errorf("open connections: got %d, want 0", open)
	}
}
