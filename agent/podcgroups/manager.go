// Package podcgroups lays out the kubelet's cgroup tree for pods, as its
// cgroupfs driver does (pkg/kubelet/cm): under the cgroup root,
//
//	kubepods/                  node allocatable: cpu.shares, memory and pids limits
//	kubepods/pod<uid>/         Guaranteed pods
//	kubepods/burstable/        cpu.shares = the Burstable pods' CPU requests
//	kubepods/burstable/pod<uid>/
//	kubepods/besteffort/       cpu.shares = 2
//	kubepods/besteffort/pod<uid>/
//
// Each pod cgroup carries the pod's own limits (ResourceConfigForPod) and
// becomes the CgroupParent of the pod's sandbox, so the runtime (any CRI
// runtime) puts its containers below it. The agent owns this tree: the
// runtime never removes a parent it was given.
package podcgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"peapod/internal/cgroupfs"
)

// Options configure the tree.
type Options struct {
	// Root is the cgroup root (agent.cgroup_root), "/" by default.
	Root string
	// NodeLimits limit kubepods/: cpu (shares), memory and pid. With
	// enforce_node_allocatable "pods" they are capacity − reserved;
	// otherwise the capacity, as the kubelet sets them.
	NodeLimits v1.ResourceList
	// PodPidsLimit caps each pod cgroup's processes; ≤0: no limit.
	PodPidsLimit int64
}

// Manager creates, limits and removes the tree's cgroups. Safe for
// concurrent use.
type Manager struct {
	o    Options
	pods string // <root>/kubepods

	mu sync.Mutex
	// burstable CPU requests, by pod, for the burstable tier's shares.
	burstable map[types.UID]int64
}

// New creates kubepods/ and its QoS tiers and applies the node limits.
func New(o Options) (*Manager, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	if !filepath.IsAbs(o.Root) || strings.Contains(o.Root, "..") {
		return nil, fmt.Errorf("cgroup root %q must be an absolute path without ..", o.Root)
	}
	m := &Manager{o: o, pods: filepath.Join(o.Root, "kubepods"), burstable: map[types.UID]int64{}}
	if err := m.create(m.pods, nodeResources(o.NodeLimits)); err != nil {
		return nil, err
	}
	if err := m.create(m.tier(v1.PodQOSBurstable), Resources{CPUShares: minShares}); err != nil {
		return nil, err
	}
	if err := m.create(m.tier(v1.PodQOSBestEffort), Resources{CPUShares: minShares}); err != nil {
		return nil, err
	}
	return m, nil
}

// nodeResources are kubepods' limits (the kubelet's getCgroupConfig of
// node allocatable).
func nodeResources(l v1.ResourceList) Resources {
	var r Resources
	if q, ok := l[v1.ResourceCPU]; ok {
		r.CPUShares = MilliCPUToShares(q.MilliValue())
	}
	if q, ok := l[v1.ResourceMemory]; ok {
		r.MemoryLimit = q.Value()
	}
	if q, ok := l["pid"]; ok {
		r.PidsLimit = q.Value()
	}
	return r
}

// PodsCgroup is kubepods/'s cgroupfs path: the stats' "pods" system
// container, and what allocatableMemory.available is read from.
func (m *Manager) PodsCgroup() string { return m.pods }

func (m *Manager) tier(c v1.PodQOSClass) string {
	switch c {
	case v1.PodQOSBurstable:
		return filepath.Join(m.pods, "burstable")
	case v1.PodQOSBestEffort:
		return filepath.Join(m.pods, "besteffort")
	}
	return m.pods
}

// PodCgroup is the cgroupfs path of pod's cgroup.
func (m *Manager) PodCgroup(pod *v1.Pod) string {
	return filepath.Join(m.tier(QOSClass(pod)), "pod"+string(pod.UID))
}

// EnsurePod creates pod's cgroup with the pod's limits (again, when it
// exists: a resized pod's limits follow) and returns its path, the
// sandbox's CgroupParent.
func (m *Manager) EnsurePod(pod *v1.Pod) (string, error) {
	if pod.UID == "" || strings.ContainsAny(string(pod.UID), "/.") {
		return "", fmt.Errorf("pod %s/%s: uid %q cannot name a cgroup", pod.Namespace, pod.Name, pod.UID)
	}
	path := m.PodCgroup(pod)
	if err := m.create(path, podResources(pod, m.o.PodPidsLimit)); err != nil {
		return "", fmt.Errorf("pod %s/%s cgroup: %w", pod.Namespace, pod.Name, err)
	}
	if QOSClass(pod) == v1.PodQOSBurstable {
		m.mu.Lock()
		m.burstable[pod.UID] = cpuRequestMilli(pod)
		m.mu.Unlock()
		m.updateBurstable()
	}
	return path, nil
}

// RemovePod removes pod's cgroup once nothing runs in it. Cgroups the
// runtime left below it (a container cut short) go too; a cgroup with
// tasks stays and is an error.
func (m *Manager) RemovePod(pod *v1.Pod) error {
	m.mu.Lock()
	_, wasBurstable := m.burstable[pod.UID]
	delete(m.burstable, pod.UID)
	m.mu.Unlock()
	if wasBurstable {
		m.updateBurstable()
	}
	return removeTree(m.PodCgroup(pod))
}

