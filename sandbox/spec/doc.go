// Package spec turns CRI configs (plus the image config and a few host facts
// the caller hands in) into OCI runtime specs for runc/crun.
//
// Everything here is a pure function of its input, except that user and
// group lookups read <rootfs>/etc/passwd and <rootfs>/etc/group (resolved
// inside the rootfs, never following a symlink out of it), Localhost seccomp
// profiles are read from the host, and CRI devices are stat'ed through the
// statDevice variable (replaced in tests).
//
// The output follows what containerd's CRI plugin generates (internal/cri/opts,
// internal/cri/server/container_create*.go, podsandbox/sandbox_run_linux.go,
// contrib/seccomp) with CRI-O consulted where the two differ. Where peapod
// deviates, the code says why.
//
// Errors that come from bad CRI input are *FieldError and name the CRI field
// (e.g. "linux.security_context.run_as_username: ..."); the cri/ layer maps
// them to codes.InvalidArgument.
package spec
