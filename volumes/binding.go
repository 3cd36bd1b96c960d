package volumes

import (
	"fmt"
	"sort"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// bindClaim finds the PersistentVolume for a claim, as the PV controller
// would: the claim's spec.volumeName when set; else a PV pre-bound to the
// claim by claimRef; else the smallest free PV with the same storage class,
// volume mode, all requested access modes, a matching selector and a
// capacity of at least the request. boundTo maps PV name → "ns/claim" for
// binds already made, so one PV never serves two claims.
func bindClaim(pvc *v1.PersistentVolumeClaim, pvs []*v1.PersistentVolume, boundTo map[string]string) (*v1.PersistentVolume, error) {
	claimKey := pvc.Namespace + "/" + pvc.Name
	takenByOther := func(pv *v1.PersistentVolume) bool {
		if k, ok := boundTo[pv.Name]; ok && k != claimKey {
			return true
		}
		if cr := pv.Spec.ClaimRef; cr != nil && cr.Name != "" && (cr.Name != pvc.Name || cr.Namespace != pvc.Namespace) {
			return true
		}
		return false
	}
	if pvc.Spec.VolumeName != "" {
		for _, pv := range pvs {
			if pv.Name == pvc.Spec.VolumeName {
				if takenByOther(pv) {
					return nil, fmt.Errorf("claim %s: volume %s is bound to another claim", claimKey, pv.Name)
				}
				return pv, nil
			}
		}
		return nil, fmt.Errorf("claim %s: volume %q not found", claimKey, pvc.Spec.VolumeName)
	}
	if k, ok := findKey(boundTo, claimKey); ok {
		for _, pv := range pvs {
			if pv.Name == k {
				return pv, nil
			}
		}
	}
	for _, pv := range pvs {
		if cr := pv.Spec.ClaimRef; cr != nil && cr.Name == pvc.Name && cr.Namespace == pvc.Namespace {
			return pv, nil
		}
	}

	var sel labels.Selector
	if pvc.Spec.Selector != nil {
		s, err := metav1.LabelSelectorAsSelector(pvc.Spec.Selector)
		if err != nil {
			return nil, fmt.Errorf("claim %s: selector: %w", claimKey, err)
		}
		sel = s
	}
	req := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	claimMode := v1.PersistentVolumeFilesystem
	if pvc.Spec.VolumeMode != nil {
		claimMode = *pvc.Spec.VolumeMode
	}
	var candidates []*v1.PersistentVolume
	for _, pv := range pvs {
		if takenByOther(pv) || (pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Name != "") {
			continue
		}
		if pv.Spec.StorageClassName != class {
			continue
		}
		pvMode := v1.PersistentVolumeFilesystem
		if pv.Spec.VolumeMode != nil {
			pvMode = *pv.Spec.VolumeMode
		}
		if pvMode != claimMode {
			continue
		}
		if !hasAccessModes(pv.Spec.AccessModes, pvc.Spec.AccessModes) {
			continue
		}
		capacity := pv.Spec.Capacity[v1.ResourceStorage]
		if capacity.Cmp(req) < 0 {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(pv.Labels)) {
			continue
		}
		candidates = append(candidates, pv)
	}
	if len(candidates) == 0 {
		return nil, fmt.Errorf("claim %s: no persistent volume matches (class %q, modes %v, request %s)", claimKey, class, pvc.Spec.AccessModes, req.String())
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		ci, cj := candidates[i].Spec.Capacity[v1.ResourceStorage], candidates[j].Spec.Capacity[v1.ResourceStorage]
		if c := ci.Cmp(cj); c != 0 {
			return c < 0
		}
		return candidates[i].Name < candidates[j].Name
	})
	return candidates[0], nil
}

func findKey(m map[string]string, v string) (string, bool) {
	for k, x := range m {
		if x == v {
			return k, true
		}
	}
	return "", false
}

func hasAccessModes(have, want []v1.PersistentVolumeAccessMode) bool {
	set := map[v1.PersistentVolumeAccessMode]bool{}
	for _, m := range have {
		set[m] = true
	}
	for _, m := range want {
		if !set[m] {
			return false
		}
	}
	return true
}
