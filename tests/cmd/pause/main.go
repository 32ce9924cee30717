// Command pause is the end-to-end tests' pod sandbox ("pause") image: the
// process that holds a pod's namespaces while its containers come and go.
// It sleeps until SIGINT or SIGTERM and then exits 0, and, as pid 1 of the
// pod's PID namespace, reaps every child reparented to it, as the
// upstream pause container does. Built with CGO_ENABLED=0 so the image
// needs nothing but this binary.
//
//	CGO_ENABLED=0 go build -o pause ./tests/cmd/pause
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (containerd-shim-sandbox-v2 tests)")
		return
	}
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigc {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		// SIGCHLD coalesces: reap until none is left.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
