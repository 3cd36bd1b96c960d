package eviction

import (
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestRank(t *testing.T) {
	emptyDir := func(name string, medium v1.StorageMedium) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{Medium: medium}}}
	}
	ephemeral := func(q string) podOpt {
		return requests(v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse(q)}, nil)
	}
	// Disk fixtures: bytes on the writable layer, in logs, in volumes.
	diskPods := []*v1.Pod{
		newPod("layer"),
		newPod("logs"),
		newPod("emptydir", volumes(emptyDir("scratch", v1.StorageMediumDefault))),
		newPod("tmpfs", volumes(emptyDir("ram", v1.StorageMediumMemory))),
		newPod("requested", ephemeral("8Gi")),
	}
	diskStats := []podFigures{
		{uid: "layer", containers: []containerFigures{{name: "c", rootfs: 3 * gi}}},
		{uid: "logs", containers: []containerFigures{{name: "c", logs: 1 * gi}}},
		{uid: "emptydir", volumes: map[string]uint64{"scratch": 2 * gi}},
		{uid: "tmpfs", volumes: map[string]uint64{"ram": 10 * gi}}, // in memory: not on disk
		{uid: "requested", containers: []containerFigures{{name: "c", rootfs: 4 * gi}}},
	}

	for _, tc := range []struct {
		name      string
		sig       Signal
		dedicated bool
		pods      []*v1.Pod
		stats     []podFigures
		want      []string
	}{{
		name:  "memory: a BestEffort pod over its (zero) request before a Guaranteed one within it, whatever they use",
		sig:   SignalMemoryAvailable,
		pods:  []*v1.Pod{newPod("guaranteed", guaranteed("1", "1Gi")), newPod("besteffort")},
		stats: []podFigures{usingMemory("guaranteed", 900*mi), usingMemory("besteffort", 300*mi)},
		want:  []string{"besteffort", "guaranteed"},
	}, {
		name:  "memory: among pods over their requests, lower priority first",
		sig:   SignalMemoryAvailable,
		pods:  []*v1.Pod{newPod("important", priority(1000)), newPod("batch", priority(-10)), newPod("plain")},
		stats: []podFigures{usingMemory("important", 2*gi), usingMemory("batch", 10*mi), usingMemory("plain", 20*mi)},
		want:  []string{"batch", "plain", "important"},
	}, {
		name:  "memory: being over the request beats priority",
		sig:   SignalMemoryAvailable,
		pods:  []*v1.Pod{newPod("within", memRequest("1Gi"), priority(-100)), newPod("over", priority(100))},
		stats: []podFigures{usingMemory("within", 500*mi), usingMemory("over", 1*mi)},
		want:  []string{"over", "within"},
	}, {
		name:  "memory: same class and priority, more above the request first",
		sig:   SignalAllocatableMemoryAvailable,
		pods:  []*v1.Pod{newPod("small"), newPod("burstable", memRequest("100Mi")), newPod("big")},
		stats: []podFigures{usingMemory("small", 300*mi), usingMemory("burstable", 500*mi), usingMemory("big", 350*mi)},
		want:  []string{"burstable", "big", "small"},
	}, {
		name:  "memory: a pod without figures goes first",
		sig:   SignalMemoryAvailable,
		pods:  []*v1.Pod{newPod("hog"), newPod("new", priority(1000))},
		stats: []podFigures{usingMemory("hog", 3*gi)},
		want:  []string{"new", "hog"},
	}, {
		name:  "nodefs on one filesystem: layers, logs and local volumes; tmpfs is not disk; requests honoured",
		sig:   SignalNodeFsAvailable,
		pods:  diskPods,
		stats: diskStats,
		want:  []string{"layer", "emptydir", "logs", "tmpfs", "requested"},
	}, {
		name:  "imagefs on the same filesystem ranks as nodefs",
		sig:   SignalImageFsAvailable,
		pods:  diskPods,
		stats: diskStats,
		want:  []string{"layer", "emptydir", "logs", "tmpfs", "requested"},
	}, {
		name:      "nodefs with a dedicated imagefs: logs and local volumes only",
		sig:       SignalNodeFsAvailable,
		dedicated: true,
		pods:      diskPods,
		stats:     diskStats,
		want:      []string{"emptydir", "logs", "layer", "tmpfs", "requested"},
	}, {
		name:      "dedicated imagefs: writable layers only",
		sig:       SignalImageFsAvailable,
		dedicated: true,
		pods:      diskPods,
		stats:     diskStats,
		want:      []string{"layer", "logs", "emptydir", "tmpfs", "requested"},
	}, {
		name:  "inodes: nobody requests them, the most used first",
		sig:   SignalNodeFsInodesFree,
		pods:  diskPods,
		stats: diskStats,
		want:  []string{"requested", "layer", "emptydir", "logs", "tmpfs"},
	}, {
		name: "pids: lower priority, then more processes",
		sig:  SignalPIDAvailable,
		pods: []*v1.Pod{newPod("few"), newPod("many"), newPod("vip", priority(1000)), newPod("low", priority(-1))},
		stats: []podFigures{{uid: "few", procs: 10}, {uid: "many", procs: 100}, {uid: "vip", procs: 1000},
			{uid: "low", procs: 1}},
		want: []string{"low", "many", "few", "vip"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var ps []statsapi.PodStats
			for _, f := range tc.stats {
				ps = append(ps, f.stats())
			}
			pods := slices.Clone(tc.pods)
			rank(pods, tc.sig, indexPods(&statsapi.Summary{Pods: ps}), tc.dedicated)
			if got := names(pods); !slices.Equal(got, tc.want) {
				t.Errorf("order = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPodDiskUsageFallsBackToEphemeralStorage(t *testing.T) {
	ps := &statsapi.PodStats{EphemeralStorage: &statsapi.FsStats{UsedBytes: u64(12345), InodesUsed: u64(12)}}
	all := fsParts{rootfs: true, logs: true, volumes: true}
	if got := podDiskUsage(ps, newPod("p"), all, false); got != 12345 {
		t.Errorf("bytes = %d, want the pod's ephemeral storage", got)
	}
	if got := podDiskUsage(ps, newPod("p"), all, true); got != 12 {
		t.Errorf("inodes = %d, want the pod's ephemeral storage inodes", got)
	}
	// A dedicated imagefs's share is not the whole: no fallback.
	if got := podDiskUsage(ps, newPod("p"), fsParts{rootfs: true}, false); got != 0 {
		t.Errorf("rootfs only = %d, want 0", got)
	}
}

func TestPodRequest(t *testing.T) {
	q := resource.MustParse
	mem := func(s string) v1.ResourceRequirements {
		return v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceMemory: q(s)}}
	}
	always := v1.ContainerRestartPolicyAlways
	for _, tc := range []struct {
		name string
		spec v1.PodSpec
		want int64
	}{
		{"nothing requested", v1.PodSpec{Containers: []v1.Container{{Name: "a"}}}, 0},
		{"containers add up", v1.PodSpec{Containers: []v1.Container{{Name: "a", Resources: mem("100Mi")}, {Name: "b", Resources: mem("50Mi")}}}, 150 * mi},
		{"the largest init container wins", v1.PodSpec{
			InitContainers: []v1.Container{{Name: "i", Resources: mem("1Gi")}},
			Containers:     []v1.Container{{Name: "a", Resources: mem("100Mi")}}}, gi},
		{"a sidecar adds to the containers", v1.PodSpec{
			InitContainers: []v1.Container{{Name: "s", Resources: mem("10Mi"), RestartPolicy: &always}},
			Containers:     []v1.Container{{Name: "a", Resources: mem("100Mi")}}}, 110 * mi},
		{"overhead on top of a request", v1.PodSpec{
			Overhead:   v1.ResourceList{v1.ResourceMemory: q("5Mi")},
			Containers: []v1.Container{{Name: "a", Resources: mem("100Mi")}}}, 105 * mi},
		{"no overhead when nothing is requested", v1.PodSpec{
			Overhead:   v1.ResourceList{v1.ResourceMemory: q("5Mi")},
			Containers: []v1.Container{{Name: "a"}}}, 0},
		{"pod-level request", v1.PodSpec{
			Resources:  &v1.ResourceRequirements{Requests: v1.ResourceList{v1.ResourceMemory: q("2Gi")}},
			Containers: []v1.Container{{Name: "a", Resources: mem("100Mi")}}}, 2 * gi},
	} {
		if got := podRequest(&v1.Pod{Spec: tc.spec}, v1.ResourceMemory); got != tc.want {
			t.Errorf("%s: request = %d, want %d", tc.name, got, tc.want)
		}
	}
}
