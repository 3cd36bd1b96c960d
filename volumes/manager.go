package volumes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/agent/objects"
	"peapod/volumes/csiplugin"
)

// Objects are the API objects pods' volumes refer to: the agent's, one
// type in a leaf package.
type Objects = objects.Objects

// Options configure a Manager.
type Options struct {
	PodsDir        string // /var/lib/peapod/pods
	PluginDir      string // flexvolume drivers: <dir>/<vendor>~<driver>/<driver>
	GlobalMountDir string // device (global) mounts: <dir>/<vendor>~<driver>/<volume>
	StateDir       string // pod and device records
	Registerer     prometheus.Registerer
	// Tokens issues the service account tokens of projected
	// serviceAccountToken sources; nil (no API server) makes such volumes
	// fail with an error saying so.
	Tokens TokenSource
	// CSIDrivers are the registered CSI drivers (the plugin watcher);
	// nil: CSI volumes fail, saying their driver is not registered.
	CSIDrivers *csiplugin.Registry
	// ControllerAttach, in node mode, is the API server's side of CSI
	// attach (attach.go): volumes whose driver needs one wait for their
	// VolumeAttachment instead of the agent calling
	// ControllerPublishVolume. nil (static mode): the agent attaches
	// through the driver's node endpoint when it serves the controller.
	ControllerAttach ControllerAttach
	// NodeName is the Kubernetes node name, part of VolumeAttachment
	// names; default the hostname.
	NodeName string
}

// TokenSource issues service account tokens bound to a pod (the
// TokenRequest API); *apiobjects.Source is one. It is expected to cache:
// token-bearing volumes ask for their token every tokenResyncPeriod, and a
// new token should come only when the current one nears its end.
type TokenSource interface {
	// Token returns a token for pod's service account with audience ("":
	// the API server's) and expirationSeconds (0: the default), and when it
	// expires.
	Token(ctx context.Context, pod *v1.Pod, audience string, expirationSeconds int64) (string, time.Time, error)
}

// Manager prepares pods' volumes and keeps them in their desired state.
type Manager struct {
	opts     Options
	flex     *flexRegistry
	nodeName string
	metrics  *metrics

	// mu serialises every operation on the node (setup, teardown, the
	// reconciler): operations are idempotent and short, except mkfs on a
	// first use, and one lock makes desired and actual state easy to reason
	// about.
	mu       sync.Mutex
	objs     *Objects
	objsGen  uint64
	pods     map[types.UID]*podEntry
	devices  map[string]*deviceState
	backoffs map[string]*backoff
	boundTo  map[string]string // PV name → claim key
	csi      *csiState         // csi.go
	inUse    inUse             // attach.go

	kick chan struct{}
}

// podEntry is a pod in the desired state (or terminating) with the actual
// state of each of its volumes.
type podEntry struct {
	pod         *v1.Pod
	volumes     []*volumeSpec
	terminating bool
	state       map[string]*volState // by volume name
	// held: rebuilt from its record after a restart and not claimed yet
	// (restart.go): nothing is set up or released for it.
	held bool
	// fromRecord: its volumes are the record's, not resolved since the
	// restart; its first SetupPod resolves them again.
	fromRecord bool
}

type volState struct {
	ready    bool
	hostPath string // what containers get (the pod volume dir, or the host path)
	gen      uint64 // objects generation a projection was written from
	// projected is when a projection was last written (or found
	// unchanged): token-bearing ones are written again each
	// tokenResyncPeriod.
	projected time.Time
	// published is when a CSI volume was last published (zero: adopted
	// after a restart): a requiresRepublish driver gets it again
	// (csiRepublish).
	published time.Time
	err       error // last setup error
}

// deviceState is a node-wide device: attached (flex attach) and mounted at
// its global path (mountdevice), shared by every pod volume naming it.
type deviceState struct {
	deviceRecord
	Mounted bool
	// stale are peapod/loop devices of this volume that hold another file
	// than the one it names (restart.go), released before it is used.
	stale []loopInfo
	// inspectErr: its loop devices could not be examined (the named image
	// is missing); examined again before use.
	inspectErr error
	// formerImages are images it named before, whose loop devices are
	// stale.
	formerImages []string
}

