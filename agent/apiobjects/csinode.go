package apiobjects

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// annotationCSINodeID is the Node annotation the kubelet keeps with each
// registered CSI driver's node id (a JSON object, driver → id); older
// sidecars read it where there is no CSINode.
const annotationCSINodeID = "csi.volume.kubernetes.io/nodeid"

// CSIDriverInfo is what a registered CSI driver said of itself
// (NodeGetInfo).
type CSIDriverInfo struct {
	NodeID     string
	MaxVolumes int64
	Topology   map[string]string
}

// CSINodeInfo publishes the node's registered CSI drivers as the kubelet's
// nodeinfomanager does (pkg/volume/csi/nodeinfomanager), for the
// external-provisioner (topology keys of a WaitForFirstConsumer claim),
// the external-attacher (the driver's node id for ControllerPublishVolume)
// and the scheduler (volume limits):
//
//   - the Node: the driver's node id in the csi.volume.kubernetes.io/nodeid
//     annotation and its topology segment as labels (a label another value
//     already holds is an error, as in the kubelet);
//   - the CSINode named after the node, owned by the Node object: one
//     spec.drivers entry per driver {name, nodeID, topologyKeys,
//     allocatable.count}.
//
// A driver that goes away leaves the CSINode and the annotation; its
// topology labels stay (the kubelet's too). Per driver, on each
// (de)registration:
//
//	        Changed(name)            Node patch, CSINode create/update
//	(clean) ─────────────► DIRTY ──────────────────────────────────► (clean)
//	                         ▲  │ failure (API down, node not registered yet)
//	                         └──┘ retried after 200ms, doubling to 30s
type CSINodeInfo struct {
	client   kubernetes.Interface
	nodeName string
	node     NodeStatus
	lookup   func(driver string) (CSIDriverInfo, bool)

	mu    sync.Mutex
	dirty map[string]bool
	kick  chan struct{}
}

