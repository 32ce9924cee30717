// Package sandboxpb is the generated code of sandbox.proto: the messages of
// containerd's Sandbox API (containerd.runtime.sandbox.v1) that the shim
// reads and writes, trimmed to the fields it uses. See package api for why
// this is a copy and how to regenerate it.
package sandboxpb
