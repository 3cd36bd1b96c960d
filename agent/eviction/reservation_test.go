package eviction

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestHardReservation(t *testing.T) {
	ths, err := ParseThresholds(map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "imagefs.available": "15%"},
		map[string]string{"memory.available": "1Gi"}, map[string]string{"memory.available": "1m"}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	capacity := v1.ResourceList{v1.ResourceMemory: resource.MustParse("8Gi"), v1.ResourceEphemeralStorage: resource.MustParse("100G")}
	got := HardReservation(ths, capacity)
	want := v1.ResourceList{v1.ResourceMemory: resource.MustParse("100Mi"), v1.ResourceEphemeralStorage: resource.MustParse("10G")}
	if len(got) != len(want) {
		t.Fatalf("HardReservation = %v, want %v", got, want)
	}
	for n, w := range want {
		if g := got[n]; g.Cmp(w) != 0 {
			t.Errorf("%s = %s, want %s (soft thresholds and imagefs do not count)", n, g.String(), w.String())
		}
	}
}
