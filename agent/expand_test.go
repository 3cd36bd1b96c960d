package agent

import (
	"context"
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

type fakeExpander struct {
	calls  []int64
	called bool
	err    error
}

func (f *fakeExpander) ExpandVolume(_ context.Context, _ types.UID, _ string, size int64) (bool, error) {
	f.calls = append(f.calls, size)
	return f.called, f.err
}

type finalErr struct {
	error
	infeasible bool
}

func (finalErr) Final() bool        { return true }
func (e finalErr) Infeasible() bool { return e.infeasible }

type notMountedErr struct{ error }

func (notMountedErr) NotMounted() bool { return true }

// TestExpandOnce: the node's part of online expansion against client-go's
// fake clientset (test/cluster runs it against the real API server and
// external-resizer): which claims wait for the node, the size asked of the
// volume manager, and the claim status written after success or failure.
func TestExpandOnce(t *testing.T) {
	pv := &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"}, Spec: v1.PersistentVolumeSpec{
		Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("64Mi")}}}
	claim := func(status v1.ClaimResourceStatus, conds ...v1.PersistentVolumeClaimConditionType) *v1.PersistentVolumeClaim {
		c := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: "default", ResourceVersion: "7"},
			Spec: v1.PersistentVolumeClaimSpec{VolumeName: "pv-1"},
			Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound,
				Capacity: v1.ResourceList{v1.ResourceStorage: resource.MustParse("32Mi")}}}
		if status != "" {
			c.Status.AllocatedResourceStatuses = map[v1.ResourceName]v1.ClaimResourceStatus{v1.ResourceStorage: status}
		}
		for _, t := range conds {
			c.Status.Conditions = append(c.Status.Conditions, v1.PersistentVolumeClaimCondition{Type: t, Status: v1.ConditionTrue})
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		pvc        *v1.PersistentVolumeClaim
		exp        fakeExpander
		wantCalls  int
		wantCap    string
		wantStatus v1.ClaimResourceStatus
		wantCond   v1.PersistentVolumeClaimConditionType
	}{
		{name: "nothing pending", pvc: claim(""), wantCap: "32Mi"},
		{name: "controller still resizing", pvc: claim(v1.PersistentVolumeClaimControllerResizeInProgress), wantCap: "32Mi",
			wantStatus: v1.PersistentVolumeClaimControllerResizeInProgress},
		{name: "node resize pending: expanded, status written", pvc: claim(v1.PersistentVolumeClaimNodeResizePending, v1.PersistentVolumeClaimFileSystemResizePending),
			exp: fakeExpander{called: true}, wantCalls: 1, wantCap: "64Mi"},
		{name: "in progress after a crash: tried again", pvc: claim(v1.PersistentVolumeClaimNodeResizeInProgress),
			exp: fakeExpander{called: true}, wantCalls: 1, wantCap: "64Mi"},
		{name: "old resizer's condition only", pvc: claim("", v1.PersistentVolumeClaimFileSystemResizePending),
			exp: fakeExpander{called: true}, wantCalls: 1, wantCap: "64Mi"},
		{name: "driver without node expansion: finished all the same", pvc: claim(v1.PersistentVolumeClaimNodeResizePending),
			exp: fakeExpander{called: false}, wantCalls: 1, wantCap: "64Mi"},
		{name: "not mounted yet: in progress, waits", pvc: claim(v1.PersistentVolumeClaimNodeResizePending),
			exp: fakeExpander{err: notMountedErr{errors.New("not mounted")}}, wantCalls: 1, wantCap: "32Mi",
			wantStatus: v1.PersistentVolumeClaimNodeResizeInProgress},
		{name: "final failure: NodeResizeError condition, retried", pvc: claim(v1.PersistentVolumeClaimNodeResizePending),
			exp: fakeExpander{err: finalErr{error: errors.New("Internal: resize2fs: Permission denied")}}, wantCalls: 1, wantCap: "32Mi",
			wantStatus: v1.PersistentVolumeClaimNodeResizeInProgress, wantCond: v1.PersistentVolumeClaimNodeResizeError},
		{name: "infeasible: NodeResizeInfeasible, back to the resizer", pvc: claim(v1.PersistentVolumeClaimNodeResizePending),
			exp: fakeExpander{err: finalErr{error: errors.New("OutOfRange"), infeasible: true}}, wantCalls: 1, wantCap: "32Mi",
			wantStatus: v1.PersistentVolumeClaimNodeResizeInfeasible, wantCond: v1.PersistentVolumeClaimNodeResizeError},
		{name: "infeasible before: not tried again", pvc: claim(v1.PersistentVolumeClaimNodeResizeInfeasible), wantCap: "32Mi",
			wantStatus: v1.PersistentVolumeClaimNodeResizeInfeasible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(pv.DeepCopy(), tc.pvc.DeepCopy())
			a := &Agent{clock: realClock{}, cluster: &clusterState{o: ClusterOptions{Client: client}}}
			pod := testPod(v1.RestartPolicyAlways, nil, "app")
			exp := tc.exp
			a.expandOnce(context.Background(), &exp, expandJob{pod: pod, volume: "data", claim: "data"}, map[string]string{})
			if len(exp.calls) != tc.wantCalls {
				t.Fatalf("%d expansions, want %d", len(exp.calls), tc.wantCalls)
			}
			if len(exp.calls) > 0 && exp.calls[0] != 64<<20 {
				t.Errorf("expanded to %d bytes, want the PV's 64Mi", exp.calls[0])
			}
			got, err := client.CoreV1().PersistentVolumeClaims("default").Get(context.Background(), "data", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Status.Capacity[v1.ResourceStorage]; c.String() != tc.wantCap {
				t.Errorf("status.capacity %s, want %s", c.String(), tc.wantCap)
			}
			if s := got.Status.AllocatedResourceStatuses[v1.ResourceStorage]; s != tc.wantStatus {
				t.Errorf("allocatedResourceStatuses[storage] %q, want %q", s, tc.wantStatus)
			}
			var conds []v1.PersistentVolumeClaimConditionType
			for _, c := range got.Status.Conditions {
				conds = append(conds, c.Type)
			}
			switch {
			case tc.wantCond != "" && (len(conds) != 1 || conds[0] != tc.wantCond):
				t.Errorf("conditions %v, want [%s]", conds, tc.wantCond)
			case tc.wantCond == "" && tc.wantCap == "64Mi" && len(conds) != 0:
				t.Errorf("resize conditions left after the expansion: %v", conds)
			}
		})
	}
}
