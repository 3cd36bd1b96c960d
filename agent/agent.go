// Package agent is peapod's kubelet half: it runs the static pods of a
// manifest directory through the CRI (k8s.io/cri-api RuntimeService and
// ImageManagerService — the same interfaces the kubelet uses), and reports
// their status as a v1.PodList.
//
// Pieces:
//
//	manifest.go  the manifest directory → defaulted pods (+ ConfigMaps, Secrets,
//	             PVs, PVCs); a static pod's UID hashes its content
//	actions.go   decide: computePodActions(pod, observed) → podActions (pure)
//	worker.go    act: one goroutine per pod, observe → decide → execute
//	config.go    pod spec → PodSandboxConfig / ContainerConfig
//	env.go       environment variables and command/args $(VAR) expansion
//	             (resolved by package downward, shared with volumes/ subPathExpr)
//	status.go    observed state → v1.PodStatus; table.go, http.go the views
//
// Pod state is not persisted by the agent: restart counts come back from the
// CRI container attempts and annotations, as with the kubelet. The one
// exception is, as with the kubelet, the user namespace block of a pod
// with `hostUsers: false` (userns.go). runtimeclass.go resolves
// spec.runtimeClassName to the CRI handler. On start the
// agent adopts the sandboxes labelled with a desired pod's UID instead of
// re-creating them, and stops and removes the ones of pods that are gone.
// Ending Run leaves pods running.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/agent/objects"
	"peapod/downward"
	"peapod/internal/atomicfile"
)

// Defaults of Options.
const (
	DefaultManifestsDir = "/etc/peapod/manifests"
	DefaultStateDir     = "/var/lib/peapod/agent"
	DefaultPodLogsDir   = "/var/log/pods"
	DefaultSyncPeriod   = time.Second
)

// Agent runs static pods.
type Agent struct {
	o          Options
	clock      clock
	backOff    *backOff
	metrics    *metrics
	syncPeriod time.Duration
	resolvConf string

	nodeIPs         []string
	nodeAllocatable v1.ResourceList

	mu           sync.Mutex
	workers      map[types.UID]*worker
	removing     map[types.UID]bool
	objects      *Objects
	errors       []ManifestError
	manifestHash [32]byte
	desired      []*v1.Pod
	reaping      map[types.UID]bool
	scanned      bool
	wg           sync.WaitGroup

	// cluster is set in node mode.
	cluster *clusterState
	// cri shares CRI lists and statuses among the pod workers.
	cri *criCache
	// events: whether the runtime's container event stream is up.
	events eventsState
	// userns hands out the host ids of pods with `hostUsers: false`.
	userns *usernsAllocator
	// runtimeClasses resolves spec.runtimeClassName in node mode.
	runtimeClasses runtimeClassLookup
	// handlers caches the runtime's handlers and their features.
	handlers runtimeHandlers
}

