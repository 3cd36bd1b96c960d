package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"peapod/agent/eviction"
	"peapod/agent/podcgroups"
	"peapod/config"
	"peapod/internal/procfs"
)

// nodeResources are the node's capacity and what the configuration keeps
// away from pods, as the kubelet's container manager holds them.
type nodeResources struct {
	capacity v1.ResourceList // cpu, memory, ephemeral-storage, pid
	// reserved is system_reserved + kube_reserved.
	reserved v1.ResourceList
}

// readNodeResources reads the machine (cpus, MemTotal, pid_max, the
// filesystem of rootDir) and adds up the reservations.
func readNodeResources(a *config.Agent, rootDir string) (*nodeResources, error) {
	r := &nodeResources{capacity: v1.ResourceList{}, reserved: v1.ResourceList{}}
	r.capacity[v1.ResourceCPU] = *resource.NewMilliQuantity(int64(runtime.NumCPU())*1000, resource.DecimalSI)
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	total, ok := procfs.ParseMeminfo(b)["MemTotal"]
	if !ok {
		return nil, fmt.Errorf("/proc/meminfo: no MemTotal")
	}
	r.capacity[v1.ResourceMemory] = *resource.NewQuantity(int64(total), resource.BinarySI)
	// The agent keeps its pods' volumes and state there; on a fresh node
	// (the agent alone, before any pod) it may not be made yet.
	if err := os.MkdirAll(rootDir, 0o755); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", rootDir, err)
	}
	r.capacity[v1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(st.Blocks)*st.Bsize, resource.DecimalSI)
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			r.capacity["pid"] = *resource.NewQuantity(n, resource.DecimalSI)
		}
	}
	for _, m := range []map[string]string{a.SystemReserved, a.KubeReserved} {
		for name, v := range m {
			q, err := resource.ParseQuantity(v) // validated by config
			if err != nil {
				return nil, err
			}
			sum := r.reserved[v1.ResourceName(name)]
			sum.Add(q)
			r.reserved[v1.ResourceName(name)] = sum
		}
	}
	return r, nil
}

// kubepodsLimits are the limits of kubepods/: capacity − reserved with
// enforce_node_allocatable "pods" (the hard eviction thresholds are not
// in it: the kubelet leaves them to eviction, so that pods are evicted
// before the cgroup limit makes the kernel kill one), else the capacity.
func (r *nodeResources) kubepodsLimits(a *config.Agent) v1.ResourceList {
	out := v1.ResourceList{}
	enforce := slices.Contains(a.EnforceNodeAllocatable, "pods")
	for _, name := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory, "pid"} {
		c, ok := r.capacity[name]
		if !ok {
			continue
		}
		if res, ok := r.reserved[name]; ok && enforce {
			c.Sub(res)
			if c.Sign() <= 0 {
				klog.InfoS("Reservations exceed the node's capacity; kubepods gets the minimum", "resource", name, "capacity", r.capacity[name], "reserved", res)
				c = *resource.NewQuantity(1, c.Format)
				if name == v1.ResourceCPU {
					c = *resource.NewMilliQuantity(10, resource.DecimalSI)
				}
			}
		}
		out[name] = c
	}
	return out
}

// newPodCgroups makes the QoS cgroup tree, or nil with
// cgroups_per_qos = false.
func newPodCgroups(a *config.Agent, r *nodeResources) (*podcgroups.Manager, error) {
	if !a.CgroupsPerQOS {
		return nil, nil
	}
	m, err := podcgroups.New(podcgroups.Options{Root: a.CgroupRoot, NodeLimits: r.kubepodsLimits(a), PodPidsLimit: a.PodPidsLimit})
	if err != nil {
		return nil, fmt.Errorf("agent.cgroup_root %s: %w", a.CgroupRoot, err)
	}
	return m, nil
}

// allocatableReserve is what node allocatable leaves out of capacity:
// the reservations plus the hard eviction thresholds of memory and the
// node filesystem (a percentage taken of the capacity), as the kubelet's
// GetNodeAllocatableReservation.
func (r *nodeResources) allocatableReserve(thresholds []eviction.Threshold) v1.ResourceList {
	out := v1.ResourceList{}
	for name, q := range r.reserved {
		if name != "pid" {
			out[name] = q.DeepCopy()
		}
	}
	for name, q := range eviction.HardReservation(thresholds, r.capacity) {
		sum := out[name]
		sum.Add(q)
		out[name] = sum
	}
	return out
}