// RemoveOrphans removes the pod cgroups of pods keep does not know (left
// by a pod deleted while the agent was down) and returns their paths.
// One that still has tasks stays, to be tried again.
func (m *Manager) RemoveOrphans(keep func(types.UID) bool) []string {
	var removed []string
	seen := map[string]bool{} // a pod's cgroup is in every hierarchy
	for _, tier := range []string{m.pods, m.tier(v1.PodQOSBurstable), m.tier(v1.PodQOSBestEffort)} {
		for _, dir := range cgroupfs.Dirs(tier) {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				uid, ok := strings.CutPrefix(e.Name(), "pod")
				path := filepath.Join(tier, e.Name())
				if !e.IsDir() || !ok || seen[path] || keep(types.UID(uid)) {
					continue
				}
				seen[path] = true
				if err := removeTree(path); err != nil {
					klog.V(2).InfoS("Orphaned pod cgroup not removed yet", "cgroup", path, "err", err)
					continue
				}
				m.mu.Lock()
				delete(m.burstable, types.UID(uid))
				m.mu.Unlock()
				removed = append(removed, path)
			}
		}
	}
	return removed
}

// updateBurstable sets the burstable tier's shares to the sum of its
// pods' CPU requests (the kubelet's setCPUCgroupConfig), so that
// Burstable pods together weigh what they asked for against the
// Guaranteed ones beside the tier.
func (m *Manager) updateBurstable() {
	m.mu.Lock()
	var milli int64
	for _, v := range m.burstable {
		milli += v
	}
	m.mu.Unlock()
	path := m.tier(v1.PodQOSBurstable)
	if err := setResources(path, Resources{CPUShares: MilliCPUToShares(milli)}); err != nil {
		klog.ErrorS(err, "Setting the burstable tier's CPU shares failed", "cgroup", path)
	}
}

func (m *Manager) create(path string, r Resources) error {
	if _, err := cgroupfs.Create(path); err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if cgroupfs.IsV2() {
		if err := enableV2Controllers(path); err != nil {
			return err
		}
	}
	return setResources(path, r)
}

// setResources writes r into the cgroup at path. A controller this host
// lacks (no pids hierarchy) is skipped: its limit cannot be had.
func setResources(path string, r Resources) error {
	var writes [][2]string
	if cgroupfs.IsV2() {
		if r.CPUShares > 0 {
			// runc's conversion of shares to cpu.weight.
			writes = append(writes, [2]string{"cpu.weight", strconv.FormatUint(1+((r.CPUShares-2)*9999)/262142, 10)})
		}
		quota := "max"
		if r.CPUQuotaUS > 0 {
			quota = strconv.FormatInt(r.CPUQuotaUS, 10)
		}
		writes = append(writes, [2]string{"cpu.max", quota + " " + strconv.Itoa(quotaPeriodUS)})
		writes = append(writes, [2]string{"memory.max", limitOrMax(r.MemoryLimit)})
	} else {
		if r.CPUShares > 0 {
			writes = append(writes, [2]string{"cpu.shares", strconv.FormatUint(r.CPUShares, 10)})
		}
		quota := int64(-1)
		if r.CPUQuotaUS > 0 {
			quota = r.CPUQuotaUS
			writes = append(writes, [2]string{"cpu.cfs_period_us", strconv.Itoa(quotaPeriodUS)})
		}
		writes = append(writes, [2]string{"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)})
		mem := int64(-1)
		if r.MemoryLimit > 0 {
			mem = r.MemoryLimit
		}
		writes = append(writes, [2]string{"memory.limit_in_bytes", strconv.FormatInt(mem, 10)})
	}
	writes = append(writes, [2]string{"pids.max", limitOrMax(r.PidsLimit)})
	var errs []error
	for _, w := range writes {
		if err := cgroupfs.Set(path, w[0], w[1]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func limitOrMax(v int64) string {
	if v <= 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// enableV2Controllers turns on cpu, memory and pids for every level from
// the root down to path's parent: on cgroup v2 a cgroup has a controller
// only when its parent delegates it.
func enableV2Controllers(path string) error {
	dir := cgroupfs.Root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return err
		}
		var enable []string
		for _, c := range strings.Fields(string(avail)) {
			if c == "cpu" || c == "memory" || c == "pids" || c == "cpuset" {
				enable = append(enable, "+"+c)
			}
		}
		if len(enable) > 0 {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
				return fmt.Errorf("%s: enable %v: %w", dir, enable, err)
			}
		}
		dir = filepath.Join(dir, part)
	}
	return nil
}

// removeTree removes the cgroup at path and every cgroup below it,
// deepest first, in every hierarchy. rmdir refuses a cgroup with tasks
// (EBUSY): that error is returned and the cgroup stays.
func removeTree(path string) error {
	var errs []error
	for _, dir := range cgroupfs.Dirs(path) {
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
