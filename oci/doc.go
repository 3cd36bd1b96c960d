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
//	exec-*/       one per ExecSync/Exec call, removed when it returns
//
// (The brief named the exit dir "exit/"; conmon 2.1.6 writes a file named
// "exit" into its --persist-dir and gives up without writing the --exit-dir
// file when that name is a directory, so the exit dir is "exits/".)
//
// Processes: conmon is started with its own process group, daemonizes and
// is re-parented away from peapod; it stays in peapod's cgroup (no conmon
// cgroup option yet). Create waits on conmon's sync pipe (_OCI_SYNCPIPE),
// never on EOF of conmon's stdio. ExecSync runs `conmon --sync --exec`;
// Exec (streaming) and Check run the runtime directly. Nothing here writes
// oom_score_adj: the runtime applies process.oomScoreAdj from the spec the
// caller wrote (clamped by sandbox/spec); conmon's warning about failing to
// write its own oom_score_adj is harmless.
//
// Everything State needs is on disk or in the runtime, so a fresh Runtime on
// the same directories (a peapod restart) sees the same containers; Watch
// re-arms exit monitoring, which is a pidfd on conmon's pid in Go's netpoller
// (no polling).
package oci
