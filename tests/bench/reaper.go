package main

import (
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/subreaper"
)

// reaper adopts and reaps the run's shims (tests/internal/subreaper):
// with the bench as child subreaper, an orphaned shim daemon comes here
// rather than to pid 1, and its pid is freed as soon as it exits.
type reaper struct{ r *subreaper.Reaper }

func startReaper() (*reaper, error) {
	r, err := subreaper.Start(time.Second)
	if err != nil {
		return nil, err
	}
	return &reaper{r: r}, nil
}

// Stop ends the loop and reaps what is left, orphaned container
// processes included: by now no os/exec child of the bench is running.
func (r *reaper) Stop() {
	r.r.Stop()
	subreaper.Reap(true)
}
