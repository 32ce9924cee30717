// Package cripb is the generated code of api.proto: the CRI
// PodSandboxConfig (runtime.v1) and the messages under it that the shim
// reads, trimmed to the fields it uses. See package api for why this is a
// copy and how to regenerate it.
package cripb