// New creates a Manager and reconstructs the actual state from StateDir,
// /proc/self/mountinfo and the loop devices.
func New(o Options) (*Manager, error) {
	if o.PodsDir == "" || o.StateDir == "" || o.GlobalMountDir == "" {
		return nil, errors.New("volumes: PodsDir, GlobalMountDir and StateDir are required")
	}
	for _, d := range []string{o.PodsDir, o.StateDir, o.GlobalMountDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	m := &Manager{
		opts:     o,
		flex:     &flexRegistry{pluginDir: o.PluginDir, builtin: map[string]flexDriver{loopDriverName: loopDriver{}}},
		nodeName: host,
		objs:     &Objects{},
		pods:     map[types.UID]*podEntry{},
		devices:  map[string]*deviceState{},
		backoffs: map[string]*backoff{},
		boundTo:  map[string]string{},
		kick:     make(chan struct{}, 1),
	}
	if o.NodeName != "" {
		m.nodeName = o.NodeName
	}
	m.metrics = newMetrics(m)
	if o.Registerer != nil {
		if err := m.metrics.register(o.Registerer); err != nil {
			return nil, err
		}
	}
	if err := m.initCSI(); err != nil {
		return nil, fmt.Errorf("volumes: CSI records: %w", err)
	}
	if err := m.reconstruct(); err != nil {
		return nil, fmt.Errorf("volumes: reconstruct state: %w", err)
	}
	m.updateInUseLocked()
	return m, nil
}

func (m *Manager) podDir(uid types.UID) string { return filepath.Join(m.opts.PodsDir, string(uid)) }

func (m *Manager) volumeDir(uid types.UID, vs *volumeSpec) string {
	return filepath.Join(m.podDir(uid), "volumes", vs.DirName, vs.SpecName)
}

// SetupPod makes every volume of pod ready (attach, mount, project) and
// returns, per container name (init containers included), the CRI mounts
// with subPaths bind-mounted. The pod stays in the desired state until
// TeardownPod, so a failed volume is retried by Run with back-off, and
// calling SetupPod again is cheap once all is ready.
func (m *Manager) SetupPod(ctx context.Context, pod *v1.Pod, objs *Objects) (map[string][]*runtimeapi.Mount, error) {
	if pod == nil || pod.UID == "" {
		return nil, errors.New("volumes: pod without UID")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if objs != nil {
		m.objs = m.objs.Merge(objs)
		m.objsGen++
	}
	pe := m.pods[pod.UID]
	if pe != nil && pe.terminating {
		return nil, fmt.Errorf("volumes: pod %s is being torn down", pod.UID)
	}
	if pe == nil {
		vols, err := m.resolveVolumes(ctx, pod, m.objs)
		if err != nil {
			return nil, fmt.Errorf("volumes: pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		pe = &podEntry{pod: pod.DeepCopy(), volumes: vols, state: map[string]*volState{}}
		if err := m.savePod(pe); err != nil {
			return nil, err
		}
		m.pods[pod.UID] = pe
	} else {
		if pe.fromRecord {
			m.reresolve(ctx, pe, pod)
		}
		pe.held = false
		pe.pod = pod.DeepCopy() // labels and annotations feed downwardAPI
	}
	m.reconcileLocked(ctx)

	var errs []string
	for _, vs := range pe.volumes {
		st := pe.state[vs.Name]
		if st == nil || !st.ready {
			e := "not ready"
			if st != nil && st.err != nil {
				e = st.err.Error()
			}
			errs = append(errs, fmt.Sprintf("volume %q: %s", vs.Name, e))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("volumes: pod %s/%s: %s", pod.Namespace, pod.Name, strings.Join(errs, "; "))
	}
	return m.containerMounts(pe)
}

// containerMounts builds the CRI mounts; subPath and subPathExpr are
// resolved beneath the volume and bind-mounted.
func (m *Manager) containerMounts(pe *podEntry) (map[string][]*runtimeapi.Mount, error) {
	pod := pe.pod
	byName := map[string]*volumeSpec{}
	for _, vs := range pe.volumes {
		byName[vs.Name] = vs
	}
	out := map[string][]*runtimeapi.Mount{}
	var containers []v1.Container
	containers = append(containers, pod.Spec.InitContainers...)
	containers = append(containers, pod.Spec.Containers...)
	for ci := range containers {
		c := &containers[ci]
		var env map[string]string
		mounts := []*runtimeapi.Mount{}
		if len(c.VolumeDevices) > 0 {
			return nil, fmt.Errorf("container %q: volumeDevices (raw block) are not supported", c.Name)
		}
		for idx, vm := range c.VolumeMounts {
			vs := byName[vm.Name]
			if vs == nil {
				return nil, fmt.Errorf("container %q: volumeMount %q names no volume", c.Name, vm.Name)
			}
			host := pe.state[vs.Name].hostPath
			// The projected kinds are read-only in containers whatever the
			// volumeMount says (the kubelet: mustMountRO, their
			// attributes' ReadOnly); only the atomicWriter writes them.
			ro := vm.ReadOnly || vs.ReadOnly || vs.projection()
			sub := vm.SubPath
			if vm.SubPathExpr != "" {
				if env == nil {
					var err error
					if env, err = containerEnv(pod, c, m.objs); err != nil {
						return nil, fmt.Errorf("container %q: %w", c.Name, err)
					}
				}
				s, err := expandSubPathExpr(vm.SubPathExpr, env)
				if err != nil {
					return nil, fmt.Errorf("container %q: %w", c.Name, err)
				}
				sub = s
			}
			if sub != "" {
				target := filepath.Join(m.podDir(pod.UID), subPathsDirName, vm.Name, c.Name, fmt.Sprint(idx))
				err := bindSubPath(host, sub, target, ro)
				m.metrics.op("subpath", vs.Plugin, err)
				if err != nil {
					return nil, fmt.Errorf("container %q volumeMount %q: %w", c.Name, vm.Name, err)
				}
				host = target
			}
			mnt := &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: ro}
			if vm.MountPropagation != nil {
				switch *vm.MountPropagation {
				case v1.MountPropagationHostToContainer:
					mnt.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
				case v1.MountPropagationBidirectional:
					mnt.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
				}
			}
			if vm.RecursiveReadOnly != nil && *vm.RecursiveReadOnly == v1.RecursiveReadOnlyEnabled {
				mnt.RecursiveReadOnly = true
			}
			mounts = append(mounts, mnt)
		}
		out[c.Name] = mounts
	}
	return out, nil
}

// TeardownPod unmounts and removes the pod's volumes (and subPath mounts),
// then unmounts and detaches devices no other pod uses. On error the pod
// stays terminating and Run retries.
func (m *Manager) TeardownPod(ctx context.Context, pod *v1.Pod) error {
	if pod == nil || pod.UID == "" {
		return errors.New("volumes: pod without UID")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	pe := m.pods[pod.UID]
	if pe == nil {
		// Unknown (never set up, or its record is gone): clean up what is on
		// disk anyway.
		pe = &podEntry{pod: pod.DeepCopy(), state: map[string]*volState{}}
		m.pods[pod.UID] = pe
	}
	pe.held = false
	if !pe.terminating {
		pe.terminating = true
		if err := m.savePod(pe); err != nil {
			return err
		}
	}
	// A teardown asked for now is not held back by an earlier failure.
	delete(m.backoffs, "teardown/"+string(pod.UID))
	m.reconcileLocked(ctx)
	if _, still := m.pods[pod.UID]; still {
		if b := m.backoffs["teardown/"+string(pod.UID)]; b != nil && b.err != nil {
			return fmt.Errorf("volumes: teardown pod %s: %w", pod.UID, b.err)
		}
		return fmt.Errorf("volumes: teardown pod %s: not finished", pod.UID)
	}
	// Devices left behind by this pod must be gone too.
	for key, b := range m.backoffs {
		if strings.HasPrefix(key, "unmountdevice/") || strings.HasPrefix(key, "detach/") {
			if b.err != nil {
				return fmt.Errorf("volumes: release device after pod %s: %w", pod.UID, b.err)
			}
		}
	}
	return nil
}

// UpdateObjects replaces the ConfigMaps, Secrets, PVs and PVCs the Manager
// knows and re-projects changed content into running pods' volumes in
// place (atomically, through the ..data swap).
func (m *Manager) UpdateObjects(objs *Objects) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs = (&Objects{}).Merge(objs)
	m.objsGen++
	m.reconcileLocked(context.Background())
}

// Run reconciles until ctx is done: it retries failed operations when their
// back-off expires, re-projects objects, finishes teardowns and releases
// unused devices.
func (m *Manager) Run(ctx context.Context) {
	go m.metrics.refreshLoop(ctx)
	t := time.NewTicker(resyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.kick:
		}
		m.mu.Lock()
		m.reconcileLocked(ctx)
		m.mu.Unlock()
	}
}

// PodUIDs lists the pods the Manager holds volumes for (desired or
// terminating), so a restarted agent can tear down the ones it no longer has.
func (m *Manager) PodUIDs() []types.UID {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]types.UID, 0, len(m.pods))
	for uid := range m.pods {
		out = append(out, uid)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

var resyncPeriod = 2 * time.Second
