package sandbox

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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
	// The rest of cAdvisor's per-container figures (CRI metrics), zero
	// where the kernel does not say.
	Extra CgroupExtra
}

// CgroupExtra are the cAdvisor figures beyond CRI stats. The ones that
// come from memory.stat (and, on v2, cpu.stat) are filled with every
// read; the others cost files of their own and are read only for CRI
// metrics (Manager.CgroupDetails).
type CgroupExtra struct {
	CPUUserNanos, CPUSystemNanos                       uint64
	CFSPeriods, CFSThrottledPeriods, CFSThrottledNanos uint64
	Cache, MappedFile, Swap, KernelUsage, MaxUsage     uint64
	Failcnt, OOMKills                                  uint64
}

// TaskCounts are a cgroup subtree's processes and threads (ThreadsMax is
// pids.max, 0: no limit) and its processes' file descriptors and sockets.
// Counting descriptors walks /proc/<pid>/fd of every process, so they are
// read only for CRI metrics (Manager.TaskCounts), not with every stats call.
type TaskCounts struct {
	Processes, Threads, ThreadsMax, FileDescriptors, Sockets uint64
}

// cgroupRoot is where the v1 hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// readCgroupStats reads CPU and memory of a cgroupfs path, from cgroup v1
// controllers or, when the host is pure v2, from the unified hierarchy.
func readCgroupStats(path string) CgroupStats {
	st := CgroupStats{Timestamp: time.Now()}
	if unifiedOnly() {
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
		st.Extra.Cache, st.Extra.MappedFile, st.Extra.Swap = kv["total_cache"], kv["total_mapped_file"], kv["total_swap"]
	}
	return st
}

// readTasks fills the process, thread, descriptor and socket counts of the
// cgroup subtree at dir (the pids hierarchy on v1, the cgroup on v2).
func readTasks(dir string, x *TaskCounts) {
	x.Threads, _ = readUint(filepath.Join(dir, "pids.current"))
	if b, err := os.ReadFile(filepath.Join(dir, "pids.max")); err == nil {
		x.ThreadsMax, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64) // "max": 0
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(data)) {
			x.Processes++
			fds, err := os.ReadDir(filepath.Join("/proc", f, "fd"))
			if err != nil {
				continue
			}
			x.FileDescriptors += uint64(len(fds))
			for _, fd := range fds {
				if l, err := os.Readlink(filepath.Join("/proc", f, "fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
					x.Sockets++
				}
			}
		}
		return nil
	})
}

// unifiedOnly says whether the host is pure cgroup v2, checked once.
var unifiedOnly = sync.OnceValue(func() bool {
	_, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers"))
	return err == nil
})

