package sandbox

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CgroupStats are the figures CRI stats report for one cgroup.
type CgroupStats struct {
	Timestamp      time.Time
	CPUUsageNanos  uint64
	MemoryUsage    uint64
	WorkingSet     uint64
	RSS            uint64
	PageFaults     uint64
	MajorFaults    uint64
	HaveCPU, HaveM bool
}

// cgroupRoot is where the v1 hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// readCgroupStats reads CPU and memory of a cgroupfs path, from cgroup v1
// controllers or, when the host is pure v2, from the unified hierarchy.
func readCgroupStats(path string) CgroupStats {
	st := CgroupStats{Timestamp: time.Now()}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return readCgroup2(filepath.Join(cgroupRoot, path), st)
	}
	if v, err := readUint(filepath.Join(cgroupRoot, "cpuacct", path, "cpuacct.usage")); err == nil {
		st.CPUUsageNanos, st.HaveCPU = v, true
	}
	memDir := filepath.Join(cgroupRoot, "memory", path)
	if v, err := readUint(filepath.Join(memDir, "memory.usage_in_bytes")); err == nil {
		st.MemoryUsage, st.HaveM = v, true
		kv := readKV(filepath.Join(memDir, "memory.stat"))
		// Working set as the kubelet/cAdvisor computes it: usage minus
		// inactive file pages.
		ws := st.MemoryUsage
		if inactive := kv["total_inactive_file"]; inactive < ws {
			ws -= inactive
		} else {
			ws = 0
		}
		st.WorkingSet = ws
		st.RSS = kv["total_rss"]
		st.PageFaults = kv["total_pgfault"]
		st.MajorFaults = kv["total_pgmajfault"]
	}
	return st
}

func readCgroup2(dir string, st CgroupStats) CgroupStats {
	cpu := readKV(filepath.Join(dir, "cpu.stat"))
	if v, ok := cpu["usage_usec"]; ok {
		st.CPUUsageNanos, st.HaveCPU = v*1000, true
	}
	if v, err := readUint(filepath.Join(dir, "memory.current")); err == nil {
		st.MemoryUsage, st.HaveM = v, true
		kv := readKV(filepath.Join(dir, "memory.stat"))
		ws := v
		if inactive := kv["inactive_file"]; inactive < ws {
			ws -= inactive
		} else {
			ws = 0
		}
		st.WorkingSet = ws
		st.RSS = kv["anon"]
		st.PageFaults = kv["pgfault"]
		st.MajorFaults = kv["pgmajfault"]
	}
	return st
}

func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
}

func readKV(path string) map[string]uint64 {
	out := map[string]uint64{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// dirUsage sums the bytes and inodes below dir without crossing into
// other file systems.
func dirUsage(dir string) (bytes, inodes uint64) {
	var dev uint64
	if fi, err := os.Lstat(dir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			dev = st.Dev
		}
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if st.Dev != dev && d.IsDir() {
				return filepath.SkipDir
			}
			bytes += uint64(st.Blocks) * 512
		}
		inodes++
		return nil
	})
	return bytes, inodes
}

// ContainerStats reads the cgroup and writable-layer figures of c.
func (m *Manager) ContainerStats(c *Container) (CgroupStats, uint64, uint64, string) {
	rec := c.Record()
	st := readCgroupStats(rec.CgroupsPath)
	upper := filepath.Join(m.containerRootDir(rec.ID), "upper")
	b, i := dirUsage(upper)
	return st, b, i, upper
}

// SandboxStats reads the pod-level cgroup figures of sb.
func (m *Manager) SandboxStats(sb *Sandbox) CgroupStats {
	return readCgroupStats(sb.Record().CgroupParent)
}
