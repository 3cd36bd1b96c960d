package apiobjects

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

type fakeNodeStatus struct {
	node  *v1.Node
	kicks int
}

func (f *fakeNodeStatus) Current() *v1.Node { return f.node.DeepCopy() }
func (f *fakeNodeStatus) UpdateStatusSoon() { f.kicks++ }

func TestAttachments(t *testing.T) {
	no := false
	client := fake.NewClientset(
		&storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: "noattach.example.com"}, Spec: storagev1.CSIDriverSpec{AttachRequired: &no}},
		&storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: "unset.example.com"}},
		&storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "csi-abc"}, Status: storagev1.VolumeAttachmentStatus{
			Attached: true, AttachmentMetadata: map[string]string{"devicePath": "/dev/loop3"}}},
	)
	ns := &fakeNodeStatus{node: &v1.Node{Status: v1.NodeStatus{VolumesInUse: []v1.UniqueVolumeName{"kubernetes.io/csi/d^a"}}}}
	a := NewAttachments(client, ns)
	if _, err := a.CSIDriver("x"); err == nil {
		t.Fatal("CSIDriver before the CSIDrivers are listed: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.Start(ctx.Done())
	deadline := time.Now().Add(10 * time.Second)
	for !a.informer.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("CSIDriver informer never synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for driver, want := range map[string]string{"noattach.example.com": "attachRequired false", "unset.example.com": "attachRequired unset", "missing.example.com": "none"} {
		spec, err := a.CSIDriver(driver)
		got := "none"
		switch {
		case spec != nil && spec.AttachRequired == nil:
			got = "attachRequired unset"
		case spec != nil:
			got = fmt.Sprintf("attachRequired %t", *spec.AttachRequired)
		}
		if err != nil || got != want {
			t.Errorf("CSIDriver(%s): %s, %v; want %s", driver, got, err, want)
		}
	}
	va, err := a.VolumeAttachment(ctx, "csi-abc")
	if err != nil || va == nil || va.Status.AttachmentMetadata["devicePath"] != "/dev/loop3" {
		t.Errorf("VolumeAttachment csi-abc: %v, %v", va, err)
	}
	if va, err := a.VolumeAttachment(ctx, "csi-none"); va != nil || err != nil {
		t.Errorf("VolumeAttachment csi-none: %v, %v; want nil, nil", va, err)
	}
	if !a.ReportedInUse("kubernetes.io/csi/d^a") || ns.kicks != 0 {
		t.Errorf("reported volume: not in use (kicks %d)", ns.kicks)
	}
	if a.ReportedInUse("kubernetes.io/csi/d^b") || ns.kicks != 1 {
		t.Errorf("unreported volume: in use, or no status update asked for (kicks %d)", ns.kicks)
	}
}

// The Node authorizer's answer for an attachment not (yet) in its graph
// for this node is "not there yet"; another Forbidden is an error.
func TestVolumeAttachmentForbidden(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("get", "volumeattachments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.GetAction).GetName()
		gr := storagev1.Resource("volumeattachments")
		if name == "csi-graph" {
			return true, nil, apierrors.NewForbidden(gr, name, errors.New(`no relationship found between node 'n1' and this object`))
		}
		return true, nil, apierrors.NewForbidden(gr, name, errors.New("RBAC: denied"))
	})
	a := NewAttachments(client, &fakeNodeStatus{})
	if va, err := a.VolumeAttachment(context.Background(), "csi-graph"); va != nil || err != nil {
		t.Errorf("not in the node's graph: %v, %v; want nil, nil", va, err)
	}
	if _, err := a.VolumeAttachment(context.Background(), "csi-rbac"); err == nil {
		t.Error("RBAC Forbidden: no error")
	}
}
