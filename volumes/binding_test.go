package volumes

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func pv(name, class, size string, modes []v1.PersistentVolumeAccessMode, lbl map[string]string, claimRef *v1.ObjectReference) *v1.PersistentVolume {
	return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}, Spec: v1.PersistentVolumeSpec{
		StorageClassName: class, AccessModes: modes, ClaimRef: claimRef,
		Capacity:               v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)},
		PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/tmp/" + name}},
	}}
}

func pvc(name, class, size, volumeName string, modes []v1.PersistentVolumeAccessMode, sel *metav1.LabelSelector) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: v1.PersistentVolumeClaimSpec{
		AccessModes: modes, VolumeName: volumeName, Selector: sel,
		Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}},
	}}
	if class != "-" {
		c.Spec.StorageClassName = &class
	}
	return c
}

func TestBindClaim(t *testing.T) {
	rwo := []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
	rwx := []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}
	both := []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany}
	pvs := []*v1.PersistentVolume{
		pv("big", "fast", "10Gi", rwo, nil, nil),
		pv("small", "fast", "1Gi", rwo, nil, nil),
		pv("tiny", "fast", "100Mi", rwo, nil, nil),
		pv("slow", "slow", "5Gi", both, map[string]string{"disk": "ssd"}, nil),
		pv("shared", "", "1Gi", rwx, nil, nil),
		pv("reserved", "fast", "1Gi", rwo, nil, &v1.ObjectReference{Namespace: "ns", Name: "mine"}),
	}
	cases := []struct {
		name    string
		claim   *v1.PersistentVolumeClaim
		bound   map[string]string
		want    string
		wantErr string
	}{
		{name: "by volumeName", claim: pvc("c", "fast", "1Gi", "big", rwo, nil), want: "big"},
		{name: "volumeName missing", claim: pvc("c", "fast", "1Gi", "nope", rwo, nil), wantErr: "not found"},
		{name: "volumeName reserved for another claim", claim: pvc("c", "fast", "1Gi", "reserved", rwo, nil), wantErr: "another claim"},
		{name: "pre-bound by claimRef", claim: pvc("mine", "fast", "1Gi", "", rwo, nil), want: "reserved"},
		{name: "smallest that fits", claim: pvc("c", "fast", "500Mi", "", rwo, nil), want: "small"},
		{name: "exact size", claim: pvc("c", "fast", "100Mi", "", rwo, nil), want: "tiny"},
		{name: "too big", claim: pvc("c", "fast", "20Gi", "", rwo, nil), wantErr: "no persistent volume"},
		{name: "class must match", claim: pvc("c", "slow", "1Gi", "", rwo, nil), want: "slow"},
		{name: "nil class matches empty class", claim: pvc("c", "-", "1Gi", "", rwx, nil), want: "shared"},
		{name: "access modes subset", claim: pvc("c", "slow", "1Gi", "", []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, nil), want: "slow"},
		{name: "access mode missing", claim: pvc("c", "fast", "1Gi", "", rwx, nil), wantErr: "no persistent volume"},
		{name: "selector matches", claim: pvc("c", "slow", "1Gi", "", rwo, &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "ssd"}}), want: "slow"},
		{name: "selector excludes", claim: pvc("c", "slow", "1Gi", "", rwo, &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "hdd"}}), wantErr: "no persistent volume"},
		{name: "taken by another claim skipped", claim: pvc("c", "fast", "500Mi", "", rwo, nil), bound: map[string]string{"small": "ns/other"}, want: "big"},
		{name: "earlier bind kept", claim: pvc("c", "fast", "500Mi", "", rwo, nil), bound: map[string]string{"big": "ns/c"}, want: "big"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bound := tc.bound
			if bound == nil {
				bound = map[string]string{}
			}
			got, err := bindClaim(tc.claim, pvs, bound)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, err %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != tc.want {
				t.Fatalf("bound to %s, want %s", got.Name, tc.want)
			}
		})
	}
}
