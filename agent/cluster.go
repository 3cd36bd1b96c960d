package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"peapod/agent/objects"
)

// annotationConfigMirror marks a mirror pod, the API server's copy of a
// static pod; its value is the static pod's config hash (its UID here).
const annotationConfigMirror = "kubernetes.io/config.mirror"

// clusterState is the node mode half of the Agent: the pods the API server
// binds to this node, which of them were admitted, and the mirror pods.
// Its maps are guarded by Agent.mu.
type clusterState struct {
	o        ClusterOptions
	informer cache.SharedIndexInformer
	recorder record.EventRecorder
	status   *statusManager

	// pods are the API pods bound to this node (mirror pods excluded),
	// as last seen by the informer.
	pods map[types.UID]*v1.Pod
	// mirrors are the mirror pods by namespace/name.
	mirrors map[string]*v1.Pod
	// admitted pods are run; rejected ones are set Failed with the reason.
	admitted map[types.UID]bool
	rejected map[types.UID]admitResult
	// finished pods were stopped after their deletion and wait for the
	// API server to drop them: they are never started again.
	finished map[types.UID]bool
	synced   bool
	// runtimeClasses are the API server's RuntimeClasses (runtimeclass.go).
	runtimeClasses *runtimeClassCache
}

func newClusterState(o ClusterOptions, nodeName string) (*clusterState, error) {
	if o.Client == nil || o.Node == nil {
		return nil, errors.New("agent: ClusterOptions.Client and Node are required")
	}
	if o.MaxPods <= 0 {
		o.MaxPods = 110
	}
	cs := &clusterState{
		o:        o,
		pods:     map[types.UID]*v1.Pod{},
		mirrors:  map[string]*v1.Pod{},
		admitted: map[types.UID]bool{},
		rejected: map[types.UID]admitResult{},
		finished: map[types.UID]bool{},
	}
	// Only the pods bound to this node: the Node authorizer lets a node
	// list and watch exactly these, and the kubelet watches the same.
	f := informers.NewSharedInformerFactoryWithOptions(o.Client, 0, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	}))
	cs.informer = f.Core().V1().Pods().Informer()
	cs.runtimeClasses = newRuntimeClassCache(o.Client)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: o.Client.CoreV1().Events("")})
	cs.recorder = b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: nodeName})
	return cs, nil
}

// runCluster starts the pod informer and the status manager and waits for
// the first list, so that no running pod is taken for an orphan.
func (a *Agent) runCluster(ctx context.Context) error {
	cs := a.cluster
	_, err := cs.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.podSeen(ctx, obj) },
		UpdateFunc: func(_, obj any) { a.podSeen(ctx, obj) },
		DeleteFunc: func(obj any) { a.podGone(ctx, obj) },
	})
	if err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		cs.informer.Run(ctx.Done())
	}()
	cs.runtimeClasses.start(ctx.Done())
	if o := cs.o.Objects; o != nil {
		if r, ok := o.(interface{ Run(context.Context) }); ok {
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				r.Run(ctx)
			}()
		}
	}
	klog.InfoS("Waiting for the API server's pods of this node", "node", a.o.NodeName)
	if !cache.WaitForCacheSync(ctx.Done(), cs.informer.HasSynced) {
		return ctx.Err()
	}
	a.mu.Lock()
	cs.synced = true
	a.mu.Unlock()
	cs.status = newStatusManager(a)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		cs.status.run(ctx)
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.runExpansion(ctx)
	}()
	return nil
}

func (a *Agent) podSeen(ctx context.Context, obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	cs := a.cluster
	if isMirrorPod(pod) {
		cs.mirrors[objects.Key(pod.Namespace, pod.Name)] = pod
		a.mu.Unlock()
		return
	}
	cs.pods[pod.UID] = pod
	if w := a.workers[pod.UID]; w != nil && !a.removing[pod.UID] {
		if np := updatedPod(w.currentPod(), pod); np != nil {
			w.updatePod(np)
		}
	}
	a.mu.Unlock()
	if pod.DeletionTimestamp != nil || !cs.isAdmitted(a, pod.UID) {
		a.reconcile(ctx)
	}
}

func (a *Agent) podGone(ctx context.Context, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	a.mu.Lock()
	cs := a.cluster
	if isMirrorPod(pod) {
		if m := cs.mirrors[objects.Key(pod.Namespace, pod.Name)]; m != nil && m.UID == pod.UID {
			delete(cs.mirrors, objects.Key(pod.Namespace, pod.Name))
		}
		a.mu.Unlock()
		return
	}
	delete(cs.pods, pod.UID)
	delete(cs.admitted, pod.UID)
	delete(cs.rejected, pod.UID)
	delete(cs.finished, pod.UID)
	a.mu.Unlock()
	if o := cs.o.Objects; o != nil {
		o.Forget(pod)
	}
	if s := cs.status; s != nil {
		s.forget(pod.UID)
	}
	a.reconcile(ctx)
}

func (cs *clusterState) isAdmitted(a *Agent, uid types.UID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return cs.admitted[uid]
}

func isMirrorPod(p *v1.Pod) bool {
	_, ok := p.Annotations[annotationConfigMirror]
	return ok
}

func isTerminal(p *v1.Pod) bool {
	return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed
}

