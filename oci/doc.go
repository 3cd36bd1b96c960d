// Package oci is peapod's seam to one OCI runtime (runc or crun) driven
// under one conmon monitor per container, like CRI-O's internal/oci.
//
// A container, as this package sees it:
//
//	          Create (conmon + `runtime create`)
//	(none) ───────────────────────────────────► created
//	                                               │ Start (`runtime start`)
//	                                               ▼
//	                                            running
//	                                               │ process exits / Kill / Stop
//	                                               ▼  (conmon writes the exit file, then exits)
//	                                            stopped ──── Delete ───► (none)
//
//	"unknown": peapod's state dir for the id exists but neither the runtime
//	nor conmon's exit file can say what happened (e.g. conmon was killed).
//
// Files, per container, under Options.StateDir/<id>/ (the conmon persist dir):
//
//	meta.json     bundle and log path, written at Create
//	conmon.pid    conmon's pid (--conmon-pidfile)
//	pid           the container's init pid (--container-pidfile)
//	started       RFC 3339 time Start succeeded
//	exits/<id>    exit code written by conmon (--exit-dir); its mtime is the finish time
//	exit          conmon's own copy of the exit code (--persist-dir); never name a dir "exit" here
//	oom           written by conmon when the container's memory cgroup saw an OOM kill
//	runtime.log   the runtime's --log (json) for `create`; its error lines go into errors
//	conmon.log    conmon's stdout/stderr
//	<id>          conmon's symlink to the bundle (--socket-dir-path); the attach
//	              socket and the ctl/winsz fifos live in the bundle
//
// Everything State needs is on disk or in the runtime, so a fresh Runtime on
// the same directories (a peapod restart) sees the same containers; Watch
// re-arms exit monitoring, which is a pidfd on conmon's pid in Go's netpoller
// (no polling).
package oci