// New checks o, fills in defaults and returns an Agent; Run starts it.
func New(o Options) (*Agent, error) {
	if o.Runtime == nil || o.Images == nil {
		return nil, errors.New("agent: Options.Runtime and Options.Images are required")
	}
	if o.ManifestsDir == "" {
		o.ManifestsDir = DefaultManifestsDir
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.PodLogsDir == "" {
		o.PodLogsDir = DefaultPodLogsDir
	}
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: node name: %w", err)
		}
		o.NodeName = strings.ToLower(h)
	}
	if o.SyncPeriod <= 0 {
		o.SyncPeriod = DefaultSyncPeriod
	}
	if o.MaxPerPodContainer == 0 {
		o.MaxPerPodContainer = 1
	}
	c := o.clock
	if c == nil {
		c = realClock{}
	}
	a := &Agent{
		o: o, clock: c,
		backOff:    newBackOff(c, backOffInitial, backOffMax),
		metrics:    newMetrics(o.Registerer),
		syncPeriod: o.SyncPeriod,
		resolvConf: "/etc/resolv.conf",
		workers:    map[types.UID]*worker{},
		removing:   map[types.UID]bool{},
		reaping:    map[types.UID]bool{},
		objects:    objects.New(),
		cri:        newCRICache(),
	}
	if o.NodeIP != "" {
		a.nodeIPs = []string{o.NodeIP}
	} else {
		a.nodeIPs = DetectNodeIPs()
	}
	a.nodeAllocatable = o.NodeAllocatable
	if a.nodeAllocatable == nil {
		a.nodeAllocatable = downward.NodeAllocatable()
	}
	ids := DefaultUserNamespaceIDs
	if o.UserNamespaceIDs != nil {
		ids = *o.UserNamespaceIDs
	}
	// Before any pod is synced: every block a pod holds is known.
	podsDir := ""
	if o.StateDir != "" {
		podsDir = filepath.Join(o.StateDir, "pods")
	}
	un, err := newUsernsAllocator(ids, podsDir, a.podDir)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.userns = un
	if o.Cluster != nil {
		cs, err := newClusterState(*o.Cluster, o.NodeName)
		if err != nil {
			return nil, err
		}
		a.cluster = cs
		a.runtimeClasses = cs.runtimeClasses
	}
	return a, nil
}

func (a *Agent) dnsSettings() dnsSettings {
	return dnsSettings{ResolvConf: a.resolvConf, ClusterDNS: a.o.ClusterDNS, ClusterDomain: a.o.ClusterDomain}
}

// Run watches the manifest directory and runs its pods until ctx ends. It
// leaves the pods running when it returns.
func (a *Agent) Run(ctx context.Context) error {
	if a.cluster != nil {
		// Before the first reconcile: until the API server's pods are
		// listed, their running sandboxes would look like orphans.
		if err := a.runCluster(ctx); err != nil {
			a.wg.Wait()
			return err
		}
	}
	a.rescan(ctx)
	a.reapOrphans(ctx)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.watchEvents(ctx)
	}()
	if p := a.o.Prober; p != nil {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.forwardProbeUpdates(ctx, p.Updates())
		}()
	}
	poll := min(max(a.syncPeriod, 100*time.Millisecond), 2*time.Second)
	t := time.NewTicker(poll)
	defer t.Stop()
	lastReap, lastObjects := a.clock.Now(), a.clock.Now()
	for {
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return nil
		case <-t.C:
		}
		a.rescan(ctx)
		if a.cluster != nil && a.clock.Now().Sub(lastObjects) > apiObjectsRefresh {
			lastObjects = a.clock.Now()
			a.updateVolumeObjects(ctx)
		}
		if a.clock.Now().Sub(lastReap) > time.Minute {
			lastReap = a.clock.Now()
			a.reapOrphans(ctx)
			a.backOff.GC()
		}
	}
}

func (a *Agent) forwardProbeUpdates(ctx context.Context, ch <-chan ProbeUpdate) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-ch:
			if !ok {
				return
			}
			a.mu.Lock()
			w := a.workers[u.PodUID]
			a.mu.Unlock()
			if w == nil {
				continue
			}
			pod := w.currentPod()
			if u.Warning {
				w.a.event(pod, v1.EventTypeWarning, "ProbeWarning", "%s probe warning: %s", u.Kind, u.Message)
				continue
			}
			if u.Result == ProbeFailure {
				w.a.event(pod, v1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", u.Kind, u.Message)
			}
			if (u.Kind == ProbeLiveness || u.Kind == ProbeStartup) && u.Result == ProbeFailure {
				kind := strings.ToLower(u.Kind.String())
				klog.InfoS("Probe failed; the container will be restarted", "probe", kind, "pod", klog.KObj(pod), "container", u.ContainerName, "message", u.Message)
				w.mu.Lock()
				w.liveFailed[u.ContainerID] = kind
				w.mu.Unlock()
			}
			w.kick()
		}
	}
}