// NewCSINodeInfo returns a CSINodeInfo for node nodeName; lookup says
// whether a driver is registered and what it reported.
func NewCSINodeInfo(client kubernetes.Interface, nodeName string, node NodeStatus, lookup func(string) (CSIDriverInfo, bool)) *CSINodeInfo {
	return &CSINodeInfo{client: client, nodeName: nodeName, node: node, lookup: lookup, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
}

// Changed marks driver for publishing (registered) or removal.
func (c *CSINodeInfo) Changed(driver string) {
	c.mu.Lock()
	c.dirty[driver] = true
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run publishes changes until ctx ends.
func (c *CSINodeInfo) Run(ctx context.Context) {
	var backoff time.Duration
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry.C:
		}
		if c.syncAll(ctx) {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
		retry.Reset(backoff)
	}
}

// syncAll publishes every dirty driver; false when one failed.
func (c *CSINodeInfo) syncAll(ctx context.Context) bool {
	c.mu.Lock()
	names := slices.Sorted(maps.Keys(c.dirty))
	clear(c.dirty)
	c.mu.Unlock()
	ok := true
	for _, name := range names {
		info, registered := c.lookup(name)
		var err error
		if registered {
			err = c.install(ctx, name, info)
		} else {
			err = c.uninstall(ctx, name)
		}
		if err != nil {
			klog.ErrorS(err, "Publishing CSI driver node info failed; will retry", "driver", name, "registered", registered, "node", c.nodeName)
			c.mu.Lock()
			c.dirty[name] = true
			c.mu.Unlock()
			ok = false
			continue
		}
		klog.V(2).InfoS("Published CSI driver node info", "driver", name, "registered", registered, "node", c.nodeName)
	}
	return ok
}

func (c *CSINodeInfo) install(ctx context.Context, name string, info CSIDriverInfo) error {
	if info.NodeID == "" {
		return fmt.Errorf("driver %s: empty node id", name)
	}
	err := c.patchNode(ctx, func(n *v1.Node) error {
		ids, err := nodeIDs(n)
		if err != nil {
			return err
		}
		ids[name] = info.NodeID
		if err := setNodeIDs(n, ids); err != nil {
			return err
		}
		for k, v := range info.Topology {
			if cur, ok := n.Labels[k]; ok && cur != v {
				return fmt.Errorf("topology label collision: driver %s reports %s=%s, the node has %s", name, k, v, cur)
			}
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[k] = v
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", c.nodeName, err)
	}
	return c.updateCSINode(ctx, func(drivers []storagev1.CSINodeDriver) []storagev1.CSINodeDriver {
		d := storagev1.CSINodeDriver{Name: name, NodeID: info.NodeID, TopologyKeys: slices.Sorted(maps.Keys(info.Topology))}
		if info.MaxVolumes > 0 {
			n := int32(min(info.MaxVolumes, math.MaxInt32))
			d.Allocatable = &storagev1.VolumeNodeResources{Count: &n}
		}
		out := slices.DeleteFunc(drivers, func(x storagev1.CSINodeDriver) bool { return x.Name == name })
		return append(out, d)
	})
}

func (c *CSINodeInfo) uninstall(ctx context.Context, name string) error {
	err := c.updateCSINode(ctx, func(drivers []storagev1.CSINodeDriver) []storagev1.CSINodeDriver {
		return slices.DeleteFunc(drivers, func(x storagev1.CSINodeDriver) bool { return x.Name == name })
	})
	if err != nil {
		return err
	}
	err = c.patchNode(ctx, func(n *v1.Node) error {
		ids, err := nodeIDs(n)
		if err != nil {
			return err
		}
		delete(ids, name)
		return setNodeIDs(n, ids)
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", c.nodeName, err)
	}
	return nil
}

func nodeIDs(n *v1.Node) (map[string]string, error) {
	ids := map[string]string{}
	if s := n.Annotations[annotationCSINodeID]; s != "" {
		if err := json.Unmarshal([]byte(s), &ids); err != nil {
			return nil, fmt.Errorf("annotation %s: %w", annotationCSINodeID, err)
		}
	}
	return ids, nil
}

func setNodeIDs(n *v1.Node, ids map[string]string) error {
	if len(ids) == 0 {
		delete(n.Annotations, annotationCSINodeID)
		return nil
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[annotationCSINodeID] = string(b)
	return nil
}

// patchNode applies edit to the Node's labels and annotations and
// patches what changed, through the status subresource as the kubelet
// does (nodeutil.PatchNodeStatus): a merge patch of metadata only, so the
// status loop's writes are not touched.
func (c *CSINodeInfo) patchNode(ctx context.Context, edit func(*v1.Node) error) error {
	nodes := c.client.CoreV1().Nodes()
	orig, err := nodes.Get(ctx, c.nodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	n := orig.DeepCopy()
	if err := edit(n); err != nil {
		return err
	}
	diff := func(old, new map[string]string) map[string]any {
		out := map[string]any{}
		for k, v := range new {
			if ov, ok := old[k]; !ok || ov != v {
				out[k] = v
			}
		}
		for k := range old {
			if _, ok := new[k]; !ok {
				out[k] = nil
			}
		}
		return out
	}
	labels, annotations := diff(orig.Labels, n.Labels), diff(orig.Annotations, n.Annotations)
	if len(labels) == 0 && len(annotations) == 0 {
		return nil
	}
	meta := map[string]any{}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	if len(annotations) > 0 {
		meta["annotations"] = annotations
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	_, err = nodes.Patch(ctx, c.nodeName, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

// updateCSINode gets (or creates, owned by the Node) the node's CSINode
// and updates its drivers with edit when that changes them. A CSINode
// owned by another Node object of the same name (deleted and made again)
// is deleted first, as the kubelet does.
func (c *CSINodeInfo) updateCSINode(ctx context.Context, edit func([]storagev1.CSINodeDriver) []storagev1.CSINodeDriver) error {
	cur := c.node.Current()
	if cur == nil || cur.UID == "" {
		return fmt.Errorf("node %s is not registered yet", c.nodeName)
	}
	api := c.client.StorageV1().CSINodes()
	cn, err := api.Get(ctx, c.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cn, err = api.Create(ctx, &storagev1.CSINode{
			ObjectMeta: metav1.ObjectMeta{Name: c.nodeName, OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "v1", Kind: "Node", Name: c.nodeName, UID: cur.UID}}},
			Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("CSINode %s: %w", c.nodeName, err)
	}
	owned := slices.ContainsFunc(cn.OwnerReferences, func(r metav1.OwnerReference) bool {
		return r.Kind == "Node" && r.Name == c.nodeName && r.UID == cur.UID
	})
	if !owned {
		if err := api.Delete(ctx, c.nodeName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("CSINode %s of another Node object: delete: %w", c.nodeName, err)
		}
		return fmt.Errorf("CSINode %s belonged to another Node object; deleted", c.nodeName)
	}
	drivers := edit(slices.Clone(cn.Spec.Drivers))
	if apiequalDrivers(cn.Spec.Drivers, drivers) {
		return nil
	}
	cn.Spec.Drivers = drivers
	if _, err := api.Update(ctx, cn, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("CSINode %s: update: %w", c.nodeName, err)
	}
	return nil
}

// apiequalDrivers: the same drivers with the same contents, in any order.
func apiequalDrivers(a, b []storagev1.CSINodeDriver) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(d storagev1.CSINodeDriver) string {
		b, _ := json.Marshal(d)
		return string(b)
	}
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i], kb[i] = key(a[i]), key(b[i])
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(ka, kb)
}
