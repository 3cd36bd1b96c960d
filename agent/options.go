package agent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/agent/objects"
)

// Options configure an Agent. Runtime and Images are required; everything
// else has a default.
type Options struct {
	// ManifestsDir is the static pod directory (default /etc/peapod/manifests).
	ManifestsDir string
	// StateDir holds per-pod agent files in pods/<uid>/: the last pod
	// spec, termination message files and the user namespace block of a
	// `hostUsers: false` pod (default /var/lib/peapod/agent). Pod status
	// itself is not persisted: it is derived from the CRI (container
	// attempts, labels, annotations) as the kubelet does.
	StateDir string
	// PodLogsDir is the root of pod log directories (default /var/log/pods).
	PodLogsDir string
	// NodeName names the node (default: os.Hostname). It is part of the
	// static pod UID hash and the value of spec.nodeName.
	NodeName string
	// NodeIP is status.hostIP (default: the first non-loopback address of the
	// host). Optional.
	NodeIP string
	// RuntimeName is the CRI runtime's name (VersionResponse.runtime_name):
	// container IDs in pod status read <RuntimeName>://<id>, as the
	// kubelet writes them. Default "peapod".
	RuntimeName string

	Runtime criapi.RuntimeService
	Images  criapi.ImageManagerService
	// Prober runs probes; nil means no probes are run (containers with a
	// readiness probe then never become ready, as with a failing prober).
	Prober Prober
	// Volumes sets pod volumes up; nil means pods that need any volume other
	// than emptyDir get the status error "volumes not available".
	Volumes Volumes
	// Registerer receives the agent metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// SyncPeriod is how often each pod worker re-reads its pod's CRI state
	// (default 1s). The manifest directory is polled at the same period,
	// but not more often than every 100ms and not less than every 2s.
	SyncPeriod time.Duration

	// ClusterDNS and ClusterDomain: the nameservers and search suffix of
	// ClusterFirst pods (agent.cluster_dns, agent.cluster_domain); no
	// cluster DNS means such pods get the node's resolv.conf.
	ClusterDNS    []string
	ClusterDomain string

	// MaxPerPodContainer is how many dead containers are kept per pod and
	// container name, newest first (agent.max_per_pod_container, the
	// kubelet's --maximum-dead-containers-per-container); older ones are
	// removed with their logs. The running container does not count;
	// negative keeps all; 0 means the default, 1. The newest attempt of a
	// name is kept whatever the limit: restartCount and lastState are read
	// from it (the kubelet keeps them in its own status cache instead).
	MaxPerPodContainer int

	// Cluster turns on node mode; nil runs the static pods only.
	Cluster *ClusterOptions

	// NodeAllocatable is the node's allocatable CPU and memory: the
	// downward API's limits.cpu / limits.memory of a container without
	// limits. Nil: the machine's CPUs and memory.
	NodeAllocatable v1.ResourceList

	// Cgroups gives each pod its cgroup in the QoS tree
	// (agent/podcgroups), the sandbox's CgroupParent; nil leaves the
	// parent to the runtime (agent.cgroups_per_qos = false).
	Cgroups PodCgroups

	// UserNamespaceIDs are the host ids the user namespaces of pods with
	// `hostUsers: false` are cut from, 65536 per pod; nil:
	// DefaultUserNamespaceIDs ([65536, 2^32), the kubelet's default).
	// peapod-agent passes KubeletIDRange().
	UserNamespaceIDs *IDRange

	// clock is replaced by tests.
	clock clock
}

