package apiobjects

import (
	"slices"
	"sort"

	v1 "k8s.io/api/core/v1"
)

// references are the names, in the pod's namespace, of the objects a pod
// refers to directly; PersistentVolumes (and their secrets) follow from the
// claims once those are read.
type references struct {
	ConfigMaps []string
	Secrets    []string
	Claims     []string
}

// podReferences lists what pod refers to, as the kubelet's
// VisitPodConfigmapNames and VisitPodSecretNames do, each name once,
// sorted: env and envFrom of every container (init and ephemeral too),
// configMap, secret, projected and persistentVolumeClaim volumes, the
// secretRef of inline flexVolumes (volumes/ hands it to the driver) and
// imagePullSecrets (the Node authorizer allows them; a pull needs them).
// Secrets of volume kinds peapod cannot mount (cephfs, rbd, csi, …) are
// not followed.
func podReferences(pod *v1.Pod) references {
	cms, secs, claims := map[string]bool{}, map[string]bool{}, map[string]bool{}
	add := func(set map[string]bool, name string) {
		if name != "" {
			set[name] = true
		}
	}
	for _, r := range pod.Spec.ImagePullSecrets {
		add(secs, r.Name)
	}
	visit := func(c *v1.Container) {
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				add(cms, ef.ConfigMapRef.Name)
			}
			if ef.SecretRef != nil {
				add(secs, ef.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				add(cms, r.Name)
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				add(secs, r.Name)
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		visit(&pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		visit(&pod.Spec.Containers[i])
	}
	for i := range pod.Spec.EphemeralContainers {
		visit((*v1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon))
	}
	for _, vol := range pod.Spec.Volumes {
		src := vol.VolumeSource
		switch {
		case src.ConfigMap != nil:
			add(cms, src.ConfigMap.Name)
		case src.Secret != nil:
			add(secs, src.Secret.SecretName)
		case src.Projected != nil:
			for _, p := range src.Projected.Sources {
				if p.ConfigMap != nil {
					add(cms, p.ConfigMap.Name)
				}
				if p.Secret != nil {
					add(secs, p.Secret.Name)
				}
			}
		case src.PersistentVolumeClaim != nil:
			add(claims, src.PersistentVolumeClaim.ClaimName)
		case src.FlexVolume != nil:
			if src.FlexVolume.SecretRef != nil {
				add(secs, src.FlexVolume.SecretRef.Name)
			}
		}
	}
	return references{ConfigMaps: sorted(cms), Secrets: sorted(secs), Claims: sorted(claims)}
}

// pvSecrets are the secrets a bound PersistentVolume names that the node
// reads: its flexVolume's, and its CSI node-stage, node-publish and
// node-expand secrets (the ones the kubelet's CSI plugin reads; the
// controller's are the sidecars' business). A reference without a
// namespace is in the claim's, as the kubelet reads it.
func pvSecrets(pv *v1.PersistentVolume, podNamespace string) []objectKey {
	var refs []*v1.SecretReference
	if f := pv.Spec.FlexVolume; f != nil {
		refs = append(refs, f.SecretRef)
	}
	if c := pv.Spec.CSI; c != nil {
		refs = append(refs, c.NodeStageSecretRef, c.NodePublishSecretRef, c.NodeExpandSecretRef)
	}
	var out []objectKey
	for _, r := range refs {
		if r == nil || r.Name == "" {
			continue
		}
		ns := r.Namespace
		if ns == "" {
			ns = podNamespace
		}
		k := objectKey{Kind: kindSecret, Namespace: ns, Name: r.Name}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func sorted(set map[string]bool) []string {
	if len(set) == 0 {
		return nil
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
