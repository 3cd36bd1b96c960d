package apiobjects

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"peapod/agent/objects"
)

const (
	kindConfigMap = "configmap"
	kindSecret    = "secret"
	kindClaim     = "persistentvolumeclaim"
	kindVolume    = "persistentvolume" // cluster-scoped: Namespace is ""
)

// objectKey names one cached object; its String is the name errors and
// logs carry (never content: secrets stay out of logs).
type objectKey struct {
	Kind      string
	Namespace string
	Name      string
}

func (k objectKey) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// entry is one cached object (see the state machine in source.go).
type entry struct {
	// users are the pods referencing the object; guarded by Source.mu.
	users map[types.UID]bool
	// invalid is set (under Source.mu) when a pod references the object for
	// the first time, so it gets a fresh read, as under the kubelet. Atomic
	// because Source.mu is never held while mu is, and mu is held across a
	// GET.
	invalid atomic.Bool

	// mu serialises fetches, so pods sharing an object share one GET.
	mu      sync.Mutex
	known   bool          // a result (object or NotFound) is cached
	obj     metav1.Object // nil: NotFound
	fetched time.Time
}

// Objects fetches every ConfigMap, Secret and PersistentVolumeClaim pod
// references (see podReferences), the PersistentVolume each bound claim
// names and the secret that volume's flexVolume names, into a new
// objects.Objects. Objects that do not exist are absent: the consumer knows
// which references are optional. Any other failure is an error naming the
// object, and nothing is returned. The objects are shared with the cache:
// read them, never change them.
func (s *Source) Objects(ctx context.Context, pod *v1.Pod) (*objects.Objects, error) {
	if pod == nil || pod.UID == "" {
		return nil, errors.New("apiobjects: pod without UID")
	}
	refs := podReferences(pod)
	var keys []objectKey
	for _, n := range refs.ConfigMaps {
		keys = append(keys, objectKey{kindConfigMap, pod.Namespace, n})
	}
	for _, n := range refs.Secrets {
		keys = append(keys, objectKey{kindSecret, pod.Namespace, n})
	}
	for _, n := range refs.Claims {
		keys = append(keys, objectKey{kindClaim, pod.Namespace, n})
	}

	out := objects.New()
	used := map[objectKey]bool{} // referenced, directly or through a claim
	for _, k := range keys {
		used[k] = true
	}
	var errs []error
	// Claims first name their volumes, volumes their secrets: at most three
	// rounds.
	for len(keys) > 0 {
		var next []objectKey
		for i, e := range s.use(pod.UID, keys) {
			obj, err := s.fetch(ctx, keys[i], e)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if obj == nil {
				continue
			}
			switch o := obj.(type) {
			case *v1.ConfigMap:
				out.ConfigMaps[objects.Key(o.Namespace, o.Name)] = o
			case *v1.Secret:
				out.Secrets[objects.Key(o.Namespace, o.Name)] = o
			case *v1.PersistentVolumeClaim:
				out.PersistentVolumeClaims[objects.Key(o.Namespace, o.Name)] = o
				// An unbound claim names no volume yet; volumes/ reports it.
				if n := o.Spec.VolumeName; n != "" {
					next = queue(next, used, objectKey{Kind: kindVolume, Name: n})
				}
			case *v1.PersistentVolume:
				out.PersistentVolumes = append(out.PersistentVolumes, o)
				for _, sk := range pvSecrets(o, pod.Namespace) {
					next = queue(next, used, sk)
				}
			}
		}
		keys = next
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("apiobjects: pod %s/%s: %w", pod.Namespace, pod.Name, errors.Join(errs...))
	}
	// Only a complete pass knows every reference (a claim that failed to
	// read hides its volume), so only then are dropped references released.
	s.release(pod.UID, used)
	return out, nil
}

// queue appends k to keys unless it is already used.
func queue(keys []objectKey, used map[objectKey]bool, k objectKey) []objectKey {
	if used[k] {
		return keys
	}
	used[k] = true
	return append(keys, k)
}

