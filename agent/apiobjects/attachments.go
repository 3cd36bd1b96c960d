package apiobjects

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
)

// NodeStatus is the node's status as last read from or written to the
// API server, and a way to have it posted now (*node.Node).
type NodeStatus interface {
	Current() *v1.Node
	UpdateStatusSoon()
}

// Attachments is the API server's side of CSI attach for the volume
// manager in node mode (volumes.ControllerAttach), as the kubelet reads
// it: CSIDrivers from an informer (a node may list and watch them), each
// VolumeAttachment by a GET of its name (all the Node authorizer lets a
// node do with them; the volume manager's back-off paces the GETs, as the
// operation executor's paces the kubelet's WaitForAttach), and the Node's
// status.volumesInUse from the node status loop.
type Attachments struct {
	client   kubernetes.Interface
	node     NodeStatus
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   storagelisters.CSIDriverLister
}

// NewAttachments reads through client (the node's credentials); Start
// starts the CSIDriver informer.
func NewAttachments(client kubernetes.Interface, node NodeStatus) *Attachments {
	f := informers.NewSharedInformerFactory(client, 0)
	d := f.Storage().V1().CSIDrivers()
	return &Attachments{client: client, node: node, factory: f, informer: d.Informer(), lister: d.Lister()}
}

// Start runs the CSIDriver informer until stop is closed.
func (a *Attachments) Start(stop <-chan struct{}) { a.factory.Start(stop) }

// CSIDriver is the spec of the CSIDriver object named driver (a copy), nil
// when there is none: the kubelet's defaults then (attach required, no pod
// info on mount, fsGroupPolicy ReadWriteOnceWithFSType). Until the first
// list it is an error, as the kubelet waits for its cache.
func (a *Attachments) CSIDriver(driver string) (*storagev1.CSIDriverSpec, error) {
	if !a.informer.HasSynced() {
		return nil, errors.New("the CSIDrivers are not listed from the API server yet")
	}
	d, err := a.lister.Get(driver)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return d.Spec.DeepCopy(), nil
}

// VolumeAttachment GETs name; nil when there is none. The Node authorizer
// answers Forbidden ("no relationship found") for an attachment it does
// not know for this node, which is what a not yet created one is.
func (a *Attachments) VolumeAttachment(ctx context.Context, name string) (*storagev1.VolumeAttachment, error) {
	va, err := a.client.StorageV1().VolumeAttachments().Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "no relationship found"):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get: %w", err)
	}
	return va, nil
}

// ReportedInUse: the Node as last seen lists name in status.volumesInUse.
// When it does not, a status round is asked for, so that the wait is a
// round trip rather than a status period.
func (a *Attachments) ReportedInUse(name v1.UniqueVolumeName) bool {
	if n := a.node.Current(); n != nil && slices.Contains(n.Status.VolumesInUse, name) {
		return true
	}
	a.node.UpdateStatusSoon()
	return false
}
