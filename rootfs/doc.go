// Package rootfs mounts a container's root filesystem from the mounts
// containerd's snapshotter describes (overlay, bind, tmpfs, ...) on
// <bundle>/rootfs before the runtime's create, and unmounts everything
// under it at delete. A failed MountAll leaves nothing mounted; UnmountAll
// of a path with nothing mounted succeeds, so a delete may be retried.
//
// # Idmapped mounts (user namespaces)
//
// For a pod in a user namespace (Kubernetes KEP-127, CRI hostUsers:
// false) containerd's overlay snapshotter adds two options to the rootfs
// mounts, uidmap=<container>:<host>:<size>[,...] and gidmap=..., one
// option each with the ranges comma-separated inside it (containerd
// plugins/snapshots/overlay/overlay.go, func mounts). They are not mount
// data: the mount must be idmapped through a user namespace with those
// maps, so that a file stored as uid 0 is seen as the host uid the
// container's root maps to. The contract is containerd's core/mount
// (mount_linux.go, mount_idmapped_linux.go), which the runc shim applies
// before `runc create`; this package does the same and differs where
// noted:
//
//   - Both options or neither: one alone is InvalidArgument (containerd
//     ignores it and mounts unmapped), as is a malformed range.
//   - The user namespace comes from a child cloned into it with the maps
//     written, stopped by ptrace at its exec, started and reaped through
//     go-runc's Monitor, the shim's reaper (userns.go), once per MountAll
//     and pair of maps. That is a full fork (Go cannot vfork into a new
//     user namespace) and costs a few milliseconds, as containerd's
//     GetUsernsFD does (BenchmarkOpenUserns). It needs pidfds (Linux 5.3)
//     and a ptrace that Yama's ptrace_scope 3 would forbid.
//   - overlay (idmapped lowers need Linux 5.19): the lower layers are
//     idmapped, not the upper (containerd chowns the upper to the mapped
//     root). One detached, read-only, idmapped clone of the layers' common
//     directory is attached under <bundle>/rootfs.idmap/ for the time of
//     the overlay mount, the lowerdir list is rewritten through it (or
//     through /proc/self/fd/<clone> when that list would pass the page
//     mount(2) takes), and it is detached and the directory removed right
//     after: overlayfs keeps its own clones of its layers. UnmountAll, and
//     so delete, removes what a crash left there, by unmount and rmdir
//     only; the clone being read-only keeps containerd's RemoveAll of the
//     bundle from deleting layers through a leftover.
//   - bind (a snapshot of one layer; Linux 5.12) and any other type:
//     mounted as usual, then an idmapped clone of that mount is moved on
//     top of it, so the target holds two mounts. A read-only bind is
//     idmapped too (containerd's remount of a read-only bind returns
//     before its idmap step, leaving it unmapped).
package rootfs