// Forget drops pod's references; objects no other pod references leave the
// cache, and so do pod's tokens. Call it when the pod is gone from the node.
func (s *Source) Forget(pod *v1.Pod) {
	if pod == nil {
		return
	}
	s.release(pod.UID, nil)
	s.mu.Lock()
	delete(s.pods, pod.UID)
	s.mu.Unlock()

	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	for k := range s.tokens {
		if k.UID == pod.UID {
			delete(s.tokens, k)
		}
	}
}

// use records that pod uid references keys and returns their entries.
func (s *Source) use(uid types.UID, keys []objectKey) []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.pods[uid]
	if mine == nil {
		mine = map[objectKey]bool{}
		s.pods[uid] = mine
	}
	out := make([]*entry, len(keys))
	for i, k := range keys {
		e := s.entries[k]
		if e == nil {
			e = &entry{users: map[types.UID]bool{}}
			s.entries[k] = e
		}
		if !e.users[uid] {
			e.users[uid] = true
			e.invalid.Store(true)
		}
		mine[k] = true
		out[i] = e
	}
	return out
}

// release drops pod uid's references outside keep, and the entries no pod
// references any more.
func (s *Source) release(uid types.UID, keep map[objectKey]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := s.pods[uid]
	for k := range mine {
		if keep[k] {
			continue
		}
		delete(mine, k)
		if e := s.entries[k]; e != nil {
			delete(e.users, uid)
			if len(e.users) == 0 {
				delete(s.entries, k)
			}
		}
	}
}

// fetch returns the object of entry e: cached while fresh, else read again
// (see the state machine in source.go). nil, nil means it does not exist.
func (s *Source) fetch(ctx context.Context, k objectKey, e *entry) (metav1.Object, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := s.now()
	if e.known && !e.invalid.Load() && now.Before(e.fetched.Add(s.ttl)) {
		return e.obj, nil
	}
	opts := metav1.GetOptions{}
	if e.obj != nil && !e.invalid.Load() {
		// A periodic refresh of an object we have: the API server's watch
		// cache may answer (resourceVersion "0"), sparing etcd, as the
		// kubelet does. A pod's first read is a quorum read.
		opts.ResourceVersion = "0"
	}
	obj, err := s.get(ctx, k, opts)
	switch {
	case apierrors.IsNotFound(err):
		e.obj = nil
	case err != nil:
		if !e.known {
			return nil, fmt.Errorf("get %s: %w", k, err)
		}
		// Keep serving what we have; the next call tries again.
		klog.V(2).InfoS("Refreshing a cached object failed; using the cached one", "object", k, "err", err)
		return e.obj, nil
	case olderThan(obj, e.obj):
		// A lagging watch cache answered: keep ours and ask again next call.
		return e.obj, nil
	default:
		e.obj = obj
	}
	e.known, e.fetched = true, now
	e.invalid.Store(false)
	return e.obj, nil
}

// olderThan reports whether a has a lower resourceVersion than b. Versions
// are opaque to clients in general, but etcd-backed ones are integers and
// the kubelet compares them the same way; anything unparsable is not older.
func olderThan(a, b metav1.Object) bool {
	if a == nil || b == nil {
		return false
	}
	av, err1 := strconv.ParseUint(a.GetResourceVersion(), 10, 64)
	bv, err2 := strconv.ParseUint(b.GetResourceVersion(), 10, 64)
	return err1 == nil && err2 == nil && av < bv
}

// getObject is the GET of one object through client. A typed client
// returns an empty object beside an error; this returns nil instead.
func getObject(ctx context.Context, client kubernetes.Interface, k objectKey, opts metav1.GetOptions) (metav1.Object, error) {
	var (
		obj metav1.Object
		err error
	)
	switch k.Kind {
	case kindConfigMap:
		obj, err = client.CoreV1().ConfigMaps(k.Namespace).Get(ctx, k.Name, opts)
	case kindSecret:
		obj, err = client.CoreV1().Secrets(k.Namespace).Get(ctx, k.Name, opts)
	case kindClaim:
		obj, err = client.CoreV1().PersistentVolumeClaims(k.Namespace).Get(ctx, k.Name, opts)
	case kindVolume:
		obj, err = client.CoreV1().PersistentVolumes().Get(ctx, k.Name, opts)
	default:
		return nil, fmt.Errorf("unknown kind %q", k.Kind)
	}
	if err != nil {
		return nil, err
	}
	return obj, nil
}
