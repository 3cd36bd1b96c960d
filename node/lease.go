package node

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Lease renewal back-off after a failed round, the kubelet's
// (component-helpers lease controller): retry soon, but never hammer an
// API server that is struggling.
const (
	leaseBackoffMin = 200 * time.Millisecond
	leaseBackoffMax = 7 * time.Second
)

// runLease keeps the node's Lease in kube-node-lease renewed until ctx
// ends. The Lease is the heartbeat the node lifecycle controller watches:
// renewTime older than leaseDurationSeconds makes the node NotReady
// (Unknown) and, later, its pods evicted.
func (n *Node) runLease(ctx context.Context) {
	var lease *coordinationv1.Lease // the last we wrote; nil = Get first
	backoff := leaseBackoffMin
	for {
		var err error
		lease, err = n.renewLease(ctx, lease)
		delay := wait.Jitter(n.o.RenewInterval, 0.04)
		if err != nil {
			klog.ErrorS(err, "Renewing the node lease failed; will retry", "node", klog.KRef("", n.o.NodeName), "retryIn", backoff)
			delay = backoff
			backoff = min(backoff*2, leaseBackoffMax)
		} else {
			backoff = leaseBackoffMin
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// renewLease updates last (or creates the Lease when there is none) and
// returns what the API server stored. Updating from our own last write
// saves a Get per renewal, as the kubelet does; after any failure the
// next round starts from a Get, which also picks up a newer
// resourceVersion after a conflict.
func (n *Node) renewLease(ctx context.Context, last *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, n.requestTimeout())
	defer cancel()
	leases := n.o.Client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	name := n.o.NodeName

	if last == nil {
		got, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			created, err := leases.Create(ctx, n.desiredLease(nil), metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("node %q: create lease: %w", name, err)
			}
			return created, nil
		case err != nil:
			return nil, fmt.Errorf("node %q: get lease: %w", name, err)
		}
		last = got
	}
	updated, err := leases.Update(ctx, n.desiredLease(last), metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %q: update lease: %w", name, err)
	}
	return updated, nil
}

// desiredLease is base (nil: a new Lease) renewed now. The owner reference
// lets the garbage collector delete the Lease with the Node; it follows
// the Node's UID, so a Node deleted and registered again gets its Lease
// back rather than having it collected.
func (n *Node) desiredLease(base *coordinationv1.Lease) *coordinationv1.Lease {
	var l *coordinationv1.Lease
	if base == nil {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n.o.NodeName, Namespace: v1.NamespaceNodeLease}}
	} else {
		l = base.DeepCopy()
	}
	l.Spec.HolderIdentity = ptr.To(n.o.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To(int32(n.o.LeaseDuration / time.Second))
	l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
	if uid := n.nodeUID(); uid != "" {
		l.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "v1",
			Kind:       "Node",
			Name:       n.o.NodeName,
			UID:        uid,
		}}
	}
	return l
}
