package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// podRecordFile is the pod's record in the sandbox bundle: what `delete`
// needs to tear the pod down after the shim died (containerd runs it with
// the sandbox id and bundle when the shim's connection drops).
const podRecordFile = "pod.json"

type podRecord struct {
	ID        string     `json:"id"`
	Config    *PodConfig `json:"config"`
	NetNS     string     `json:"netns,omitempty"`
	Pid       int        `json:"pid,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExitedAt  time.Time  `json:"exited_at,omitzero"`
	State     string     `json:"state"`
	// Cgroup is the pod cgroup relative to the hierarchy roots.
	Cgroup string `json:"cgroup,omitempty"`
}

// record is the pod's record; p.mu must be held, or p not yet shared.
func (p *Pod) record() podRecord {
	return podRecord{
		ID:        p.id,
		Config:    p.cfg,
		NetNS:     p.netns,
		Pid:       p.pid,
		CreatedAt: p.createdAt,
		ExitedAt:  p.exitedAt,
		State:     p.state.String(),
		Cgroup:    p.cgroup,
	}
}

func writeRecord(bundle string, r podRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(bundle, podRecordFile, data); err != nil {
		return fmt.Errorf("write pod record: %w", err)
	}
	return nil
}

func removeRecord(bundle string) {
	_ = os.Remove(filepath.Join(bundle, podRecordFile))
}

// readRecord returns the pod record in bundle; ok is false when there is
// none (a container's bundle, or a pod already torn down).
func readRecord(bundle string) (podRecord, bool, error) {
	var r podRecord
	data, err := os.ReadFile(filepath.Join(bundle, podRecordFile))
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, false, fmt.Errorf("parse pod record: %w", err)
	}
	return r, true, nil
}

// isHolder reports whether pid is a pod holder (this binary run with
// HolderArg), so that a recorded pid the kernel has since reused for
// another process is never killed.
func isHolder(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(data, []byte{0})
	return len(args) > 1 && string(args[1]) == HolderArg
}

// cleanupPod tears down the pod recorded in bundle after its shim died:
// the holder, every process left in the pod cgroup, the cgroup, the shm
// mount and the files, then the record. Idempotent; ok is false when the
// bundle holds no pod.
func cleanupPod(bundle string) (rec podRecord, ok bool, err error) {
	rec, ok, err = readRecord(bundle)
	if err != nil || !ok {
		return rec, ok, err
	}
	if rec.Pid > 0 && isHolder(rec.Pid) {
		_ = unix.Kill(rec.Pid, unix.SIGKILL)
	}
	if rec.Cgroup != "" {
		killPodCgroup(rec.Cgroup)
		// The kills land asynchronously; the cgroup empties once the
		// processes are gone.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err = removePodCgroup(rec.Cgroup)
			if err == nil || time.Now().After(deadline) {
				break
			}
			killPodCgroup(rec.Cgroup)
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return rec, ok, fmt.Errorf("cleanup pod %q: %w", rec.ID, err)
		}
	}
	if err := (podFiles{dir: filepath.Join(bundle, podDirName)}).remove(); err != nil {
		return rec, ok, fmt.Errorf("cleanup pod %q: %w", rec.ID, err)
	}
	removeRecord(bundle)
	return rec, ok, nil
}
