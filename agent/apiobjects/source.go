// Package apiobjects gives node-mode pods what the kubelet's managers give
// them, read from the API server with the node's credentials (the Node
// authorizer allows exactly these): the ConfigMaps, Secrets,
// PersistentVolumeClaims and PersistentVolumes a pod references (Objects),
// service account tokens bound to the pod (Token) and the Docker-link style
// service environment (ServiceEnv). For the volume manager: CSIDrivers,
// VolumeAttachments and the reported volumesInUse (Attachments,
// attachments.go), and the CSINode and Node entries of registered CSI
// drivers (CSINodeInfo, csinode.go).
//
// Objects and tokens are cached, so a pod worker may ask every second.
// A cached object, per (kind, namespace, name), shared by every pod that
// references it (the kubelet's TTL-based manager):
//
//	         a pod references it             GET ok or NotFound
//	(absent) ──────────────────► STALE ─────────────────────────► FRESH (object, or known absent)
//	                              ▲  │ GET fails: the last result is served if   │
//	                              │  │ there is one, else the caller gets the     │
//	                              │  │ error; it stays STALE (retried next call)  │
//	                              └──┴────────── TTL (1m) passes, or a pod ───────┘
//	                                             references it for the first time
//	Forget of the last pod referencing it: (absent)
//
// A token, per (pod UID, audience, expirationSeconds) (the kubelet's token
// manager):
//
//	         TokenRequest                    80% of its lifetime, or 24h, has passed
//	(absent) ────────────► VALID ──────────────────────────────────────────────► DUE
//	                         ▲       (less up to 10s of jitter)                  │
//	                         └──────────── TokenRequest ok ──────────────────────┤
//	                                       TokenRequest fails: the old token is  │
//	                                       served until it expires, then error ──┘
//	Forget of the pod, or expiry (swept each minute by Run): (absent)
//
// Services come from one shared informer on every namespace's Services
// (headless ones filtered out by the API server), started by Run.
package apiobjects

import (
	"context"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// DefaultTTL is how long a fetched object is used before it is fetched
// again: the kubelet's default for its TTL-based ConfigMap and Secret
// managers, so updates reach pods as fast as they do under a kubelet.
const DefaultTTL = time.Minute

// tokenSweepPeriod is how often Run drops expired tokens of pods nobody
// called Forget for (the kubelet's gcPeriod).
const tokenSweepPeriod = time.Minute

// Source reads the API objects node-mode pods need. Its methods are safe
// for concurrent use by every pod worker.
type Source struct {
	ttl time.Duration
	now func() time.Time

	// get and createToken are the two API calls the caches make; fields so
	// the cache and refresh rules are unit-tested without an API server.
	get         func(ctx context.Context, k objectKey, opts metav1.GetOptions) (metav1.Object, error)
	createToken func(ctx context.Context, namespace, serviceAccount string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)

	mu      sync.Mutex
	entries map[objectKey]*entry
	pods    map[types.UID]map[objectKey]bool // what each pod referenced at its last Objects call

	tokenMu sync.Mutex
	tokens  map[tokenKey]*tokenEntry

	factory  informers.SharedInformerFactory
	services cache.SharedIndexInformer
	lister   corelisters.ServiceLister
}

// New returns a Source that reads through client (the node's credentials).
// Nothing is requested until a method is called; Run starts the Services
// informer.
func New(client kubernetes.Interface) *Source {
	// Headless services give no env vars; the kubelet has the API server
	// leave them out of the watch (kubernetes/kubernetes#122394).
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.clusterIP", v1.ClusterIPNone).String()
		}),
		informers.WithTransform(slimService))
	svc := factory.Core().V1().Services()
	s := &Source{
		ttl:     DefaultTTL,
		now:     time.Now,
		entries: map[objectKey]*entry{},
		pods:    map[types.UID]map[objectKey]bool{},
		tokens:  map[tokenKey]*tokenEntry{},
		factory: factory,
		// Informer() registers the informer with the factory, so Start
		// runs it.
		services: svc.Informer(),
		lister:   svc.Lister(),
	}
	s.get = func(ctx context.Context, k objectKey, opts metav1.GetOptions) (metav1.Object, error) {
		return getObject(ctx, client, k, opts)
	}
	s.createToken = func(ctx context.Context, namespace, sa string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	}
	return s
}

// Run starts the Services informer and sweeps expired tokens; it returns
// when ctx ends, after the informer has stopped.
func (s *Source) Run(ctx context.Context) {
	s.factory.Start(ctx.Done())
	wait.UntilWithContext(ctx, func(context.Context) { s.sweepTokens() }, tokenSweepPeriod)
	s.factory.Shutdown()
}

// HasSynced reports whether the Services informer has listed once.
func (s *Source) HasSynced() bool { return s.services.HasSynced() }

// slimService keeps only what ServiceEnv reads (and what the informer's
// store needs), so a node holds every Service of the cluster in little
// memory: no annotations (last-applied-configuration), no managedFields.
// Idempotent, as informer transforms must be.
func slimService(obj any) (any, error) {
	svc, ok := obj.(*v1.Service)
	if !ok {
		return obj, nil // a tombstone: passed on as is
	}
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            svc.Name,
			Namespace:       svc.Namespace,
			UID:             svc.UID,
			ResourceVersion: svc.ResourceVersion,
		},
		Spec: v1.ServiceSpec{ClusterIP: svc.Spec.ClusterIP, Ports: svc.Spec.Ports},
	}, nil
}
