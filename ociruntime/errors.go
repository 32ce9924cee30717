package ociruntime

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// fail types err, a failed call op of container id, for the layers
// above: it adds the last error runc wrote to its JSON log, which says far
// more than "exit status 1", and marks errdefs.ErrNotFound what says the
// container does not exist (any more). nil stays nil.
func (r *Runc) fail(op, id string, err error) error {
	return failLog(op, id, r.client.Log, err)
}

// failLog is fail for a call that logged to logPath.
func failLog(op, id, logPath string, err error) error {
	if err == nil {
		return nil
	}
	msg := lastLogError(logPath)
	notFound := isRuntimeNotFound(err)
	op = op + " " + strconv.Quote(id)
	switch {
	case notFound && msg != "":
		return fmt.Errorf("%s: %s: %w: %w", op, msg, err, errdefs.ErrNotFound)
	case notFound:
		return fmt.Errorf("%s: %w: %w", op, err, errdefs.ErrNotFound)
	case msg != "":
		return fmt.Errorf("%s: %s: %w", op, msg, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// IsNotFound reports whether err, from a Runtime, says the container (or
// the process signalled) does not exist any more.
func IsNotFound(err error) bool { return errdefs.IsNotFound(err) }

// lastLogError returns the message of the last error-level line of runc's
// JSON log, or "" when there is none.
func lastLogError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(s.Bytes(), &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			last = entry.Msg
		}
	}
	return last
}

// isRuntimeNotFound reports whether a runtime error says the container does
// not exist (any more). runc and crun word it differently; this is the one
// place that matches their text.
func isRuntimeNotFound(err error) bool {
	// A runtime binary that cannot be run says nothing about the
	// container: it must not pass for "already gone".
	if err == nil || errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, "executable file not found") {
		return false
	}
	for _, s := range []string{
		"does not exist",        // runc: container does not exist
		"not found",             // runc 1.0: container not found
		"No such file",          // crun: state file missing
		"container not running", // runc kill on a stopped container
		"process already finished",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
