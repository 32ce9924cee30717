package process

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
)

// runtimeError wraps err, a failed runtime call, with the last error runc
// wrote to its JSON log, which says far more than "exit status 1".
func runtimeError(err error, logPath, op string) error {
	if msg := lastLogError(logPath); msg != "" {
		return fmt.Errorf("%s: %s: %w", op, msg, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

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
