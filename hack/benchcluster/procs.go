package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on
// every Linux architecture Go runs on here; sysconf needs cgo).
const clockTicks = 100

// group is what a process of the node is to the figures.
type group int

const (
	gDaemon  group = iota // the CRI runtime daemon (peapod, containerd) and its short-lived children
	gHelpers              // conmon (peapod, one per container) | containerd-shim (one per pod); runc below them
	gPauses               // the pods' infra processes
	gNode                 // the node agent (kubelet | peapod-agent) and its short-lived children
	nGroups
)

var groupNames = [nGroups]string{"runtime daemon", "helpers (conmon | shim)", "pauses", "node agent (kubelet | peapod-agent)"}

// procStat is what /proc/<pid>/stat says of a process.
type procStat struct {
	pid, ppid int
	comm      string
	state     string
	start     uint64 // clock ticks after boot: a recycled PID has another
	// ticks is utime+stime+cutime+cstime: its own CPU and that of the
	// children it waited for (a runc its helper ran and reaped, say).
	ticks uint64
}

// parseStat parses one /proc/<pid>/stat line. comm sits in parentheses and
// may hold spaces and parentheses itself: the fields after it start after
// the last ')'.
func parseStat(s string) (procStat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("stat: no (comm) in %q", s)
	}
	var p procStat
	var err error
	if p.pid, err = strconv.Atoi(strings.TrimSpace(s[:open])); err != nil {
		return p, fmt.Errorf("stat: pid: %w", err)
	}
	p.comm = s[open+1 : end]
	f := strings.Fields(s[end+1:])
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 20 {
		return p, fmt.Errorf("stat: %d fields after comm, want at least 20", len(f))
	}
	p.state = f[0]
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return p, fmt.Errorf("stat: ppid: %w", err)
	}
	for _, i := range []int{14, 15, 16, 17} { // utime stime cutime cstime
		v, err := strconv.ParseInt(f[i-3], 10, 64)
		if err != nil {
			return p, fmt.Errorf("stat: field %d: %w", i, err)
		}
		p.ticks += uint64(max(v, 0))
	}
	if p.start, err = strconv.ParseUint(f[22-3], 10, 64); err != nil {
		return p, fmt.Errorf("stat: starttime: %w", err)
	}
	return p, nil
}

// allProcs reads every process's stat (zombies left out).
func allProcs() map[int]procStat {
	out := map[int]procStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		p, err := parseStat(string(b))
		if err != nil || p.pid != pid || p.state == "Z" || p.state == "X" {
			continue
		}
		out[pid] = p
	}
	return out
}

var (
	helperComms = []string{"conmon", "containerd-shim", "containerd-shim-runc-v2", "runc", "runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]"}
	pauseComms  = []string{"pause", "peapod-pause"}
)

// nodeProcs is the node's processes at one moment, by group. workload
// counts the containers' own processes, left out of every figure.
type nodeProcs struct {
	procs    map[int]procStat
	groups   map[int]group
	workload int
}

// classify finds the node's processes: the runtime daemon and the node
// agent by the PIDs the harness started, every conmon or shim whose
// command line names the cluster's directory (they outlive their parent:
// conmon daemonizes, a shim is re-parented to init), and what runs below
// those.
// Below a helper or the daemon, a process named pause/peapod-pause is a
// pod's infra process, runc and shims are helpers, another child of the
// daemon is the daemon's (a CNI plugin it runs), anything else is a
// container's workload.
func classify(procs map[int]procStat, daemon, node int, dir string, cmdline func(int) []byte) nodeProcs {
	n := nodeProcs{procs: procs, groups: map[int]group{}}
	kids := map[int][]int{}
	for pid, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], pid)
	}
	for _, k := range kids {
		slices.Sort(k)
	}
	var workload func(pid int)
	workload = func(pid int) {
		n.workload++
		for _, c := range kids[pid] {
			workload(c)
		}
	}
	var below func(pid int, g group)
	below = func(pid int, g group) {
		for _, c := range kids[pid] {
			if _, seen := n.groups[c]; seen {
				continue
			}
			comm := procs[c].comm
			switch {
			case g == gNode:
				n.groups[c] = gNode
			case slices.Contains(pauseComms, comm):
				n.groups[c] = gPauses
			case slices.Contains(helperComms, comm):
				n.groups[c] = gHelpers
			case pid == daemon:
				n.groups[c] = gDaemon
			default:
				workload(c)
				continue
			}
			below(c, n.groups[c])
		}
	}
	if _, ok := procs[daemon]; ok {
		n.groups[daemon] = gDaemon
	}
	if _, ok := procs[node]; ok {
		n.groups[node] = gNode
	}
	marker := []byte(strings.TrimSuffix(dir, "/") + "/")
	for pid, p := range procs {
		if (p.comm == "conmon" || strings.HasPrefix(p.comm, "containerd-shim")) && bytes.Contains(cmdline(pid), marker) {
			n.groups[pid] = gHelpers
		}
	}
	roots := make([]int, 0, len(n.groups))
	for pid := range n.groups {
		roots = append(roots, pid)
	}
	slices.Sort(roots)
	for _, pid := range roots {
		below(pid, n.groups[pid])
	}
	return n
}

func readCmdline(pid int) []byte {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return b
}

// count is the number of processes in each group.
func (n nodeProcs) count() [nGroups]int {
	var out [nGroups]int
	for _, g := range n.groups {
		out[g]++
	}
	return out
}

// cpuSince is the CPU seconds each group used from a to n: for a process
// in both (same PID and start time) the difference, for one new in n all
// of it. A process that exited in between counts only through its parent's
// cutime/cstime, when the parent is one of ours and waited for it.
func (n nodeProcs) cpuSince(a nodeProcs) [nGroups]float64 {
	var out [nGroups]float64
	for pid, g := range n.groups {
		p := n.procs[pid]
		t := p.ticks
		if old, ok := a.procs[pid]; ok && old.start == p.start {
			t -= min(old.ticks, t)
		}
		out[g] += float64(t) / clockTicks
	}
	return out
}

// mem is resident memory: RSS counts a shared page in full in every
// process that maps it, PSS divides it among them.
type mem struct{ rss, pss uint64 }

func (m mem) add(o mem) mem { return mem{m.rss + o.rss, m.pss + o.pss} }

// memOf reads /proc/<pid>/smaps_rollup; a process gone reads as 0.
func memOf(pid int) mem {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return mem{}
	}
	return parseRollup(string(b))
}

func parseRollup(s string) mem {
	var m mem
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			m.rss = kb << 10
		case "Pss:":
			m.pss = kb << 10
		}
	}
	return m
}

// memory sums each group's memory now.
func (n nodeProcs) memory() [nGroups]mem {
	var out [nGroups]mem
	for pid, g := range n.groups {
		out[g] = out[g].add(memOf(pid))
	}
	return out
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
