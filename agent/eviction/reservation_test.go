package eviction

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"peapod/config"
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

// TestConfigAgrees: what config accepts (it checks the syntax itself, the
// runtime binary links no Kubernetes package), this parser accepts; what
// config refuses for a signal, this refuses too.
func TestConfigAgrees(t *testing.T) {
	d := config.Default().Agent
	if _, err := ParseThresholds(d.EvictionHard, d.EvictionSoft, d.EvictionSoftGracePeriod, d.EvictionMinimumReclaim, true); err != nil {
		t.Fatalf("the default config's thresholds: %v", err)
	}
	for _, v := range []string{"100Mi", "10%", "0.5Gi", "1e9", "0%", "100%", "12.5%"} {
		c := config.Default()
		err := config.Parse([]byte("[agent]\neviction_hard = { \"memory.available\" = \""+v+"\" }\n"), c)
		_, perr := ParseThresholds(map[string]string{"memory.available": v}, nil, nil, nil, false)
		if (err == nil) != (perr == nil) {
			t.Errorf("%q: config says %v, the parser %v", v, err, perr)
		}
	}
	for _, v := range []string{"lots", "-1Mi", "120%", "%", "1Mib"} {
		c := config.Default()
		if err := config.Parse([]byte("[agent]\neviction_hard = { \"memory.available\" = \""+v+"\" }\n"), c); err == nil {
			t.Errorf("config accepts %q", v)
		}
		if _, err := ParseThresholds(map[string]string{"memory.available": v}, nil, nil, nil, false); err == nil {
			t.Errorf("the parser accepts %q", v)
		}
	}
	for i, sig := range configurable {
		if i >= len(config.EvictionSignals) || config.EvictionSignals[i] != string(sig) {
			t.Errorf("config's signals %v differ from the parser's %v", config.EvictionSignals, configurable)
			break
		}
	}
}
