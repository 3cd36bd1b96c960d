package podcgroups

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"peapod/hack/testenv"
	"peapod/internal/cgroupfs"
)

func read(t *testing.T, path, file string) string {
	t.Helper()
	v, err := cgroupfs.Get(path, file)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTree: the QoS tiers and pod cgroups land where the kubelet's
// cgroupfs driver puts them, with its limits, read back from the files;
// the burstable tier's shares follow its pods; removal leaves nothing.
func TestTree(t *testing.T) {
	testenv.Integration(t)
	if cgroupfs.IsV2() {
		t.Skip("the files read here are cgroup v1's; this machine kind is hybrid")
	}
	root := fmt.Sprintf("/peapod-podcgroups-test-%d", os.Getpid())
	t.Cleanup(func() { removeTree(root) })
	m, err := New(Options{Root: root, PodPidsLimit: 100, NodeLimits: res("cpu", "1500m", "memory", "1Gi", "pid", "1000")})
	if err != nil {
		t.Fatal(err)
	}
	kp := root + "/kubepods"
	if m.PodsCgroup() != kp {
		t.Fatalf("PodsCgroup = %s", m.PodsCgroup())
	}
	for file, want := range map[string]string{"cpu.shares": "1536", "memory.limit_in_bytes": strconv.Itoa(1 << 30), "pids.max": "1000"} {
		if got := read(t, kp, file); got != want {
			t.Errorf("kubepods %s = %s, want %s", file, got, want)
		}
	}
	if got := read(t, kp+"/besteffort", "cpu.shares"); got != "2" {
		t.Errorf("besteffort cpu.shares = %s, want 2", got)
	}

	pod := func(uid string, c v1.Container) *v1.Pod {
		return &v1.Pod{ObjectMeta: metaUID(uid), Spec: v1.PodSpec{Containers: []v1.Container{c}}}
	}
	g := pod("g-1", ctr(nil, res("cpu", "500m", "memory", "64Mi")))
	b1 := pod("b-1", ctr(res("cpu", "250m"), res("memory", "32Mi")))
	b2 := pod("b-2", ctr(res("cpu", "500m"), nil))
	be := pod("be-1", ctr(nil, nil))
	for _, tt := range []struct {
		pod   *v1.Pod
		path  string
		files map[string]string
	}{
		{g, kp + "/podg-1", map[string]string{"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000", "memory.limit_in_bytes": strconv.Itoa(64 << 20), "pids.max": "100"}},
		{b1, kp + "/burstable/podb-1", map[string]string{"cpu.shares": "256", "cpu.cfs_quota_us": "-1", "memory.limit_in_bytes": strconv.Itoa(32 << 20)}},
		{b2, kp + "/burstable/podb-2", map[string]string{"cpu.shares": "512", "cpu.cfs_quota_us": "-1"}},
		{be, kp + "/besteffort/podbe-1", map[string]string{"cpu.shares": "2", "cpu.cfs_quota_us": "-1"}},
	} {
		path, err := m.EnsurePod(tt.pod)
		if err != nil {
			t.Fatal(err)
		}
		if path != tt.path {
			t.Fatalf("pod %s: cgroup %s, want %s", tt.pod.UID, path, tt.path)
		}
		for file, want := range tt.files {
			if got := read(t, path, file); got != want {
				t.Errorf("pod %s: %s = %s, want %s", tt.pod.UID, file, got, want)
			}
		}
	}
	if got := read(t, kp+"/burstable", "cpu.shares"); got != "768" {
		t.Errorf("burstable cpu.shares = %s, want 768 (250m + 500m)", got)
	}
	// A BestEffort pod's memory is unlimited at its level: the tier's
	// (and the node's) limit is what holds it.
	if got := read(t, kp+"/besteffort/podbe-1", "memory.limit_in_bytes"); got == "67108864" {
		t.Errorf("besteffort pod has a memory limit %s", got)
	}

	// A process in a pod cgroup keeps it; once gone, it is removed.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cgroupfs.Join(kp+"/burstable/podb-1/ctr", cmd.Process.Pid, 0); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if err := m.RemovePod(b1); err == nil {
		t.Error("RemovePod of a pod with a running process succeeded")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := m.RemovePod(b1); err != nil {
		t.Fatalf("RemovePod: %v", err)
	}
	if got := read(t, kp+"/burstable", "cpu.shares"); got != "512" {
		t.Errorf("burstable cpu.shares after removal = %s, want 512", got)
	}
	if dirs := cgroupfs.Dirs(kp + "/burstable/podb-1"); len(dirs) != 0 {
		t.Errorf("pod cgroup left in %v", dirs)
	}

	removed := m.RemoveOrphans(func(uid types.UID) bool { return uid == "g-1" })
	if len(removed) != 2 {
		t.Errorf("RemoveOrphans removed %v, want podb-2 and podbe-1", removed)
	}
	if _, err := os.Stat(filepath.Join(cgroupfs.Root, "memory", kp, "podg-1")); err != nil {
		t.Errorf("kept pod's cgroup is gone: %v", err)
	}
}
