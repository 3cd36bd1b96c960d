package podcgroups

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func res(kv ...string) v1.ResourceList {
	l := v1.ResourceList{}
	for i := 0; i < len(kv); i += 2 {
		l[v1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

func ctr(req, lim v1.ResourceList) v1.Container {
	return v1.Container{Name: "c", Resources: v1.ResourceRequirements{Requests: req, Limits: lim}}
}

func TestPodResources(t *testing.T) {
	always := v1.ContainerRestartPolicyAlways
	sidecar := ctr(res("cpu", "100m", "memory", "32Mi"), res("cpu", "100m", "memory", "32Mi"))
	sidecar.RestartPolicy = &always
	tests := []struct {
		name string
		spec v1.PodSpec
		qos  v1.PodQOSClass
		want Resources
	}{
		{"best effort", v1.PodSpec{Containers: []v1.Container{ctr(nil, nil)}}, v1.PodQOSBestEffort, Resources{CPUShares: 2}},
		{"guaranteed", v1.PodSpec{Containers: []v1.Container{ctr(nil, res("cpu", "500m", "memory", "64Mi"))}}, v1.PodQOSGuaranteed,
			Resources{CPUShares: 512, CPUQuotaUS: 50000, MemoryLimit: 64 << 20}},
		{"burstable without limits", v1.PodSpec{Containers: []v1.Container{ctr(res("cpu", "250m"), nil)}}, v1.PodQOSBurstable,
			Resources{CPUShares: 256}},
		{"burstable, one container unlimited", v1.PodSpec{Containers: []v1.Container{
			ctr(res("cpu", "100m"), res("cpu", "200m", "memory", "10Mi")), ctr(nil, nil)}}, v1.PodQOSBurstable,
			Resources{CPUShares: 102}},
		{"burstable sums", v1.PodSpec{Containers: []v1.Container{
			ctr(res("cpu", "100m", "memory", "10Mi"), res("cpu", "200m", "memory", "20Mi")),
			ctr(res("cpu", "100m", "memory", "10Mi"), res("cpu", "200m", "memory", "20Mi"))}}, v1.PodQOSBurstable,
			Resources{CPUShares: 204, CPUQuotaUS: 40000, MemoryLimit: 40 << 20}},
		{"init container larger than the app", v1.PodSpec{
			InitContainers: []v1.Container{ctr(nil, res("cpu", "2", "memory", "1Gi"))},
			Containers:     []v1.Container{ctr(nil, res("cpu", "500m", "memory", "64Mi"))}}, v1.PodQOSGuaranteed,
			Resources{CPUShares: 2048, CPUQuotaUS: 200000, MemoryLimit: 1 << 30}},
		{"sidecar adds up", v1.PodSpec{
			InitContainers: []v1.Container{sidecar},
			Containers:     []v1.Container{ctr(nil, res("cpu", "500m", "memory", "64Mi"))}}, v1.PodQOSGuaranteed,
			Resources{CPUShares: 614, CPUQuotaUS: 60000, MemoryLimit: 96 << 20}},
		{"overhead", v1.PodSpec{Overhead: res("cpu", "100m", "memory", "16Mi"),
			Containers: []v1.Container{ctr(nil, res("cpu", "500m", "memory", "64Mi"))}}, v1.PodQOSGuaranteed,
			Resources{CPUShares: 614, CPUQuotaUS: 60000, MemoryLimit: 80 << 20}},
		{"pod-level resources", v1.PodSpec{Resources: &v1.ResourceRequirements{Limits: res("cpu", "1", "memory", "128Mi")},
			Containers: []v1.Container{ctr(nil, nil)}}, v1.PodQOSGuaranteed,
			Resources{CPUShares: 1024, CPUQuotaUS: 100000, MemoryLimit: 128 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &v1.Pod{Spec: tt.spec}
			if got := QOSClass(pod); got != tt.qos {
				t.Fatalf("QOSClass = %s, want %s", got, tt.qos)
			}
			if got := podResources(pod, 0); got != tt.want {
				t.Fatalf("podResources = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestQOSClassFromStatusWins(t *testing.T) {
	pod := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{ctr(nil, nil)}}, Status: v1.PodStatus{QOSClass: v1.PodQOSBurstable}}
	if got := QOSClass(pod); got != v1.PodQOSBurstable {
		t.Fatalf("QOSClass = %s; the class in the status must win (it never changes)", got)
	}
}

func TestMilliCPUToShares(t *testing.T) {
	for _, tt := range []struct {
		milli int64
		want  uint64
	}{{0, 2}, {1, 2}, {10, 10}, {1000, 1024}, {2000, 2048}, {1 << 40, 262144}} {
		if got := MilliCPUToShares(tt.milli); got != tt.want {
			t.Errorf("MilliCPUToShares(%d) = %d, want %d", tt.milli, got, tt.want)
		}
	}
}

func metaUID(uid string) metav1.ObjectMeta {
	return metav1.ObjectMeta{UID: types.UID(uid), Name: uid, Namespace: "default"}
}