func readCgroup2(dir string, st CgroupStats) CgroupStats {
	cpu := readKV(filepath.Join(dir, "cpu.stat"))
	if v, ok := cpu["usage_usec"]; ok {
		st.CPUUsageNanos, st.HaveCPU = v*1000, true
		// cpu.stat is read anyway on v2: its extra figures are free.
		x := &st.Extra
		x.CPUUserNanos, x.CPUSystemNanos = cpu["user_usec"]*1000, cpu["system_usec"]*1000
		x.CFSPeriods, x.CFSThrottledPeriods, x.CFSThrottledNanos = cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_usec"]*1000
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
		st.Extra.Cache, st.Extra.MappedFile, st.Extra.KernelUsage = kv["file"], kv["file_mapped"], kv["kernel"]
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

// Stats cache
//
// Every consumer of usage figures — the CRI's ContainerStats,
// ListContainerStats, PodSandboxStats, ListPodSandboxStats and the
// Prometheus collector (metrics/) — goes through statsCache, so a cgroup is
// read at most once per StatsMaxAge however many callers ask: a kubelet
// polling the CRI and a Prometheus scraping /metrics on a node with 110 pods
// cost one read of each cgroup per second between them. A writable layer is
// walked at most once per FsStatsMaxAge: its tree has no size bound.

// StatsMaxAge is how old cached cgroup and network figures may be.
const StatsMaxAge = time.Second

// FsStatsMaxAge is how old a cached writable-layer usage may be.
const FsStatsMaxAge = 10 * time.Second

// statsReaders is how many pods AllStats reads at once.
const statsReaders = 4

// statsEvictAfter drops entries of objects nobody asked about for this long
// (removed containers and pods).
const statsEvictAfter = time.Minute

// FsUsage is the usage of a container's writable layer.
type FsUsage struct {
	Timestamp time.Time
	Path      string // the overlay upper dir
	Bytes     uint64
	Inodes    uint64
	// The file system holding it (statfs): what cAdvisor reports as the
	// container's fs limit and inodes.
	CapacityBytes, InodesTotal, InodesFree uint64
}

// InterfaceStats are the counters of one network interface of a pod, as
// /proc/<pid>/net/dev shows them inside the pod's netns.
type InterfaceStats struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// NetworkStats are a pod's interfaces other than lo; empty for pods on the
// host network (their traffic is the node's).
type NetworkStats struct {
	Timestamp  time.Time
	Interfaces []InterfaceStats
}

// ContainerStats describes one container with, when it runs, its usage.
type ContainerStats struct {
	ID, SandboxID string
	Name          string // metadata.name
	Image         string // the image as the caller named it
	Attempt       uint32
	State         runtimeapi.ContainerState
	StartedAt     time.Time // zero before it started
	CgroupsPath   string
	// Resources in force (the create config's, updated by resizes).
	Resources *runtimeapi.LinuxContainerResources
	// Usage figures; zero unless State is RUNNING.
	Cgroup        CgroupStats
	WritableLayer FsUsage
}

// PodStats describes one pod sandbox with, when it is ready, its usage.
type PodStats struct {
	ID                   string
	Name, Namespace, UID string
	Ready                bool
	CreatedAt            time.Time
	CgroupParent         string
	// Usage figures; zero unless Ready.
	Cgroup  CgroupStats
	Network NetworkStats
	// Containers of this pod, in every state.
	Containers []ContainerStats
}

type statsEntry[T any] struct {
	mu       sync.Mutex // held while reading, so concurrent askers share one read
	at       time.Time  // when val was read
	val      T
	lastUsed time.Time
}

type statsCache struct {
	mu         sync.Mutex
	cgroups    map[string]*statsEntry[CgroupStats]  // by cgroupfs path
	fs         map[string]*statsEntry[FsUsage]      // by upper dir
	nets       map[string]*statsEntry[NetworkStats] // by sandbox id
	tasks      map[string]*statsEntry[TaskCounts]   // by cgroupfs path
	detail     map[string]*statsEntry[CgroupExtra]  // by cgroupfs path
	lastSweep  time.Time
	now        func() time.Time
	readCgroup func(path string) CgroupStats
	readFs     func(dir string) FsUsage
	readNet    func(pid int) NetworkStats
}

func newStatsCache() *statsCache {
	return &statsCache{
		cgroups:    map[string]*statsEntry[CgroupStats]{},
		fs:         map[string]*statsEntry[FsUsage]{},
		nets:       map[string]*statsEntry[NetworkStats]{},
		tasks:      map[string]*statsEntry[TaskCounts]{},
		detail:     map[string]*statsEntry[CgroupExtra]{},
		now:        time.Now,
		readCgroup: readCgroupStats,
		readFs: func(dir string) FsUsage {
			b, i := dirUsage(dir)
			u := FsUsage{Timestamp: time.Now(), Path: dir, Bytes: b, Inodes: i}
			var sfs syscall.Statfs_t
			if syscall.Statfs(dir, &sfs) == nil {
				u.CapacityBytes = sfs.Blocks * uint64(sfs.Bsize)
				u.InodesTotal, u.InodesFree = sfs.Files, sfs.Ffree
			}
			return u
		},
		readNet: readNetDev,
	}
}

// cached returns m[key]'s value, reading it with read when it is older
// than maxAge. The map lock is held only to find the entry.
func cached[T any](c *statsCache, m map[string]*statsEntry[T], key string, maxAge time.Duration, read func() T) T {
	now := c.now()
	c.mu.Lock()
	e, ok := m[key]
	if !ok {
		e = &statsEntry[T]{}
		m[key] = e
	}
	e.lastUsed = now
	c.sweepLocked(now)
	c.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.at.IsZero() || c.now().Sub(e.at) >= maxAge {
		e.val = read()
		e.at = c.now()
	}
	return e.val
}

// sweepLocked evicts entries unused for statsEvictAfter, at most once per
// statsEvictAfter. c.mu is held.
func (c *statsCache) sweepLocked(now time.Time) {
	if now.Sub(c.lastSweep) < statsEvictAfter {
		return
	}
	c.lastSweep = now
	sweep(c.cgroups, now)
	sweep(c.fs, now)
	sweep(c.nets, now)
	sweep(c.tasks, now)
	sweep(c.detail, now)
}

func sweep[T any](m map[string]*statsEntry[T], now time.Time) {
	for k, e := range m {
		if now.Sub(e.lastUsed) > statsEvictAfter {
			delete(m, k)
		}
	}
}

func (c *statsCache) cgroup(path string) CgroupStats {
	return cached(c, c.cgroups, path, StatsMaxAge, func() CgroupStats { return c.readCgroup(path) })
}

// readCgroupDetails reads the figures of CgroupExtra that the stats read
// leaves out (v1: their own files; v2: memory.swap.current, peak, events).
func readCgroupDetails(path string) CgroupExtra {
	var x CgroupExtra
	if unifiedOnly() {
		dir := filepath.Join(cgroupRoot, path)
		x.Swap, _ = readUint(filepath.Join(dir, "memory.swap.current"))
		x.MaxUsage, _ = readUint(filepath.Join(dir, "memory.peak"))
		ev := readKV(filepath.Join(dir, "memory.events"))
		x.Failcnt, x.OOMKills = ev["max"], ev["oom_kill"]
		return x
	}
	acct := filepath.Join(cgroupRoot, "cpuacct", path)
	u, uerr := readUint(filepath.Join(acct, "cpuacct.usage_user"))
	sy, serr := readUint(filepath.Join(acct, "cpuacct.usage_sys"))
	if uerr == nil && serr == nil {
		x.CPUUserNanos, x.CPUSystemNanos = u, sy
	} else { // older kernels: USER_HZ ticks
		kv := readKV(filepath.Join(acct, "cpuacct.stat"))
		x.CPUUserNanos, x.CPUSystemNanos = kv["user"]*1e7, kv["system"]*1e7
	}
	cpu := readKV(filepath.Join(cgroupRoot, "cpu", path, "cpu.stat"))
	x.CFSPeriods, x.CFSThrottledPeriods, x.CFSThrottledNanos = cpu["nr_periods"], cpu["nr_throttled"], cpu["throttled_time"]
	mem := filepath.Join(cgroupRoot, "memory", path)
	x.KernelUsage, _ = readUint(filepath.Join(mem, "memory.kmem.usage_in_bytes"))
	x.MaxUsage, _ = readUint(filepath.Join(mem, "memory.max_usage_in_bytes"))
	x.Failcnt, _ = readUint(filepath.Join(mem, "memory.failcnt"))
	x.OOMKills = readKV(filepath.Join(mem, "memory.oom_control"))["oom_kill"]
	return x
}

// details merges the cached detailed figures of path into extra (the
// ones the stats read filled stay).
func (c *statsCache) details(path string, extra CgroupExtra) CgroupExtra {
	d := cached(c, c.detail, path, StatsMaxAge, func() CgroupExtra { return readCgroupDetails(path) })
	if unifiedOnly() {
		extra.Swap, extra.MaxUsage, extra.Failcnt, extra.OOMKills = d.Swap, d.MaxUsage, d.Failcnt, d.OOMKills
		return extra
	}
	d.Cache, d.MappedFile, d.Swap = extra.Cache, extra.MappedFile, extra.Swap
	return d
}

// CgroupDetails completes cg (a stats read of path) with the figures only
// CRI metrics need, cached like the rest.
func (m *Manager) CgroupDetails(path string, cg CgroupStats) CgroupStats {
	cg.Extra = m.stats.details(path, cg.Extra)
	return cg
}

func (c *statsCache) taskCounts(path string) TaskCounts {
	return cached(c, c.tasks, path, StatsMaxAge, func() TaskCounts {
		var t TaskCounts
		dir := filepath.Join(cgroupRoot, "pids", path)
		if unifiedOnly() {
			dir = filepath.Join(cgroupRoot, path)
		}
		readTasks(dir, &t)
		return t
	})
}

// TaskCounts of the cgroup at path (a pod's parent or a container's),
// cached like the rest.
func (m *Manager) TaskCounts(path string) TaskCounts { return m.stats.taskCounts(path) }

func (c *statsCache) writable(dir string) FsUsage {
	return cached(c, c.fs, dir, FsStatsMaxAge, func() FsUsage { return c.readFs(dir) })
}

// network keys by sandbox id and pause pid: a restarted pause is another netns.
func (c *statsCache) network(sandboxID string, pid int) NetworkStats {
	key := sandboxID + "/" + strconv.Itoa(pid)
	return cached(c, c.nets, key, StatsMaxAge, func() NetworkStats { return c.readNet(pid) })
}

// readNetDev reads /proc/<pid>/net/dev, which shows the interfaces of the
// network namespace pid lives in: no setns, no exec, no netlink socket.
func readNetDev(pid int) NetworkStats {
	st := NetworkStats{Timestamp: time.Now()}
	data, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "net", "dev"))
	if err != nil {
		return st
	}
	st.Interfaces = parseNetDev(string(data))
	return st
}

