package downward

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestFieldValue(t *testing.T) {
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", UID: "u1",
			Labels: map[string]string{"b": "2", "a": `q"1`}, Annotations: map[string]string{"note": "x"}},
		Spec:   v1.PodSpec{NodeName: "node1", ServiceAccountName: "sa"},
		Status: v1.PodStatus{PodIP: "10.0.0.5", HostIP: "192.0.2.1"},
	}
	ctx := FromStatus(pod)
	for path, want := range map[string]string{
		"metadata.name":                "web",
		"metadata.namespace":           "prod",
		"metadata.uid":                 "u1",
		"metadata.labels['b']":         "2",
		`metadata.labels["a"]`:         `q"1`,
		"metadata.labels['missing']":   "",
		"metadata.annotations['note']": "x",
		"metadata.labels":              "a=\"q\\\"1\"\nb=\"2\"\n",
		"spec.nodeName":                "node1",
		"spec.serviceAccountName":      "sa",
		"status.podIP":                 "10.0.0.5",
		"status.podIPs":                "10.0.0.5",
		"status.hostIP":                "192.0.2.1",
	} {
		got, err := FieldValue(pod, path, ctx)
		if err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := FieldValue(pod, "spec.unknown", ctx); err == nil {
		t.Error("unknown field path accepted")
	}
}

func TestResourceValue(t *testing.T) {
	c := v1.Container{Name: "app", Resources: v1.ResourceRequirements{
		Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m"), v1.ResourceMemory: resource.MustParse("64Mi")},
		Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m")},
	}}
	pod := &v1.Pod{Spec: v1.PodSpec{Containers: []v1.Container{c, {Name: "bare"}}}}
	node := v1.ResourceList{v1.ResourceCPU: resource.MustParse("4"), v1.ResourceMemory: resource.MustParse("1Gi")}
	tests := []struct {
		container, res, divisor, want string
	}{
		{"app", "limits.cpu", "", "2"}, // 1.5 cores rounded up
		{"app", "limits.cpu", "1m", "1500"},
		{"app", "requests.cpu", "1m", "250"},
		{"app", "limits.memory", "1Mi", "64"},
		{"app", "requests.memory", "", "67108864"}, // unset request = limit
		{"bare", "limits.cpu", "", "4"},            // unset limit = node allocatable
		{"bare", "requests.memory", "", "0"},
	}
	for _, tt := range tests {
		ref := &v1.ResourceFieldSelector{ContainerName: tt.container, Resource: tt.res}
		if tt.divisor != "" {
			ref.Divisor = resource.MustParse(tt.divisor)
		}
		got, err := ResourceValue(pod, nil, ref, node)
		if err != nil || got != tt.want {
			t.Errorf("%s %s /%s = %q, %v; want %q", tt.container, tt.res, tt.divisor, got, err, tt.want)
		}
	}
	if _, err := ResourceValue(pod, nil, &v1.ResourceFieldSelector{ContainerName: "nope", Resource: "limits.cpu"}, node); err == nil {
		t.Error("unknown container accepted")
	}
	if _, err := ResourceValue(pod, &pod.Spec.Containers[0], &v1.ResourceFieldSelector{Resource: "limits.gpu"}, node); err == nil {
		t.Error("unknown resource accepted")
	}
}