// ClusterOptions make the agent a node of a cluster: it runs the pods the
// API server binds to it besides the static pods (mirrored there), reports
// their status and deletes them once stopped, as the kubelet does.
type ClusterOptions struct {
	// Client talks to the API server with the node's credentials.
	Client kubernetes.Interface
	// Node is the registered Node (node/): admission reads its labels,
	// taints and allocatable, mirror pods name it as their owner.
	Node NodeView
	// Objects fetches what API pods refer to (agent/apiobjects).
	Objects ObjectSource
	// MaxPods is the admission limit on pods (agent.max_pods).
	MaxPods int
	// Admit, when set, is asked first about every API pod (the eviction
	// manager refuses pods under node pressure, as the kubelet's
	// eviction admit handler); a refusal fails the pod with reason and
	// message.
	Admit func(pod *v1.Pod) (admit bool, reason, message string)
}

// NodeView is what the agent reads of the node (*node.Node has it).
type NodeView interface {
	// Current is the last known Node object, nil before registration.
	Current() *v1.Node
}

// ObjectSource gives API pods their ConfigMaps, Secrets, claims and
// service links (*apiobjects.Source has it).
type ObjectSource interface {
	Objects(ctx context.Context, pod *v1.Pod) (*Objects, error)
	Forget(pod *v1.Pod)
	ServiceEnv(pod *v1.Pod) ([]v1.EnvVar, error)
}

// PodCgroups is what the agent needs of the QoS cgroup tree;
// *podcgroups.Manager has it.
type PodCgroups interface {
	// EnsurePod creates (or updates) the pod's cgroup and returns its path.
	EnsurePod(pod *v1.Pod) (string, error)
	// PodCgroup is the pod's cgroup path, without touching it.
	PodCgroup(pod *v1.Pod) string
	// RemovePod removes the pod's cgroup once nothing runs in it.
	RemovePod(pod *v1.Pod) error
	// RemoveOrphans removes the cgroups of pods keep does not know.
	RemoveOrphans(keep func(types.UID) bool) []string
}

// Prober is what the agent needs of probes.Manager; *probes.Manager
// satisfies it (ProbeKind, ProbeResult and ProbeUpdate are aliases of the
// probes types).
type Prober interface {
	AddContainer(pod *v1.Pod, c *v1.Container, containerID, podIP string)
	RemoveContainer(podUID types.UID, containerName string)
	RemovePod(podUID types.UID)
	Updates() <-chan ProbeUpdate
	Result(podUID types.UID, containerName string, k ProbeKind) ProbeResult
}

// Objects are the ConfigMaps, Secrets, PersistentVolumes and claims read
// from the manifest directory, keyed by namespace/name. It lives in the leaf
// package agent/objects so volumes/ can import it without importing agent.
type Objects = objects.Objects

// Volumes is what the agent needs of the volume manager (volumes/).
type Volumes interface {
	// SetupPod makes every volume of pod ready (attach, then mount) and
	// returns, per container name, the CRI mounts to add (including
	// subPath). Blocks until done or ctx ends.
	SetupPod(ctx context.Context, pod *v1.Pod, objs *Objects) (map[string][]*runtimeapi.Mount, error)
	// TeardownPod unmounts and detaches every volume of pod.
	TeardownPod(ctx context.Context, pod *v1.Pod) error
}

// ObjectsUpdater is implemented by a Volumes that re-projects ConfigMap,
// Secret and downwardAPI volumes in place when the objects change.
type ObjectsUpdater interface {
	UpdateObjects(objs *Objects)
}

// OrphanVolumesReleaser is implemented by a Volumes that keeps pods'
// volumes across an agent restart: once the agent knows every pod it wants
// (its sources are ready), ReleaseOrphans releases the volumes of all other
// pods (mounts, loop devices, pod dirs) and keeps those of the pods in keep.
type OrphanVolumesReleaser interface {
	ReleaseOrphans(ctx context.Context, keep map[types.UID]bool) error
}

// VolumeExpander is implemented by a Volumes that grows the filesystem of
// a mounted volume once its disk has grown (online expansion; expand.go).
// It answers false, nil when the volume's driver has no node expansion.
type VolumeExpander interface {
	ExpandVolume(ctx context.Context, uid types.UID, volume string, newSize int64) (bool, error)
}

// clock is the time source of back-off and status; tests fake it.
type clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