var procRoot = "/proc"

// parseNetDev parses the net/dev table, leaving out lo.
//
//	Inter-|   Receive                                                |  Transmit
//	 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
//	  eth0:    1296      16    0    0    0     0          0         0      726       9    0    0    0     0       0          0
func parseNetDev(data string) []InterfaceStats {
	var out []InterfaceStats
	for _, line := range strings.Split(data, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || name == "" || len(f) < 16 {
			continue
		}
		var v [16]uint64
		bad := false
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				bad = true
				break
			}
			v[i] = n
		}
		if bad {
			continue
		}
		out = append(out, InterfaceStats{
			Name:    name,
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	return out
}

// ContainerStats describes c; its usage figures come from the cache.
func (m *Manager) ContainerStats(c *Container) ContainerStats {
	rec := c.Record()
	cfg := c.Config()
	md := cfg.GetMetadata()
	out := ContainerStats{
		Resources:   cfg.GetLinux().GetResources(),
		ID:          rec.ID,
		SandboxID:   rec.SandboxID,
		Name:        md.GetName(),
		Attempt:     md.GetAttempt(),
		Image:       rec.ImageName,
		State:       rec.State,
		CgroupsPath: rec.CgroupsPath,
	}
	if out.Image == "" {
		out.Image = rec.ImageRef
	}
	if rec.StartedAt != 0 {
		out.StartedAt = time.Unix(0, rec.StartedAt)
	}
	if rec.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		out.Cgroup = m.stats.cgroup(rec.CgroupsPath)
		out.WritableLayer = m.stats.writable(filepath.Join(m.containerRootDir(rec.ID), "upper"))
	}
	return out
}

