package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// HolderArg, as argv[1], runs the shim binary as a pod holder (RunHolder):
// cmd checks it before anything else, and locks the main goroutine to the
// main thread in its init, so that the setns below applies to the thread
// whose namespaces /proc/<pid>/ns shows.
const HolderArg = "__pod-holder"

// holderSpec is what the shim tells a holder it starts, as JSON in
// argv[2].
type holderSpec struct {
	NetNS    string            `json:"netns,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Sysctls  map[string]string `json:"sysctls,omitempty"`
	// PidNS is set when the holder is PID 1 of a new PID namespace and so
	// reaps the pod's orphans, as the pause process does.
	PidNS bool `json:"pidns,omitempty"`
}

// holderStarter starts a command so that its exit reaches the caller
// only: the shim's reaper (reaper.Reaper.Start).
type holderStarter interface {
	Start(cmd *exec.Cmd) (chan runc.Exit, error)
}

// startHolder starts the pod holder and waits until it has set the pod's
// namespaces up (or failed to). The holder gets new IPC and UTS
// namespaces, and a new PID namespace when the pod shares one, from
// clone; it joins the network namespace itself.
func startHolder(starter holderStarter, exe string, hs holderSpec, ipcNode, utsNode bool) (*exec.Cmd, chan runc.Exit, error) {
	arg, err := json.Marshal(hs)
	if err != nil {
		return nil, nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	cmd := exec.Command(exe, HolderArg, string(arg))
	cmd.Args[0] = "pod-holder"
	cmd.Dir = "/"
	// One P: the holder runs one goroutine, and each P the runtime
	// starts with (one per CPU) costs it memory for the pod's lifetime.
	// Measured USS 1457 -> 1297 KiB with 2 CPUs, 2832 -> 1297 KiB with
	// 64 Ps. Only the environment sets it before the runtime and the
	// package inits start; runtime.GOMAXPROCS(1) in RunHolder comes after
	// them and measured about 450 KiB worse than not calling it.
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.ExtraFiles = []*os.File{w}
	var flags uintptr
	if !ipcNode {
		flags |= unix.CLONE_NEWIPC
	}
	if !utsNode {
		flags |= unix.CLONE_NEWUTS
	}
	if hs.PidNS {
		flags |= unix.CLONE_NEWPID
	}
	// Its own process group: signals to the shim's group (a terminal's
	// ^C on a shim run by hand) are not the pod's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Setpgid: true}
	ch, err := starter.Start(cmd)
	w.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("start pod holder: %w", err)
	}
	// The holder writes nothing on success and closes the pipe; an error
	// is its one line before it exits.
	msg, _ := io.ReadAll(io.LimitReader(r, 4096))
	if len(msg) > 0 {
		cmd.Process.Kill()
		<-ch
		_ = cmd.Process.Release()
		return nil, nil, fmt.Errorf("pod holder: %s", strings.TrimSpace(string(msg)))
	}
	return cmd, ch, nil
}

// RunHolder is the pod holder: argv is what follows HolderArg. It joins
// the pod's network namespace, sets the hostname and the namespaced
// sysctls, drops its capabilities and then only waits: for SIGTERM or
// SIGINT, which end it (and so the pod), and, as PID 1 of the pod's PID
// namespace, for orphans to reap. Its setup failure goes to fd 3, which
// it closes once set up.
func RunHolder(argv []string) int {
	ready := os.NewFile(3, "ready")
	fail := func(err error) int {
		fmt.Fprintf(ready, "%v\n", err)
		ready.Close()
		return 1
	}
	if len(argv) != 1 {
		return fail(errors.New("usage: " + HolderArg + " <spec>"))
	}
	var hs holderSpec
	if err := json.Unmarshal([]byte(argv[0]), &hs); err != nil {
		return fail(fmt.Errorf("parse spec: %w", err))
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM, unix.SIGINT)
	var chld chan os.Signal
	if hs.PidNS {
		chld = make(chan os.Signal, 1)
		signal.Notify(chld, unix.SIGCHLD)
	}
	if err := setupHolder(hs); err != nil {
		return fail(err)
	}
	ready.Close()
	for {
		select {
		case <-term:
			return 0
		case <-chld:
			reapOrphans()
		}
	}
}

func setupHolder(hs holderSpec) error {
	if hs.NetNS != "" {
		fd, err := unix.Open(hs.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns: %w", err)
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("join netns %s: %w", hs.NetNS, err)
		}
	}
	if hs.Hostname != "" {
		if err := unix.Sethostname([]byte(hs.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	for k, v := range hs.Sysctls {
		// Keys are dotted; a slash form ("net/ipv4/...") is accepted too,
		// as runc does. "." inside a name component is not supported.
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if strings.Contains(k, "..") || !strings.HasPrefix(filepath.Clean(p), "/proc/sys/") {
			return fmt.Errorf("sysctl %q: bad name", k)
		}
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
		}
	}
	dropPrivileges()
	return nil
}

// dropPrivileges leaves the holder with no capabilities and no way to
// gain any: it needs none to wait and reap. Capabilities, the bounding
// set and no_new_privs are per thread: AllThreadsSyscall sets them on
// every thread of the shipped (CGO_ENABLED=0) binary; a cgo build (the
// race-enabled tests) cannot, and drops them on the main thread only,
// the one the holder's own code runs on (cmd locks it). Best effort: a
// failure leaves a holder that does nothing with what it holds.
func dropPrivileges() {
	all := func(trap, a1, a2, a3 uintptr) syscall.Errno {
		if _, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3); e != syscall.ENOTSUP {
			return e
		}
		_, _, e := syscall.RawSyscall(trap, a1, a2, a3)
		return e
	}
	_ = all(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	for c := 0; c <= 63; c++ {
		if all(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0) != 0 {
			break
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	// The pointers go straight into the system calls, so that they stay
	// valid (a uintptr held in a variable does not keep its object).
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e == syscall.ENOTSUP {
		_, _, _ = syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	}
}

// reapOrphans collects every exited child without blocking.
func reapOrphans() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
