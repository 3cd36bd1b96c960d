package apiobjects

import (
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestPodReferences(t *testing.T) {
	cmKey := func(name string) *v1.ConfigMapKeySelector {
		return &v1.ConfigMapKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: "k"}
	}
	secKey := func(name string) *v1.SecretKeySelector {
		return &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: name}, Key: "k"}
	}
	cases := []struct {
		name string
		spec v1.PodSpec
		want references
	}{
		{name: "nothing", spec: v1.PodSpec{Containers: []v1.Container{{Name: "c"}}}},
		{
			name: "env and envFrom in every kind of container",
			spec: v1.PodSpec{
				InitContainers: []v1.Container{{Name: "i", EnvFrom: []v1.EnvFromSource{
					{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm-init"}}},
					{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "sec-init"}}},
				}}},
				Containers: []v1.Container{{Name: "c", Env: []v1.EnvVar{
					{Name: "A", Value: "plain"},
					{Name: "B", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: cmKey("cm-env")}},
					{Name: "C", ValueFrom: &v1.EnvVarSource{SecretKeyRef: secKey("sec-env")}},
					{Name: "D", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				}}},
				EphemeralContainers: []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "e",
					Env: []v1.EnvVar{{Name: "E", ValueFrom: &v1.EnvVarSource{SecretKeyRef: secKey("sec-debug")}}}}}},
			},
			want: references{ConfigMaps: []string{"cm-env", "cm-init"}, Secrets: []string{"sec-debug", "sec-env", "sec-init"}},
		},
		{
			name: "volumes",
			spec: v1.PodSpec{Volumes: []v1.Volume{
				{Name: "a", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm-vol"}}}},
				{Name: "b", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "sec-vol"}}},
				{Name: "c", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}},
				{Name: "d", VolumeSource: v1.VolumeSource{FlexVolume: &v1.FlexVolumeSource{Driver: "x/y", SecretRef: &v1.LocalObjectReference{Name: "sec-flex"}}}},
				{Name: "e", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}},
			}},
			want: references{ConfigMaps: []string{"cm-vol"}, Secrets: []string{"sec-flex", "sec-vol"}, Claims: []string{"data"}},
		},
		{
			// What the ServiceAccount admission plugin adds: the token, the
			// kube-root-ca.crt ConfigMap and the namespace.
			name: "projected service account volume",
			spec: v1.PodSpec{Volumes: []v1.Volume{{Name: "kube-api-access-x", VolumeSource: v1.VolumeSource{Projected: &v1.ProjectedVolumeSource{Sources: []v1.VolumeProjection{
				{ServiceAccountToken: &v1.ServiceAccountTokenProjection{Path: "token"}},
				{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items: []v1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "namespace",
					FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
				{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "extra"}}},
			}}}}}},
			want: references{ConfigMaps: []string{"kube-root-ca.crt"}, Secrets: []string{"extra"}},
		},
		{
			name: "image pull secrets; duplicates and empty names once",
			spec: v1.PodSpec{
				ImagePullSecrets: []v1.LocalObjectReference{{Name: "regcred"}, {Name: ""}},
				Containers: []v1.Container{
					{Name: "a", Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{SecretKeyRef: secKey("regcred")}}}},
					{Name: "b", EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}},
						Env: []v1.EnvVar{{Name: "Y", ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: cmKey("cm")}}}},
				},
				Volumes: []v1.Volume{{Name: "v", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}}}}},
			},
			want: references{ConfigMaps: []string{"cm"}, Secrets: []string{"regcred"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := podReferences(&v1.Pod{Spec: tc.spec})
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("podReferences = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPVSecrets(t *testing.T) {
	flexPV := func(ref *v1.SecretReference) *v1.PersistentVolume {
		return &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
			FlexVolume: &v1.FlexPersistentVolumeSource{Driver: "x/y", SecretRef: ref}}}}
	}
	csiPV := func(c v1.CSIPersistentVolumeSource) *v1.PersistentVolume {
		c.Driver, c.VolumeHandle = "d", "h"
		return &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &c}}}
	}
	cases := []struct {
		name string
		pv   *v1.PersistentVolume
		want []objectKey
	}{
		{name: "no flexVolume", pv: &v1.PersistentVolume{}},
		{name: "flexVolume without secret", pv: flexPV(nil)},
		{name: "namespaced ref", pv: flexPV(&v1.SecretReference{Name: "s", Namespace: "other"}),
			want: []objectKey{{kindSecret, "other", "s"}}},
		{name: "ref without namespace: the pod's", pv: flexPV(&v1.SecretReference{Name: "s"}),
			want: []objectKey{{kindSecret, "ns", "s"}}},
		{name: "csi without secrets", pv: csiPV(v1.CSIPersistentVolumeSource{})},
		{name: "csi node secrets, once each; the controller's left to the sidecars", pv: csiPV(v1.CSIPersistentVolumeSource{
			ControllerPublishSecretRef: &v1.SecretReference{Name: "ctrl", Namespace: "kube-system"},
			NodeStageSecretRef:         &v1.SecretReference{Name: "stage", Namespace: "kube-system"},
			NodePublishSecretRef:       &v1.SecretReference{Name: "stage", Namespace: "kube-system"},
			NodeExpandSecretRef:        &v1.SecretReference{Name: "expand"},
		}), want: []objectKey{{kindSecret, "kube-system", "stage"}, {kindSecret, "ns", "expand"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pvSecrets(tc.pv, "ns"); !slices.Equal(got, tc.want) {
				t.Errorf("pvSecrets = %v; want %v", got, tc.want)
			}
		})
	}
}
