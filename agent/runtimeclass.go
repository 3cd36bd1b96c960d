package agent

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	nodev1listers "k8s.io/client-go/listers/node/v1"
	"k8s.io/client-go/tools/cache"
)

// RuntimeClass → CRI runtime handler, as the kubelet's runtimeclass.Manager:
// in node mode spec.runtimeClassName names a node.k8s.io/v1 RuntimeClass
// and its `handler` is what RunPodSandbox gets; the RuntimeClasses come
// from a watch (an informer), so a lookup costs no request. A class that
// does not exist fails the sandbox (the pod stays Pending, with a
// FailedCreatePodSandBox event, and is tried again each sync: a class
// created later is picked up). Without an API server (static mode) there
// is no RuntimeClass to read: the name itself is the handler, so that a
// static pod can still pick peapod's `runc-userns`.

// runtimeClassLookup resolves a RuntimeClass name to its handler.
type runtimeClassLookup interface {
	handler(name string) (string, error)
}

// runtimeClassCache is the informer-backed lookup.
type runtimeClassCache struct {
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   nodev1listers.RuntimeClassLister
}

func newRuntimeClassCache(client kubernetes.Interface) *runtimeClassCache {
	f := informers.NewSharedInformerFactory(client, 0)
	rc := f.Node().V1().RuntimeClasses()
	return &runtimeClassCache{factory: f, informer: rc.Informer(), lister: rc.Lister()}
}

// start begins the watch; it does not wait for the first list (a node
// without the right to list RuntimeClasses still runs its other pods).
func (c *runtimeClassCache) start(stop <-chan struct{}) {
	c.factory.Start(stop)
}

func (c *runtimeClassCache) handler(name string) (string, error) {
	if !c.informer.HasSynced() {
		return "", fmt.Errorf("RuntimeClass %q: the RuntimeClasses are not listed from the API server yet", name)
	}
	rc, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("RuntimeClass %q not found", name)
	}
	if err != nil {
		return "", fmt.Errorf("failed to lookup RuntimeClass %s: %w", name, err)
	}
	return rc.Handler, nil
}

// runtimeHandler is the CRI runtime handler of pod: "" (the runtime's
// default) without a runtimeClassName; the RuntimeClass's handler in node
// mode; the name itself in static mode.
func (a *Agent) runtimeHandler(pod *v1.Pod) (string, error) {
	name := pod.Spec.RuntimeClassName
	if name == nil || *name == "" {
		return "", nil
	}
	if a.runtimeClasses == nil {
		return *name, nil
	}
	return a.runtimeClasses.handler(*name)
}