// rescan re-reads the manifest directory when it changed and reconciles the
// workers with the desired pods.
func (a *Agent) rescan(ctx context.Context) {
	h, err := hashManifestDir(a.o.ManifestsDir)
	a.mu.Lock()
	changed := err != nil || h != a.manifestHash || !a.scanned
	a.mu.Unlock()
	if changed {
		set := readManifestDir(a.o.ManifestsDir, a.o.NodeName)
		if a.cluster != nil {
			// In a cluster, static pods are named <name>-<node> as the
			// kubelet names them, so that their mirror pods of several
			// nodes do not clash.
			for _, p := range set.Pods {
				p.Name += "-" + strings.ToLower(a.o.NodeName)
			}
		}
		for _, e := range set.Errors {
			klog.ErrorS(e.Err, "Invalid manifest", "file", e.File, "document", e.Doc, "pod", e.Namespace+"/"+e.Name)
		}
		for _, w := range set.Warnings {
			klog.InfoS("Manifest warning", "warning", w)
		}
		a.mu.Lock()
		a.manifestHash, a.scanned = h, true
		a.objects, a.errors, a.desired = set.Objects, set.Errors, set.Pods
		a.mu.Unlock()
		// ConfigMaps and Secrets may have changed: volumes that project
		// them are updated in place, as the kubelet does.
		a.updateVolumeObjects(ctx)
	}
	a.reconcile(ctx)
}

// reconcile starts workers for new pods and terminates removed ones. A pod
// whose namespace/name is still terminating under an old UID (a changed
// file) waits until that is done, as the kubelet does for static pods.
func (a *Agent) reconcile(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	want := a.wantLocked()
	terminatingNames := map[string]bool{}
	for uid, w := range a.workers {
		p, ok := want[uid]
		switch {
		case a.removing[uid]:
		case !ok:
			klog.InfoS("Pod removed from its source; terminating", "pod", klog.KObj(w.pod), "podUID", uid)
			a.terminateLocked(w, nil)
		case p.DeletionTimestamp != nil:
			klog.InfoS("Pod deleted in the API server; terminating", "pod", klog.KObj(w.pod), "podUID", uid, "gracePeriod", p.DeletionGracePeriodSeconds)
			a.terminateLocked(w, p.DeletionGracePeriodSeconds)
		}
		if a.removing[uid] {
			terminatingNames[objects.Key(w.pod.Namespace, w.pod.Name)] = true
		}
	}
	for uid, p := range want {
		if _, ok := a.workers[uid]; ok || terminatingNames[objects.Key(p.Namespace, p.Name)] || a.reaping[uid] {
			continue
		}
		a.startWorkerLocked(ctx, p)
		if p.DeletionTimestamp != nil {
			// Deleted while the agent was away or before it ran: stop
			// whatever runs of it, start nothing.
			a.terminateLocked(a.workers[uid], p.DeletionGracePeriodSeconds)
		}
	}
}

// wantLocked is every pod that should have a worker: the static pods and,
// in node mode, the admitted API pods.
func (a *Agent) wantLocked() map[types.UID]*v1.Pod {
	want := map[types.UID]*v1.Pod{}
	for _, p := range a.desired {
		want[p.UID] = p
	}
	if cs := a.cluster; cs != nil {
		cs.admitLocked(a)
		cs.wantLocked(want)
	}
	return want
}

// terminateLocked tells w to stop its pod, within grace seconds when set
// (a deletion's grace period) instead of the pod's own.
func (a *Agent) terminateLocked(w *worker, grace *int64) {
	if grace != nil {
		w.mu.Lock()
		g := *grace
		w.deletionGrace = &g
		w.mu.Unlock()
	}
	a.removing[w.pod.UID] = true
	close(w.terminate)
}

