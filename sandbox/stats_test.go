package sandbox

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseNetDev(t *testing.T) {
	data := `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    1296      16    1    2    0     0          0         0      726       9    3    4    0     0       0          0
`
	got := parseNetDev(data)
	if len(got) != 1 {
		t.Fatalf("parseNetDev = %+v, want eth0 only", got)
	}
	want := InterfaceStats{Name: "eth0", RxBytes: 1296, RxPackets: 16, RxErrors: 1, RxDropped: 2, TxBytes: 726, TxPackets: 9, TxErrors: 3, TxDropped: 4}
	if got[0] != want {
		t.Errorf("eth0 = %+v, want %+v", got[0], want)
	}
}

// TestStatsCacheReadsOncePerSecond: many concurrent askers within
// StatsMaxAge cost one read; a later ask reads again; unused entries go.
func TestStatsCacheReadsOncePerSecond(t *testing.T) {
	c := newStatsCache()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var reads, fsReads atomic.Int32
	c.readCgroup = func(path string) CgroupStats {
		reads.Add(1)
		time.Sleep(5 * time.Millisecond) // askers pile up behind one read
		return CgroupStats{CPUUsageNanos: uint64(reads.Load()), HaveCPU: true}
	}
	c.readFs = func(dir string) FsUsage { fsReads.Add(1); return FsUsage{Path: dir} }

	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.cgroup("/peapod/pod1/c1") }()
	}
	wg.Wait()
	if n := reads.Load(); n != 1 {
		t.Fatalf("50 concurrent askers: %d reads, want 1", n)
	}
	advance(StatsMaxAge / 2)
	if st := c.cgroup("/peapod/pod1/c1"); st.CPUUsageNanos != 1 || reads.Load() != 1 {
		t.Fatalf("within max age: reads %d, value %d", reads.Load(), st.CPUUsageNanos)
	}
	advance(StatsMaxAge)
	if st := c.cgroup("/peapod/pod1/c1"); st.CPUUsageNanos != 2 {
		t.Fatalf("after max age: value %d, want a fresh read", st.CPUUsageNanos)
	}
	// Another cgroup is its own entry.
	c.cgroup("/peapod/pod2/c2")
	if n := reads.Load(); n != 3 {
		t.Fatalf("reads = %d, want 3", n)
	}
	// The writable layer has its own, longer, max age.
	c.writable("/x/upper")
	advance(StatsMaxAge * 2)
	c.writable("/x/upper")
	if n := fsReads.Load(); n != 1 {
		t.Errorf("fs reads = %d within FsStatsMaxAge, want 1", n)
	}
	advance(FsStatsMaxAge)
	c.writable("/x/upper")
	if n := fsReads.Load(); n != 2 {
		t.Errorf("fs reads = %d after FsStatsMaxAge, want 2", n)
	}
	// Entries nobody asks about are evicted.
	advance(2 * statsEvictAfter)
	c.cgroup("/peapod/pod3/c3")
	c.mu.Lock()
	_, kept := c.cgroups["/peapod/pod1/c1"]
	c.mu.Unlock()
	if kept {
		t.Errorf("stale entry not evicted")
	}
}

func TestReadTasks(t *testing.T) {
	dir := t.TempDir()
	child := filepath.Join(dir, "child")
	if err := os.Mkdir(child, 0o755); err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	for p, v := range map[string]string{
		filepath.Join(dir, "pids.current"):   "7\n",
		filepath.Join(dir, "pids.max"):       "max\n",
		filepath.Join(dir, "cgroup.procs"):   "",
		filepath.Join(child, "cgroup.procs"): self + "\n",
	} {
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var x TaskCounts
	readTasks(dir, &x)
	if x.Threads != 7 || x.ThreadsMax != 0 || x.Processes != 1 || x.FileDescriptors == 0 {
		t.Errorf("readTasks = %+v: want 7 threads, no limit, 1 process (this test's) with its descriptors", x)
	}
	os.WriteFile(filepath.Join(dir, "pids.max"), []byte("512\n"), 0o644)
	x = TaskCounts{}
	readTasks(dir, &x)
	if x.ThreadsMax != 512 {
		t.Errorf("ThreadsMax = %d, want 512", x.ThreadsMax)
	}
}
