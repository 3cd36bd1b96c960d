package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// pidsMatching lists processes named comm whose command line contains
// substr (our state dir or socket: another daemon's helpers do not count).
func pidsMatching(comm, substr string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil || !strings.HasPrefix(strings.TrimSpace(string(c)), comm) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(substr)) {
			out = append(out, pid)
		}
	}
	return out
}

// children maps each pid to its children.
func children() map[int][]int {
	out := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := ppid(pid); pp > 0 {
			out[pp] = append(out[pp], pid)
		}
	}
	return out
}

func ppid(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// procStartTime identifies a process beyond its PID (field 22 of stat);
// "" when it is gone.
func procStartTime(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" {
		return ""
	}
	return f[19]
}

func comm(pid int) string {
	c, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(c))
}

// mem is a process's resident memory: RSS counts shared pages in full in
// every process, PSS divides them among their sharers.
type mem struct{ rss, pss uint64 }

func (m mem) add(o mem) mem { return mem{m.rss + o.rss, m.pss + o.pss} }

func memOf(pid int) mem {
	kb := procKiB(pid, "smaps_rollup", "Rss:", "Pss:")
	return mem{rss: kb["Rss:"] << 10, pss: kb["Pss:"] << 10}
}

// procKiB reads the "Key: N kB" lines named by keys from /proc/<pid>/file;
// a missing file or key reads as 0.
func procKiB(pid int, file string, keys ...string) map[string]uint64 {
	out := map[string]uint64{}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !slices.Contains(keys, f[0]) {
			continue
		}
		out[f[0]], _ = strconv.ParseUint(f[1], 10, 64)
	}
	return out
}

// rssSplit is a process's resident memory by kind, from /proc/<pid>/status:
// anon is its private memory (heap, stacks), file the mapped pages of its
// binary and libraries — inflated by the kernel's fault-around, which maps
// pages near a faulted one that were never touched.
type rssSplit struct{ anon, file uint64 }

func rssSplitOf(pid int) rssSplit {
	kb := procKiB(pid, "status", "RssAnon:", "RssFile:")
	return rssSplit{anon: kb["RssAnon:"] << 10, file: kb["RssFile:"] << 10}
}

// podProcs sums the helpers' memory and, separately, that of the pause
// processes: those below a helper (anything there that is not the
// workload, named sleep: containerd's pause under its shim) and those the
// daemon started itself (peapod's pause, a direct child of peapod).
func podProcs(daemon int, helpers []int) (helperMem, pauseMem mem, nPause int) {
	kids := children()
	for _, c := range kids[daemon] {
		if comm(c) == "peapod-pause" {
			pauseMem = pauseMem.add(memOf(c))
			nPause++
		}
	}
	var walk func(pid int)
	walk = func(pid int) {
		for _, c := range kids[pid] {
			switch comm(c) {
			case "sleep", "conmon", "containerd-shim", "containerd-shim-runc-v2", "runc", "runc:[2:INIT]":
			default:
				pauseMem = pauseMem.add(memOf(c))
				nPause++
			}
			walk(c)
		}
	}
	for _, h := range helpers {
		helperMem = helperMem.add(memOf(h))
		walk(h)
	}
	return helperMem, pauseMem, nPause
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// removeCgroups removes /sys/fs/cgroup/*/name and what is below it, deepest
// first (rmdir only: a cgroup with processes stays, and is reported).
func removeCgroups(name string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil {
				logf("cgroup %s left: %v", dirs[i], err)
			}
		}
	}
}

// removeCgroupRoots removes /sys/fs/cgroup/*/name itself, not what is below
// it: a parent that did not exist before the run (critest's pods made it)
// but that other daemons on this host may use meanwhile (peapod's default);
// rmdir fails, and it stays, while anything is below.
func removeCgroupRoots(name string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	var busy []string
	for _, root := range roots {
		if err := os.Remove(root); err != nil {
			busy = append(busy, filepath.Base(filepath.Dir(root)))
		}
	}
	if len(busy) > 0 {
		logf("cgroup %s left in %s: not empty (another daemon's pods?)", name, strings.Join(busy, ","))
	}
}
