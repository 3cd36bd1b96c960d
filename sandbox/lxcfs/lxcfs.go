// Package lxcfs puts lxcfs's container-aware /proc files over a container's
// own, and keeps them there while lxcfs comes and goes.
//
// /proc is not namespaced: in a container /proc/meminfo shows the host's
// memory and /proc/cpuinfo the host's CPUs, so anything that sizes itself
// from them (a JVM's heap, glibc's sysconf(_SC_NPROCESSORS_ONLN), free,
// top) ignores the container's limits. lxcfs is a FUSE filesystem that
// answers those files from the reading process's cgroups. A container
// gets its files bind-mounted at create (sandbox/spec); this package says
// which files lxcfs serves (Probe), watches the lxcfs mount (Watcher), and
// moves the binds in a running container's mount namespace (Sync).
//
// lxcfs's mount, as a Watcher sees it:
//
//	          lxcfs mounts dir          lxcfs killed: FUSE connection
//	(absent) ──────────────────► UP ─────────────────────────────► DISCONNECTED
//	   ▲                          │ ▲                                   │
//	   │      lxcfs stops cleanly │ │ lxcfs restarted (new device)      │ umount dir
//	   └──────────────────────────┘ └───────────────────────────────────┘ (→ absent)
//	                              │
//	                              └── no answer within the timeout ──► NOT RESPONDING
//
// What a container sees, by the same states: UP — lxcfs's files. Anything
// else — its own /proc, the host's figures: Sync unmounts the dead binds
// rather than leave reads failing with ENOTCONN ("Transport endpoint is
// not connected"), which is what a killed lxcfs leaves behind, and which
// lxcfs upstream says only a container restart cures. When lxcfs is UP
// again (a new FUSE device), Sync binds the new mount's files in, with
// open_tree(2) in peapod's mount namespace and move_mount(2) in the
// container's (kernel 5.2+; what lxcfs-reattach does), so no container
// restarts.
package lxcfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Modes of containers.lxcfs.
const (
	ModeAuto = "auto" // when lxcfs answers at the dir
	ModeOn   = "on"   // always: CreateContainer fails while lxcfs is down
	ModeOff  = "off"  // never
)

// PodAnnotation on a pod turns lxcfs off for its containers ("off"); the
// kubelet passes pod annotations through to RunPodSandbox.
const PodAnnotation = "peapod.io/lxcfs"

// Paths are the container paths lxcfs's files go over, as LXC's
// lxc.mount.hook and the Kubernetes lxcfs admission webhooks mount them.
// runc allows exactly these (and a few more) as mounts under /proc.
var Paths = []string{
	"/proc/cpuinfo",
	"/proc/diskstats",
	"/proc/loadavg",
	"/proc/meminfo",
	"/proc/stat",
	"/proc/swaps",
	"/proc/uptime",
	"/sys/devices/system/cpu/online",
}

// fuseSuperMagic is statfs's f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

// Reasons a State is not up, as the CRI condition reports them.
const (
	ReasonNotMounted    = "LXCFSNotMounted"
	ReasonDisconnected  = "LXCFSDisconnected"
	ReasonNotResponding = "LXCFSNotResponding"
	ReasonError         = "LXCFSError"
)

// State is what a probe of the lxcfs mount found.
type State struct {
	Up bool
	// Dev is the mount's device: each lxcfs start makes a new FUSE
	// connection with a new one, so a bind whose device differs from Dev
	// is a dead lxcfs's.
	Dev uint64
	// Paths are those of Paths that this lxcfs serves.
	Paths []string
	// Reason and Message say why not Up.
	Reason, Message string
}

// Same reports whether two states would give containers the same mounts.
func (s State) Same(o State) bool {
	return s.Up == o.Up && s.Dev == o.Dev && slices.Equal(s.Paths, o.Paths) && s.Reason == o.Reason
}

// Probe looks at lxcfs's mount at dir once. It blocks while a stopped or
// hung lxcfs does not answer; Watcher bounds it.
func Probe(dir string) State {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return failed(dir, err)
	}
	if fs.Type != fuseSuperMagic {
		return State{Reason: ReasonNotMounted, Message: fmt.Sprintf("lxcfs is not mounted at %s", dir)}
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return failed(dir, err)
	}
	// A real round trip to the daemon: statfs and stat may be answered
	// from the kernel's cache.
	if _, err := os.ReadFile(filepath.Join(dir, "proc/uptime")); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return State{Reason: ReasonNotMounted, Message: fmt.Sprintf("the FUSE mount at %s has no proc/uptime: not lxcfs", dir)}
		}
		return failed(dir, err)
	}
	s := State{Up: true, Dev: uint64(st.Dev)}
	for _, p := range Paths {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			s.Paths = append(s.Paths, p)
		}
	}
	return s
}

func failed(dir string, err error) State {
	switch {
	case errors.Is(err, unix.ENOTCONN):
		return State{Reason: ReasonDisconnected, Message: fmt.Sprintf("lxcfs at %s is gone (its FUSE mount answers ENOTCONN): unmount %s and start lxcfs again", dir, dir)}
	case errors.Is(err, os.ErrNotExist):
		return State{Reason: ReasonNotMounted, Message: fmt.Sprintf("lxcfs is not mounted at %s (no such directory)", dir)}
	default:
		return State{Reason: ReasonError, Message: fmt.Sprintf("lxcfs at %s: %v", dir, err)}
	}
}

// Watcher probes lxcfs's mount with a deadline: a stopped lxcfs blocks
// every access to its mount, and the watcher must go on reporting.
type Watcher struct {
	Dir     string
	Timeout time.Duration
	// probe is Probe; tests replace it.
	probe func(dir string) State

	mu      sync.Mutex
	cur     State
	pending chan State // the probe still running, if one is
}

// NewWatcher watches the lxcfs mount at dir; a probe that takes longer than
// timeout makes the state NotResponding.
func NewWatcher(dir string, timeout time.Duration) *Watcher {
	return &Watcher{Dir: dir, Timeout: timeout, probe: Probe, cur: State{Reason: ReasonNotMounted, Message: "not probed yet"}}
}

// Check probes now (or waits on the probe still running from an earlier
// call) and returns the new state.
func (w *Watcher) Check() State {
	w.mu.Lock()
	ch := w.pending
	if ch == nil {
		ch = make(chan State, 1)
		w.pending = ch
		go func() { ch <- w.probe(w.Dir) }()
	}
	w.mu.Unlock()
	var s State
	select {
	case s = <-ch:
		w.mu.Lock()
		w.pending = nil
		w.mu.Unlock()
	case <-time.After(w.Timeout):
		s = State{Reason: ReasonNotResponding, Message: fmt.Sprintf("lxcfs at %s did not answer within %s", w.Dir, w.Timeout)}
	}
	w.mu.Lock()
	w.cur = s
	w.mu.Unlock()
	return s
}

// Current is the state of the last Check.
func (w *Watcher) Current() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}