func (a *Agent) startWorkerLocked(ctx context.Context, pod *v1.Pod) {
	w := newWorker(a, pod)
	a.workers[pod.UID] = w
	if a.o.StateDir != "" {
		if err := os.MkdirAll(a.podDir(pod.UID), 0o755); err == nil {
			if b, err := json.Marshal(pod); err == nil {
				_ = atomicfile.WriteFile(filepath.Join(a.podDir(pod.UID), "pod.json"), b, 0o644)
			}
		}
	}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		w.run(ctx)
	}()
	go func() {
		defer a.wg.Done()
		<-w.done
		a.mu.Lock()
		if a.workers[pod.UID] == w {
			delete(a.workers, pod.UID)
			delete(a.removing, pod.UID)
		}
		a.mu.Unlock()
		if ctx.Err() == nil {
			a.workerDone(ctx, w)
			a.reconcile(ctx)
		}
	}()
}

func (a *Agent) podDir(uid types.UID) string {
	return filepath.Join(a.o.StateDir, "pods", string(uid))
}

func (a *Agent) currentObjects() *Objects {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.objects
}

// reapOrphans stops and removes the agent's sandboxes whose pod is no
// longer in the manifests (removed while peapod was down). Sandboxes of
// desired pods are left alone: their workers adopt them.
func (a *Agent) reapOrphans(ctx context.Context) {
	sbs, err := a.o.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelManagedBy: managedByAgent}})
	if err != nil {
		klog.ErrorS(err, "Listing sandboxes for orphans failed")
		return
	}
	a.mu.Lock()
	if cs := a.cluster; cs != nil && !cs.synced {
		a.mu.Unlock()
		return
	}
	want := map[types.UID]bool{}
	for uid := range a.wantLocked() {
		want[uid] = true
	}
	orphans := map[types.UID]*v1.Pod{}
	known := map[types.UID]bool{} // pods whose cgroups stay
	for uid := range want {
		known[uid] = true
	}
	for uid := range a.workers {
		known[uid] = true
	}
	for _, s := range sbs {
		known[types.UID(s.Labels[labelPodUID])] = true
	}
	for _, s := range sbs {
		uid := types.UID(s.Labels[labelPodUID])
		if uid == "" || want[uid] || a.workers[uid] != nil || a.reaping[uid] {
			continue
		}
		if orphans[uid] == nil {
			orphans[uid] = a.orphanPod(uid, s)
		}
	}
	for uid := range orphans {
		a.reaping[uid] = true
	}
	// The kubelet's CleanupOrphanedPodUsernsAllocations: the user
	// namespace of a pod that is neither wanted nor running (removed while
	// the agent was away, its sandboxes gone too) is free again. Under
	// a.mu: no worker of it can start meanwhile and take the block anew.
	for _, uid := range a.userns.allocated() {
		if !known[uid] && a.workers[uid] == nil && !a.reaping[uid] {
			klog.InfoS("Releasing the user namespace of a pod that is gone", "podUID", uid)
			a.userns.release(uid)
		}
	}
	a.removeOrphanedPodDirsLocked(known)
	a.mu.Unlock()
	if cg := a.o.Cgroups; cg != nil {
		// A worker started since the list above has made (or is about
		// to make) its pod's cgroup: ask again at removal time.
		keep := func(uid types.UID) bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return known[uid] || a.workers[uid] != nil
		}
		for _, path := range cg.RemoveOrphans(keep) {
			klog.InfoS("Removed the cgroup of a pod that is gone", "cgroup", path)
		}
	}
	if r, ok := a.o.Volumes.(OrphanVolumesReleaser); ok {
		// The kubelet's cleanup of orphaned pod dirs: volumes of pods that
		// never started (no sandbox to reap) are released here too. Pods
		// with sandboxes are known: removeOrphan tears them down.
		if err := r.ReleaseOrphans(ctx, known); err != nil {
			klog.ErrorS(err, "Releasing the volumes of pods that are gone failed; will retry")
		}
	}
	for uid, pod := range orphans {
		klog.InfoS("Removing the sandboxes of a pod that is no longer in the manifests", "pod", klog.KObj(pod), "podUID", uid)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer func() {
				a.mu.Lock()
				delete(a.reaping, uid)
				a.mu.Unlock()
			}()
			if err := a.removeOrphan(ctx, pod); err != nil {
				klog.ErrorS(err, "Removing orphaned pod failed; will retry", "pod", klog.KObj(pod))
			}
		}()
	}
}

