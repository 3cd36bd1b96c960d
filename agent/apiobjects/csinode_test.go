package apiobjects

import (
	"context"
	"maps"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A driver's registration shows on the Node (node id annotation, topology
// labels) and in the CSINode (owned by the Node); a second driver is added
// beside it; a driver that goes away leaves both; an unchanged driver
// writes nothing.
func TestCSINodeInfo(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1", Labels: map[string]string{"kubernetes.io/hostname": "n1"}}}
	client := fake.NewClientset(node)
	drivers := map[string]CSIDriverInfo{
		"loop.csi.peapod.io": {NodeID: "n1", MaxVolumes: 16, Topology: map[string]string{"topology.loop.csi.peapod.io/node": "n1"}},
	}
	c := NewCSINodeInfo(client, "n1", &fakeNodeStatus{node: node}, func(name string) (CSIDriverInfo, bool) {
		d, ok := drivers[name]
		return d, ok
	})
	ctx := context.Background()
	c.Changed("loop.csi.peapod.io")
	if !c.syncAll(ctx) {
		t.Fatal("install failed")
	}
	n, _ := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if n.Annotations[annotationCSINodeID] != `{"loop.csi.peapod.io":"n1"}` || n.Labels["topology.loop.csi.peapod.io/node"] != "n1" || n.Labels["kubernetes.io/hostname"] != "n1" {
		t.Fatalf("node after install: labels %v annotations %v", n.Labels, n.Annotations)
	}
	cn, err := client.StorageV1().CSINodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cn.OwnerReferences) != 1 || cn.OwnerReferences[0].UID != "uid-1" || cn.OwnerReferences[0].Kind != "Node" {
		t.Fatalf("CSINode owner %v", cn.OwnerReferences)
	}
	if len(cn.Spec.Drivers) != 1 {
		t.Fatalf("CSINode drivers %v", cn.Spec.Drivers)
	}
	d := cn.Spec.Drivers[0]
	if d.Name != "loop.csi.peapod.io" || d.NodeID != "n1" || len(d.TopologyKeys) != 1 || d.TopologyKeys[0] != "topology.loop.csi.peapod.io/node" ||
		d.Allocatable == nil || *d.Allocatable.Count != 16 {
		t.Fatalf("CSINode driver %+v", d)
	}

	drivers["other.example.com"] = CSIDriverInfo{NodeID: "other-n1"}
	c.Changed("other.example.com")
	c.Changed("loop.csi.peapod.io") // unchanged: nothing written
	before := len(client.Actions())
	if !c.syncAll(ctx) {
		t.Fatal("second install failed")
	}
	writes := 0
	for _, a := range client.Actions()[before:] {
		if a.GetVerb() == "update" || a.GetVerb() == "patch" || a.GetVerb() == "create" {
			writes++
		}
	}
	if writes != 2 {
		t.Errorf("%d writes for one new driver and one unchanged, want 2 (Node patch, CSINode update)", writes)
	}
	cn, _ = client.StorageV1().CSINodes().Get(ctx, "n1", metav1.GetOptions{})
	if len(cn.Spec.Drivers) != 2 {
		t.Fatalf("CSINode drivers %v", cn.Spec.Drivers)
	}

	delete(drivers, "loop.csi.peapod.io")
	c.Changed("loop.csi.peapod.io")
	if !c.syncAll(ctx) {
		t.Fatal("uninstall failed")
	}
	n, _ = client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	cn, _ = client.StorageV1().CSINodes().Get(ctx, "n1", metav1.GetOptions{})
	if n.Annotations[annotationCSINodeID] != `{"other.example.com":"other-n1"}` || len(cn.Spec.Drivers) != 1 || cn.Spec.Drivers[0].Name != "other.example.com" {
		t.Fatalf("after uninstall: annotations %v drivers %v", n.Annotations, cn.Spec.Drivers)
	}
	if n.Labels["topology.loop.csi.peapod.io/node"] != "n1" {
		t.Errorf("topology label removed: %v", n.Labels)
	}
}

// A topology label another value holds is an error, retried by Run.
func TestCSINodeInfoLabelCollision(t *testing.T) {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-1", Labels: map[string]string{"zone": "a"}}}
	client := fake.NewClientset(node)
	c := NewCSINodeInfo(client, "n1", &fakeNodeStatus{node: node}, func(string) (CSIDriverInfo, bool) {
		return CSIDriverInfo{NodeID: "n1", Topology: map[string]string{"zone": "b"}}, true
	})
	c.Changed("d")
	if c.syncAll(context.Background()) {
		t.Fatal("collision not reported")
	}
	c.mu.Lock()
	dirty := maps.Clone(c.dirty)
	c.mu.Unlock()
	if !dirty["d"] {
		t.Fatal("failed driver not kept for a retry")
	}
}
