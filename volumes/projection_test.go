package volumes

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func i32(v int32) *int32 { return &v }
func bptr(v bool) *bool  { return &v }

func testPod() *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", UID: "uid-1",
			Labels:      map[string]string{"app": "web", "tier": "front\"end"},
			Annotations: map[string]string{"a": "1"}},
		Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c",
			Resources: v1.ResourceRequirements{
				Limits:   v1.ResourceList{v1.ResourceMemory: resource.MustParse("64Mi"), v1.ResourceCPU: resource.MustParse("250m")},
				Requests: v1.ResourceList{v1.ResourceMemory: resource.MustParse("32Mi")},
			}}}},
	}
}

func testObjs() *Objects {
	return &Objects{
		ConfigMaps: map[string]*v1.ConfigMap{"ns/cm": {ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"},
			Data: map[string]string{"x": "X", "y": "Y"}, BinaryData: map[string][]byte{"bin": {0, 1}}}},
		Secrets: map[string]*v1.Secret{"ns/s": {ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"},
			Data: map[string][]byte{"pw": []byte("hunter2")}}},
	}
}

func TestConfigMapPayload(t *testing.T) {
	pod, objs := testPod(), testObjs()
	cases := []struct {
		name    string
		src     v1.ConfigMapVolumeSource
		want    map[string]string
		modes   map[string]uint32
		wantErr string
	}{
		{name: "all keys, default mode", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}},
			want: map[string]string{"x": "X", "y": "Y", "bin": "\x00\x01"}, modes: map[string]uint32{"x": 0o644}},
		{name: "items with mode and defaultMode", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"},
			DefaultMode: i32(0o440), Items: []v1.KeyToPath{{Key: "x", Path: "dir/x.txt", Mode: i32(0o400)}, {Key: "y", Path: "y"}}},
			want: map[string]string{"dir/x.txt": "X", "y": "Y"}, modes: map[string]uint32{"dir/x.txt": 0o400, "y": 0o440}},
		{name: "missing key", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"},
			Items: []v1.KeyToPath{{Key: "nope", Path: "n"}}}, wantErr: `no key "nope"`},
		{name: "missing key optional", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"},
			Optional: bptr(true), Items: []v1.KeyToPath{{Key: "nope", Path: "n"}, {Key: "x", Path: "x"}}}, want: map[string]string{"x": "X"}},
		{name: "missing configmap", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "other"}}, wantErr: "not found"},
		{name: "missing configmap optional", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "other"}, Optional: bptr(true)}, want: map[string]string{}},
		{name: "item path escapes", src: v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: "cm"},
			Items: []v1.KeyToPath{{Key: "x", Path: "../x"}}}, wantErr: "'..'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := configMapPayload(pod, &tc.src, objs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p) != len(tc.want) {
				t.Fatalf("payload %v, want %v", p, tc.want)
			}
			for k, v := range tc.want {
				if string(p[k].Data) != v {
					t.Errorf("%s = %q, want %q", k, p[k].Data, v)
				}
			}
			for k, m := range tc.modes {
				if uint32(p[k].Mode) != m {
					t.Errorf("%s mode %o, want %o", k, p[k].Mode, m)
				}
			}
		})
	}
}

func TestDownwardAPIRendering(t *testing.T) {
	pod := testPod()
	nodeAllocatable = func() v1.ResourceList {
		return v1.ResourceList{v1.ResourceCPU: resource.MustParse("4"), v1.ResourceMemory: resource.MustParse("1Gi")}
	}
	mi := resource.MustParse("1Mi")
	milli := resource.MustParse("1m")
	items := []v1.DownwardAPIVolumeFile{
		{Path: "name", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}},
		{Path: "ns", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
		{Path: "uid", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.uid"}},
		{Path: "labels", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels"}, Mode: i32(0o400)},
		{Path: "annotations", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.annotations"}},
		{Path: "app", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
		{Path: "mem_limit_mi", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.memory", Divisor: mi}},
		{Path: "mem_request", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "requests.memory"}},
		{Path: "cpu_limit", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.cpu"}},
		{Path: "cpu_limit_m", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.cpu", Divisor: milli}},
		{Path: "cpu_request_m", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "requests.cpu", Divisor: milli}},
		{Path: "eph_limit", ResourceFieldRef: &v1.ResourceFieldSelector{ContainerName: "c", Resource: "limits.ephemeral-storage"}},
	}
	p, err := downwardAPIPayload(pod, items, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name": "web", "ns": "ns", "uid": "uid-1",
		"labels":        "app=\"web\"\ntier=\"front\\\"end\"\n",
		"annotations":   "a=\"1\"\n",
		"app":           "web",
		"mem_limit_mi":  "64",
		"mem_request":   "33554432",
		"cpu_limit":     "1", // 250m rounded up to whole cores
		"cpu_limit_m":   "250",
		"cpu_request_m": "250", // requests default to limits
		"eph_limit":     "0",
	}
	for k, v := range want {
		if got := string(p[k].Data); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if p["labels"].Mode != 0o400 {
		t.Errorf("labels mode %o", p["labels"].Mode)
	}
	if _, err := downwardAPIPayload(pod, []v1.DownwardAPIVolumeFile{{Path: "x", FieldRef: &v1.ObjectFieldSelector{FieldPath: "spec.bogus"}}}, 0o644); err == nil {
		t.Error("unsupported fieldPath accepted")
	}
}

func TestProjectedPayloadMix(t *testing.T) {
	pod, objs := testPod(), testObjs()
	src := &v1.ProjectedVolumeSource{DefaultMode: i32(0o400), Sources: []v1.VolumeProjection{
		{ConfigMap: &v1.ConfigMapProjection{LocalObjectReference: v1.LocalObjectReference{Name: "cm"}, Items: []v1.KeyToPath{{Key: "x", Path: "cfg/x"}}}},
		{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "s"}}},
		{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "absent"}, Optional: bptr(true)}},
		{DownwardAPI: &v1.DownwardAPIProjection{Items: []v1.DownwardAPIVolumeFile{{Path: "podname", FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
	}}
	p, err := projectedPayload(context.Background(), pod, src, objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(p["cfg/x"].Data) != "X" || string(p["pw"].Data) != "hunter2" || string(p["podname"].Data) != "web" || len(p) != 3 {
		t.Fatalf("payload %v", p)
	}
	if p["pw"].Mode != 0o400 {
		t.Errorf("pw mode %o", p["pw"].Mode)
	}
	src.Sources = append(src.Sources, v1.VolumeProjection{Secret: &v1.SecretProjection{LocalObjectReference: v1.LocalObjectReference{Name: "absent"}}})
	if _, err := projectedPayload(context.Background(), pod, src, objs, nil); err == nil {
		t.Error("missing non-optional secret accepted")
	}
}