// removeOrphanedPodDirsLocked is the kubelet's cleanupOrphanedPodDirs for
// the agent's own state: the dir of a pod that is neither wanted, running,
// nor left with a sandbox to reap (it never got one, or its sandbox went
// while the agent was away) holds nothing anyone will read again: its
// pod.json, /etc/hosts, termination-message files. A pod with a sandbox
// keeps it until removeOrphan has used its pod.json.
func (a *Agent) removeOrphanedPodDirsLocked(known map[types.UID]bool) {
	if a.o.StateDir == "" {
		return
	}
	dir := filepath.Join(a.o.StateDir, "pods")
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Listing the agent's pod state dirs failed", "dir", dir)
		}
		return
	}
	for _, e := range entries {
		uid := types.UID(e.Name())
		if !e.IsDir() || known[uid] || a.workers[uid] != nil || a.reaping[uid] {
			continue
		}
		klog.InfoS("Removing the state of a pod that is gone", "podUID", uid)
		if err := os.RemoveAll(a.podDir(uid)); err != nil {
			klog.ErrorS(err, "Removing the state of a pod that is gone failed; will retry", "podUID", uid)
		}
	}
}

// orphanPod is the last known spec of a pod (pod.json in its state dir), or
// a stand-in built from the sandbox labels.
func (a *Agent) orphanPod(uid types.UID, s *runtimeapi.PodSandbox) *v1.Pod {
	if a.o.StateDir != "" {
		if b, err := os.ReadFile(filepath.Join(a.podDir(uid), "pod.json")); err == nil {
			p := &v1.Pod{}
			if json.Unmarshal(b, p) == nil && p.UID == uid {
				return p
			}
		}
	}
	p := &v1.Pod{}
	p.UID = uid
	p.Name, p.Namespace = s.Labels[labelPodName], s.Labels[labelPodNamespace]
	if s.Metadata != nil {
		p.Name, p.Namespace = s.Metadata.Name, s.Metadata.Namespace
	}
	g := int64(v1.DefaultTerminationGracePeriodSeconds)
	p.Spec.TerminationGracePeriodSeconds = &g
	return p
}

func (a *Agent) removeOrphan(ctx context.Context, pod *v1.Pod) error {
	st, err := observePodFresh(ctx, a, pod, nil)
	if err != nil {
		return err
	}
	if err := killPodContainers(ctx, a, pod, st, nil); err != nil {
		return err
	}
	for _, sb := range st.Sandboxes {
		if err := a.o.Runtime.RemovePodSandbox(ctx, sb.ID); err != nil {
			return err
		}
	}
	if a.o.Volumes != nil && len(pod.Spec.Volumes) > 0 {
		if err := a.o.Volumes.TeardownPod(ctx, pod); err != nil {
			return err
		}
	}
	if p := a.o.Prober; p != nil {
		p.RemovePod(pod.UID)
	}
	a.userns.release(pod.UID)
	if a.o.StateDir != "" {
		_ = os.RemoveAll(a.podDir(pod.UID))
	}
	return nil
}

