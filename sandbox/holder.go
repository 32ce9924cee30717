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
// cmd checks it in its init, before main, and runs RunHolder there, on
// the main thread, so that the setns below applies to the thread whose
// namespaces /proc/<pid>/ns shows, and waitStop waits on it.
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
// sysctls, drops its capabilities and then only waits for SIGTERM or
// SIGINT, which end it (and so the pod) with status 0. As PID 1 of the
// pod's PID namespace it has the kernel reap the pod's orphans. Its
// setup failure goes to fd 3, which it closes once set up.
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
	if hs.PidNS {
		// The pod's orphans are reparented to the holder, PID 1 of the
		// pod's PID namespace (the shim, a subreaper, is outside it).
		// With SIGCHLD ignored the kernel reaps them as they exit, and
		// those already dead when reparented, so none stays a zombie
		// and the holder needs no goroutine or wait4 loop for them.
		signal.Ignore(unix.SIGCHLD)
	}
	if err := setupHolder(hs); err != nil {
		return fail(err)
	}
	ready.Close()
	if err := waitStop(); err != nil {
		return 1
	}
	return 0
}

// kernelSigsetSize is the kernel's sigset_t size (_NSIG/8), which
// rt_sigtimedwait requires; 16 on mips, which the shim is not built for.
const kernelSigsetSize = 8

// waitStop returns once the holder is sent SIGTERM or SIGINT. It waits
// in rt_sigtimedwait on the main thread rather than through os/signal,
// whose Notify keeps a goroutine and two threads for the pod's lifetime
// (the runtime's signal-mask thread and os/signal's receiver): measured
// 6.8 -> 4.2 threads and 78 KiB less USS, plus 16 KiB of kernel stack
// per thread.
//
// kill(2) of the holder's pid or process group offers the signal to the
// main thread, the thread group leader, whenever that thread does not
// block it, and rt_sigtimedwait unblocks the waited signals for the wait
// and takes them without running a handler. Every other signal is
// blocked on this thread first, so that none interrupts the wait (they
// go to the other threads and the runtime's handlers, as before). A
// SIGTERM sent before the wait meets the runtime's default instead and
// ends the holder by the signal (status 143): a stop all the same, only
// its status differs. The shim sends none during setup (it stops only a
// ready pod), and the window from the ready report to the wait measured
// 0.1-1.6 ms; startHolder does not poll for the wait to begin, since
// nothing but that status depends on it (TestHolderStopSignals does).
//
// It must run on the main thread, its goroutine locked there, and
// nothing may need that thread to take a signal after it starts:
// syscall.AllThreadsSyscall (dropPrivileges) signals every thread.
func waitStop() error {
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^all.Val[i] // every signal
	}
	// Cannot fail: a valid how and set.
	_ = unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
	stop := sigset(unix.SIGTERM, unix.SIGINT)
	for {
		_, _, e := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&stop)), 0, 0, kernelSigsetSize, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			// SIGSTOP and SIGCONT, which no mask holds off.
		default:
			// EINVAL: a wrong kernelSigsetSize. Ending beats spinning.
			return fmt.Errorf("rt_sigtimedwait: %w", e)
		}
	}
}

// sigset is the set of sigs in the kernel's layout: signal n is bit n-1.
func sigset(sigs ...unix.Signal) unix.Sigset_t {
	var set unix.Sigset_t
	bits := int(unsafe.Sizeof(set.Val[0])) * 8
	for _, s := range sigs {
		set.Val[(int(s)-1)/bits] |= 1 << ((int(s) - 1) % bits)
	}
	return set
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
// the one the holder's own code runs on. Best effort: a
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
