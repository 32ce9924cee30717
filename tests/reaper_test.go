package tests

import (
	"os"
	"strings"
	"time"

	"github.com/sandbox-shim/containerd-shim-sandbox-v2/tests/internal/subreaper"
)

// reaper makes the test binary a child subreaper (tests/internal/subreaper
// says why) that reaps exited shims.
type reaper = subreaper.Reaper

// shimComm is what a shim's comm reads.
const shimComm = subreaper.ShimComm

func startReaper() (*reaper, error) { return subreaper.Start(250 * time.Millisecond) }

// reapShims waits for every exited shim reparented to the test binary.
func reapShims() { subreaper.Reap(false) }

// strayZombies returns zombies the suite is responsible for: children of
// the test binary that are not shims (orphans of a dead shim), and
// children of any of shims. A shim must reap its containers and its runc
// calls; an orphan means something died without cleaning up.
func strayZombies(shims map[int]bool) []proc {
	self := os.Getpid()
	var out []proc
	for _, p := range listProcs() {
		if p.state != 'Z' {
			continue
		}
		if (p.ppid == self && !strings.HasPrefix(p.comm, shimComm)) || shims[p.ppid] {
			out = append(out, p)
		}
	}
	return out
}
