package cgroupfs

import "testing"

func TestHasV1Controller(t *testing.T) {
	hybrid := `tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,nosuid,net_cls,net_prio 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /elsewhere/hugetlb cgroup rw,hugetlb 0 0
`
	for _, tt := range []struct {
		name string
		want bool
	}{
		{"memory", true},
		{"cpu", true},
		{"net_prio", true},
		{"hugetlb", false}, // only on the unified mount, or outside the root
		{"systemd", false}, // a named hierarchy is no controller
		{"pids", false},
	} {
		if got := hasV1Controller(hybrid, "/sys/fs/cgroup", tt.name); got != tt.want {
			t.Errorf("hasV1Controller(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
