package agent

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestUpdatedPod(t *testing.T) {
	cur := testPod(v1.RestartPolicyAlways, nil, "app")
	cur.Labels = map[string]string{"a": "1"}
	for _, tc := range []struct {
		name   string
		change func(p *v1.Pod)
		want   func(t *testing.T, np *v1.Pod)
	}{
		{"nothing the node acts on", func(p *v1.Pod) {
			p.Status.Phase = v1.PodRunning
			p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}
		}, nil},
		{"labels", func(p *v1.Pod) { p.Labels = map[string]string{"a": "2"} }, func(t *testing.T, np *v1.Pod) {
			if np.Labels["a"] != "2" {
				t.Errorf("labels %v", np.Labels)
			}
		}},
		{"image, resources left alone", func(p *v1.Pod) {
			p.Spec.Containers[0].Image = "busybox:2"
			p.Spec.Containers[0].Resources.Requests = v1.ResourceList{v1.ResourceCPU: resource.MustParse("1")}
		}, func(t *testing.T, np *v1.Pod) {
			if np.Spec.Containers[0].Image != "busybox:2" || np.Spec.Containers[0].Resources.Requests != nil {
				t.Errorf("container %+v", np.Spec.Containers[0])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := cur.DeepCopy()
			tc.change(api)
			np := updatedPod(cur, api)
			if tc.want == nil {
				if np != nil {
					t.Fatalf("got an update %+v", np)
				}
				return
			}
			if np == nil {
				t.Fatal("no update")
			}
			tc.want(t, np)
		})
	}
}
