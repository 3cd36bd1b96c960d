package eviction

import (
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// t0 is the fake clock's start.
var t0 = time.Unix(1_800_000_000, 0)

const (
	mi = 1 << 20
	gi = 1 << 30
)

func u64(v uint64) *uint64 { return &v }
func i64(v int64) *int64   { return &v }

// nodeFigures are a summary's node-level figures; a zero group is left
// out of the summary.
type nodeFigures struct {
	memAvail, memWS          uint64
	podsAvail, podsWS        uint64 // the "pods" system container
	fsAvail, fsCap           uint64
	inodesFree, inodes       uint64
	imgAvail, imgCap         uint64 // no imagefs when imgCap is 0
	imgInodesFree, imgInodes uint64
	maxPID, procs            int64
}

// defaultNode is a 4Gi node, nothing under pressure.
func defaultNode() nodeFigures {
	return nodeFigures{
		memAvail: 3 * gi, memWS: 1 * gi,
		fsAvail: 50 * gi, fsCap: 100 * gi, inodesFree: 900_000, inodes: 1_000_000,
		maxPID: 32768, procs: 300,
	}
}

func (n nodeFigures) summary(now time.Time, pods ...statsapi.PodStats) *statsapi.Summary {
	ts := metav1.NewTime(now)
	s := &statsapi.Summary{Node: statsapi.NodeStats{NodeName: "n1"}, Pods: pods}
	if n.memAvail+n.memWS > 0 {
		s.Node.Memory = &statsapi.MemoryStats{Time: ts, AvailableBytes: u64(n.memAvail), WorkingSetBytes: u64(n.memWS)}
	}
	if n.podsAvail+n.podsWS > 0 {
		s.Node.SystemContainers = []statsapi.ContainerStats{
			{Name: "kubelet"},
			{Name: statsapi.SystemContainerPods, Memory: &statsapi.MemoryStats{Time: ts, AvailableBytes: u64(n.podsAvail), WorkingSetBytes: u64(n.podsWS)}},
		}
	}
	if n.fsCap > 0 {
		s.Node.Fs = &statsapi.FsStats{Time: ts, AvailableBytes: u64(n.fsAvail), CapacityBytes: u64(n.fsCap),
			InodesFree: u64(n.inodesFree), Inodes: u64(n.inodes)}
	}
	if n.imgCap > 0 {
		s.Node.Runtime = &statsapi.RuntimeStats{ImageFs: &statsapi.FsStats{Time: ts, AvailableBytes: u64(n.imgAvail), CapacityBytes: u64(n.imgCap),
			InodesFree: u64(n.imgInodesFree), Inodes: u64(n.imgInodes)}}
	}
	if n.maxPID > 0 {
		s.Node.Rlimit = &statsapi.RlimitStats{Time: ts, MaxPID: i64(n.maxPID), NumOfRunningProcesses: i64(n.procs)}
	}
	return s
}

// podFigures are one pod's figures in a summary.
type podFigures struct {
	uid        string
	containers []containerFigures
	procs      uint64
	volumes    map[string]uint64 // name → used bytes (and inodes)
}

type containerFigures struct {
	name             string
	ws, rootfs, logs uint64
}

// stats is the pod's entry in a summary: memory is the containers' sum,
// and each fs figure's inodes are its bytes / 1000.
func (p podFigures) stats() statsapi.PodStats {
	ps := statsapi.PodStats{PodRef: statsapi.PodReference{Name: p.uid, Namespace: "default", UID: p.uid}}
	var ws uint64
	for _, c := range p.containers {
		ws += c.ws
		ps.Containers = append(ps.Containers, statsapi.ContainerStats{
			Name:   c.name,
			Memory: &statsapi.MemoryStats{WorkingSetBytes: u64(c.ws)},
			Rootfs: &statsapi.FsStats{UsedBytes: u64(c.rootfs), InodesUsed: u64(c.rootfs / 1000)},
			Logs:   &statsapi.FsStats{UsedBytes: u64(c.logs), InodesUsed: u64(c.logs / 1000)},
		})
	}
	ps.Memory = &statsapi.MemoryStats{WorkingSetBytes: u64(ws)}
	ps.ProcessStats = &statsapi.ProcessStats{ProcessCount: u64(p.procs)}
	for name, used := range p.volumes {
		ps.VolumeStats = append(ps.VolumeStats, statsapi.VolumeStats{Name: name,
			FsStats: statsapi.FsStats{UsedBytes: u64(used), InodesUsed: u64(used / 1000)}})
	}
	return ps
}

// usingMemory is a one-container pod's figures.
func usingMemory(uid string, ws uint64) podFigures {
	return podFigures{uid: uid, containers: []containerFigures{{name: "c", ws: ws}}}
}

type podOpt func(*v1.Pod)

// newPod is a pod of one container "c" (name and UID the same); opts
// change it.
func newPod(name string, opts ...podOpt) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name)},
		Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "c"}}},
		Status:     v1.PodStatus{Phase: v1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// requests sets container c's requests and limits ("" leaves one out).
func requests(req, lim v1.ResourceList) podOpt {
	return func(p *v1.Pod) {
		p.Spec.Containers[0].Resources = v1.ResourceRequirements{Requests: req, Limits: lim}
	}
}

func memRequest(q string) podOpt {
	return requests(v1.ResourceList{v1.ResourceMemory: resource.MustParse(q)}, nil)
}

// guaranteed gives container c equal requests and limits.
func guaranteed(cpu, mem string) podOpt {
	l := v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu), v1.ResourceMemory: resource.MustParse(mem)}
	return requests(l, l)
}

func priority(p int32) podOpt {
	return func(pod *v1.Pod) { pod.Spec.Priority = &p }
}

func grace(s int64) podOpt {
	return func(pod *v1.Pod) { pod.Spec.TerminationGracePeriodSeconds = &s }
}

func annotate(k, v string) podOpt {
	return func(pod *v1.Pod) {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[k] = v
	}
}

func volumes(vs ...v1.Volume) podOpt {
	return func(pod *v1.Pod) { pod.Spec.Volumes = append(pod.Spec.Volumes, vs...) }
}

func names(pods []*v1.Pod) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}