// SandboxStats describes sb and its containers; usage figures come from
// the cache.
func (m *Manager) SandboxStats(sb *Sandbox) PodStats {
	return m.podStats(sb, m.containersOf(sb.ID()))
}

func (m *Manager) podStats(sb *Sandbox, containers []*Container) PodStats {
	rec := sb.Record()
	md := sb.Config().GetMetadata()
	out := PodStats{
		ID:           rec.ID,
		Name:         md.GetName(),
		Namespace:    md.GetNamespace(),
		UID:          md.GetUid(),
		Ready:        rec.State == runtimeapi.PodSandboxState_SANDBOX_READY,
		CreatedAt:    time.Unix(0, rec.CreatedAt),
		CgroupParent: rec.CgroupParent,
	}
	if out.Ready {
		out.Cgroup = m.stats.cgroup(rec.CgroupParent)
		if rec.NetNS != "" && rec.PausePid > 0 {
			out.Network = m.stats.network(rec.ID, rec.PausePid)
		}
	}
	for _, c := range containers {
		out.Containers = append(out.Containers, m.ContainerStats(c))
	}
	sort.Slice(out.Containers, func(i, j int) bool { return out.Containers[i].ID < out.Containers[j].ID })
	return out
}

// AllStats describes every pod and container of the node, for the
// Prometheus collector. Containers whose sandbox is gone are left out.
func (m *Manager) AllStats() []PodStats {
	sandboxes := m.Sandboxes()
	byPod := map[string][]*Container{}
	for _, c := range m.Containers() {
		id := c.Record().SandboxID
		byPod[id] = append(byPod[id], c)
	}
	// Reading a v1 memory.stat costs the kernel a walk of the cgroup's
	// hierarchy: read a few pods at once.
	out := make([]PodStats, len(sandboxes))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < statsReaders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = m.podStats(sandboxes[i], byPod[sandboxes[i].ID()])
			}
		}()
	}
	for i := range sandboxes {
		next <- i
	}
	close(next)
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// NodeStats are the figures of the node's root cgroup, cached like the rest.
func (m *Manager) NodeStats() CgroupStats {
	return m.stats.cgroup("/")
}