// Pods lists the agent's pods with their current status, plus one entry
// per invalid manifest document (status.reason InvalidManifest).
func (a *Agent) Pods() *v1.PodList {
	a.mu.Lock()
	workers := make([]*worker, 0, len(a.workers))
	for _, w := range a.workers {
		workers = append(workers, w)
	}
	removing := map[types.UID]bool{}
	for k, v := range a.removing {
		removing[k] = v
	}
	errs := append([]ManifestError(nil), a.errors...)
	a.mu.Unlock()

	// Items is never nil: an empty list is "items": [], as kubectl expects.
	list := &v1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: []v1.Pod{}}
	for _, w := range workers {
		p := w.currentPod().DeepCopy()
		p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		p.CreationTimestamp = metav1.NewTime(w.firstSeen)
		p.Status = w.podStatus()
		if p.Status.StartTime != nil {
			p.CreationTimestamp = *p.Status.StartTime
		}
		if removing[p.UID] {
			t := metav1.NewTime(a.clock.Now())
			p.DeletionTimestamp = &t
			p.DeletionGracePeriodSeconds = p.Spec.TerminationGracePeriodSeconds
		}
		list.Items = append(list.Items, *p)
	}
	for _, e := range errs {
		p := v1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}}
		p.Namespace, p.Name = e.Namespace, e.Name
		if p.Namespace == "" {
			p.Namespace = v1.NamespaceDefault
		}
		if p.Name == "" {
			p.Name = fmt.Sprintf("%s#%d", filepath.Base(e.File), e.Doc)
		}
		p.Annotations = map[string]string{annotationManifest: e.File}
		p.Status = v1.PodStatus{Phase: v1.PodPending, Reason: "InvalidManifest", Message: e.Error()}
		list.Items = append(list.Items, p)
	}
	sortPods(list.Items)
	return list
}

// hashManifestDir hashes the names and contents of the manifest files.
func hashManifestDir(dir string) ([32]byte, error) {
	h := sha256.New()
	entries, err := os.ReadDir(dir)
	if err != nil {
		fmt.Fprintf(h, "error:%v", errors.Is(err, os.ErrNotExist))
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		return sum, nil
	}
	for _, e := range entries {
		if e.IsDir() || !isManifestName(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			var zero [32]byte
			return zero, err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", e.Name(), len(b))
		h.Write(b)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// DetectNodeIPs returns the first global unicast IPv4 (then IPv6) address
// of the host: the node IP when none is configured.
func DetectNodeIPs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return []string{n.IP.String()}
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	if v6 != "" {
		return []string{v6}
	}
	return nil
}

// apiObjectsRefresh is how often, in node mode, the volumes get the API
// server's current ConfigMaps and Secrets (the object source caches them
// for a minute, as the kubelet's TTL cache does).
const apiObjectsRefresh = 30 * time.Second

// updateVolumeObjects hands the volume manager every object a running pod
// may project: the manifest directory's and, in node mode, those of each
// API pod, so that ConfigMap and Secret volumes follow their objects.
func (a *Agent) updateVolumeObjects(ctx context.Context) {
	u, ok := a.o.Volumes.(ObjectsUpdater)
	if !ok {
		return
	}
	a.mu.Lock()
	all := objects.New().Merge(a.objects)
	var apiPods []*v1.Pod
	if cs := a.cluster; cs != nil && cs.o.Objects != nil {
		for _, w := range a.workers {
			if !isStaticPod(w.pod) && !a.removing[w.pod.UID] {
				apiPods = append(apiPods, w.pod)
			}
		}
	}
	a.mu.Unlock()
	for _, p := range apiPods {
		objs, err := a.cluster.o.Objects.Objects(ctx, p)
		if err != nil {
			klog.V(2).InfoS("Refreshing the objects of a pod failed; its volumes keep the last ones", "pod", klog.KObj(p), "error", err)
			// Keep what the volumes have: a pod that lost its objects
			// for a moment must not see its files vanish.
			return
		}
		all = all.Merge(objs)
	}
	u.UpdateObjects(all)
}

// LogDir is the directory of pod's container logs:
// <pod_logs_dir>/<namespace>_<name>_<uid>, container attempt N in
// <container>/<N>.log (the kubelet API's containerLogs reads them).
func (a *Agent) LogDir(pod *v1.Pod) string {
	return podLogDir(a.o.PodLogsDir, pod)
}