// admitLocked decides on the API pods not decided yet, oldest first, as
// the kubelet's HandlePodAdditions: each against the node and the pods
// admitted before it. A pod being deleted is admitted whatever it asks,
// so that its worker stops what may run of it and it can be removed; a
// pod already Succeeded or Failed is never run again.
func (cs *clusterState) admitLocked(a *Agent) {
	if !cs.synced {
		return
	}
	var pending []*v1.Pod
	for uid, p := range cs.pods {
		if cs.admitted[uid] {
			continue
		}
		if p.DeletionTimestamp != nil {
			cs.admitted[uid] = true
			continue
		}
		if _, done := cs.rejected[uid]; done || isTerminal(p) {
			continue
		}
		pending = append(pending, p)
	}
	if len(pending) == 0 {
		return
	}
	node := cs.o.Node.Current()
	if node == nil {
		return // not registered yet: nothing to admit against
	}
	sort.Slice(pending, func(i, j int) bool {
		ti, tj := pending[i].CreationTimestamp, pending[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return pending[i].UID < pending[j].UID
	})
	for _, p := range pending {
		var r admitResult
		if cs.o.Admit != nil {
			r.Admit, r.Reason, r.Message = cs.o.Admit(p)
		}
		if r.Admit || cs.o.Admit == nil {
			r = admit(p, node, cs.activePodsLocked(a), cs.o.MaxPods)
		}
		if r.Admit {
			cs.admitted[p.UID] = true
			continue
		}
		klog.InfoS("Pod rejected by node admission", "pod", klog.KObj(p), "reason", r.Reason, "message", r.Message)
		cs.rejected[p.UID] = r
		cs.recorder.Eventf(p, v1.EventTypeWarning, r.Reason, "%s", r.Message)
	}
}

// activePodsLocked are the pods that hold the node's resources: the static
// pods and the admitted API pods not yet finished.
func (cs *clusterState) activePodsLocked(a *Agent) []*v1.Pod {
	out := append([]*v1.Pod(nil), a.desired...)
	for uid, p := range cs.pods {
		if cs.admitted[uid] && !cs.finished[uid] && !isTerminal(p) {
			out = append(out, p)
		}
	}
	return out
}

// wantLocked adds the API pods to run (or to stop: those being deleted).
func (cs *clusterState) wantLocked(want map[types.UID]*v1.Pod) {
	for uid, p := range cs.pods {
		if cs.admitted[uid] && !cs.finished[uid] {
			want[uid] = p
		}
	}
}

// workerDone runs when the worker of pod ended (not on agent shutdown):
// a pod deleted in the API server is now stopped and cleaned up, and the
// agent removes it there, the step a kubelet owns.
func (a *Agent) workerDone(ctx context.Context, w *worker) {
	cs := a.cluster
	if cs == nil {
		return
	}
	uid := w.currentPod().UID
	a.mu.Lock()
	cur := cs.pods[uid]
	if cur == nil || cur.DeletionTimestamp == nil {
		a.mu.Unlock()
		return
	}
	cs.finished[uid] = true
	a.mu.Unlock()
	final, known := w.knownStatus()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		// The last status first: the containers terminated and the pod in
		// its terminal phase, as the kubelet writes before the deletion.
		if s := cs.status; s != nil && known {
			st := mergeStatus(cur, final, a.clock.Now())
			if !isTerminal(cur) {
				st.Phase = terminalPhase(&st)
			}
			s.write(ctx, cur, st)
		}
		cs.deletePod(ctx, cur)
	}()
}

// deletePod removes a stopped pod from the API server with grace 0 and its
// UID as precondition (a new pod of the same name is not touched).
func (cs *clusterState) deletePod(ctx context.Context, pod *v1.Pod) {
	zero := int64(0)
	uid := pod.UID
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
		err := cs.o.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			klog.V(2).InfoS("Pod deleted from the API server", "pod", klog.KObj(pod), "podUID", uid)
			return
		}
		klog.ErrorS(err, "Deleting pod from the API server failed; retrying", "pod", klog.KObj(pod))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// event records a Kubernetes event about pod in node mode; a no-op
// otherwise.
func (a *Agent) event(pod *v1.Pod, eventType, reason, format string, args ...any) {
	if cs := a.cluster; cs != nil && cs.recorder != nil {
		cs.recorder.Eventf(pod, eventType, reason, format, args...)
	}
}

// updatedPod is the running pod cur with the changes of the API server's
// version that a node acts on: labels and annotations (downward API
// volumes follow them) and container images (the container restarts with
// the new one, as the kubelet does on a changed spec). Other spec changes
// are not applied: resources change through the resize path, and the rest
// is immutable. nil when nothing of that changed.
func updatedPod(cur, api *v1.Pod) *v1.Pod {
	changed := !maps.Equal(cur.Labels, api.Labels) || !maps.Equal(cur.Annotations, api.Annotations)
	np := cur.DeepCopy()
	np.Labels, np.Annotations = maps.Clone(api.Labels), maps.Clone(api.Annotations)
	for _, pair := range []struct{ have, want []v1.Container }{
		{np.Spec.Containers, api.Spec.Containers}, {np.Spec.InitContainers, api.Spec.InitContainers},
	} {
		for i := range pair.have {
			if i < len(pair.want) && pair.want[i].Name == pair.have[i].Name && pair.want[i].Image != pair.have[i].Image {
				pair.have[i].Image = pair.want[i].Image
				changed = true
			}
		}
	}
	// Ephemeral containers are only ever added (the ephemeralcontainers
	// subresource).
	if len(api.Spec.EphemeralContainers) != len(cur.Spec.EphemeralContainers) {
		np.Spec.EphemeralContainers = append([]v1.EphemeralContainer(nil), api.Spec.EphemeralContainers...)
		changed = true
	}
	if d := api.Spec.ActiveDeadlineSeconds; !ptrEqual(d, cur.Spec.ActiveDeadlineSeconds) {
		np.Spec.ActiveDeadlineSeconds = d
		changed = true
	}
	if !changed {
		return nil
	}
	return np
}

func ptrEqual(a, b *int64) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
