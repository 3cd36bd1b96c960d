package volumes

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// kubelet_volume_stats_* come from the last measurement: a volume is
// measured at its first scrape and then by the periodic refresh only, so a
// path that stops answering (a hung driver or mount) no longer holds up a
// scrape; what the refresh cannot measure reports nothing, and is not
// measured again at scrape time.
func TestVolumeStatsCached(t *testing.T) {
	mt := newMetrics(nil)
	reg := prometheus.NewRegistry()
	if err := mt.register(reg); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mt.mu.Lock()
	mt.targets = []statsTarget{{namespace: "ns", claim: "data", path: dir}}
	mt.mu.Unlock()
	labels := map[string]string{"namespace": "ns", "persistentvolumeclaim": "data"}
	first := counter(t, reg, "kubelet_volume_stats_capacity_bytes", labels)
	if first <= 0 {
		t.Fatalf("capacity %v at the first scrape, want the filesystem's", first)
	}
	if err := os.Remove(dir); err != nil { // statfs would fail from now on
		t.Fatal(err)
	}
	if got := counter(t, reg, "kubelet_volume_stats_capacity_bytes", labels); got != first {
		t.Fatalf("capacity %v at the second scrape, want the cached %v (no new statfs)", got, first)
	}
	mt.refresh()
	if got := counter(t, reg, "kubelet_volume_stats_capacity_bytes", labels); got != 0 {
		t.Fatalf("capacity %v after a refresh that could not measure, want none", got)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, reg, "kubelet_volume_stats_capacity_bytes", labels); got != 0 {
		t.Fatalf("capacity %v: measured at scrape time after a failed refresh, want it left to the next refresh", got)
	}
	mt.refresh()
	if got := counter(t, reg, "kubelet_volume_stats_capacity_bytes", labels); got != first {
		t.Fatalf("capacity %v after a refresh that could measure, want %v", got, first)
	}
}
