package stats

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNodeMemory(t *testing.T) {
	const memTotal = 8029412 * 1024
	for _, tc := range []struct {
		name  string
		files map[string]string
		// want: usage, working set, rss; faults -1 when nil
		usage, ws, rss    uint64
		pgfault, majfault int64
	}{{
		name: "cgroup v1 root: usage_in_bytes − total_inactive_file",
		files: map[string]string{
			"cgroup/memory/memory.usage_in_bytes": "4793556992\n",
			"cgroup/memory/memory.stat":           memoryStatV1Fixture,
		},
		usage: 4793556992, ws: 4793556992 - 1709334528, rss: 11821056, pgfault: 344319702, majfault: 84959,
	}, {
		name: "cgroup v1: more inactive file than usage gives 0",
		files: map[string]string{
			"cgroup/memory/memory.usage_in_bytes": "100\n",
			"cgroup/memory/memory.stat":           "total_inactive_file 200\ntotal_rss 7\n",
		},
		usage: 100, ws: 0, rss: 7, pgfault: -1, majfault: -1,
	}, {
		name: "cgroup v2 root: anon + file − inactive_file",
		files: map[string]string{
			"cgroup/memory.stat": "anon 1000\nfile 5000\ninactive_file 3000\npgfault 9\npgmajfault 1\n",
		},
		usage: 6000, ws: 3000, rss: 1000, pgfault: 9, majfault: 1,
	}, {
		name:  "no memory cgroup: MemTotal − MemFree − Inactive(file)",
		files: map[string]string{},
		usage: (8029412 - 512000) * 1024, ws: (8029412 - 512000 - 1669272) * 1024, rss: 11544 * 1024, pgfault: -1, majfault: -1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.files["proc/meminfo"] = meminfoFixture
			dir := writeFiles(t, t.TempDir(), tc.files)
			p := &Provider{host: hostPaths{proc: filepath.Join(dir, "proc"), cgroup: filepath.Join(dir, "cgroup")}, now: func() time.Time { return testNow }}
			mem, swap, err := p.nodeMemory()
			if err != nil {
				t.Fatal(err)
			}
			if !mem.Time.Time.Equal(testNow) {
				t.Errorf("time = %v", mem.Time)
			}
			check := func(what string, got *uint64, want uint64) {
				t.Helper()
				if got == nil || *got != want {
					t.Errorf("%s = %v, want %d", what, got, want)
				}
			}
			check("usage", mem.UsageBytes, tc.usage)
			check("workingSet", mem.WorkingSetBytes, tc.ws)
			check("rss", mem.RSSBytes, tc.rss)
			check("available (MemTotal − working set)", mem.AvailableBytes, memTotal-tc.ws)
			for _, f := range []struct {
				what string
				got  *uint64
				want int64
			}{{"pageFaults", mem.PageFaults, tc.pgfault}, {"majorPageFaults", mem.MajorPageFaults, tc.majfault}} {
				if f.want < 0 {
					if f.got != nil {
						t.Errorf("%s = %d, want nil", f.what, *f.got)
					}
					continue
				}
				check(f.what, f.got, uint64(f.want))
			}
			check("swap usage (SwapTotal − SwapFree)", swap.SwapUsageBytes, 4096*1024)
			check("swap available (SwapFree)", swap.SwapAvailableBytes, 1044480*1024)
		})
	}
}

func TestNodeNetwork(t *testing.T) {
	p := &Provider{host: v1Host(t), now: func() time.Time { return testNow }}
	ns, err := p.nodeNetwork()
	if err != nil {
		t.Fatal(err)
	}
	// lo and the veth are left out, as cAdvisor does; eth0 is the default.
	if len(ns.Interfaces) != 1 || ns.Interfaces[0].Name != "eth0" {
		t.Fatalf("interfaces = %+v, want eth0 only", ns.Interfaces)
	}
	if ns.Name != "eth0" || *ns.RxBytes != 123456789 || *ns.TxBytes != 987654321 || *ns.RxErrors != 1 || *ns.TxErrors != 3 {
		t.Errorf("default interface = %+v", ns.InterfaceStats)
	}

	// Without eth0 the inline default stays empty, as the kubelet's.
	writeFiles(t, filepath.Dir(p.host.proc), map[string]string{"proc/net/dev": "h|\nh|\n  ens3: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"})
	ns, err = p.nodeNetwork()
	if err != nil {
		t.Fatal(err)
	}
	if ns.Name != "" || ns.RxBytes != nil || len(ns.Interfaces) != 1 || *ns.Interfaces[0].TxBytes != 9 {
		t.Errorf("without eth0: %+v", ns)
	}
}

func TestIgnoredInterface(t *testing.T) {
	for name, want := range map[string]bool{"lo": true, "veth1234": true, "docker0": true, "nerdctl0": true,
		"eth0": false, "cni0": false, "ens3": false, "flannel.1": false} {
		if got := ignoredInterface(name); got != want {
			t.Errorf("ignoredInterface(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRlimit(t *testing.T) {
	p := &Provider{host: v1Host(t), now: func() time.Time { return testNow }}
	r := p.rlimit()
	if r.MaxPID == nil || *r.MaxPID != 62761 { // min(pid_max, threads-max)
		t.Errorf("maxpid = %v, want 62761", r.MaxPID)
	}
	if r.NumOfRunningProcesses == nil || *r.NumOfRunningProcesses != 512 {
		t.Errorf("curproc = %v, want 512", r.NumOfRunningProcesses)
	}
	os.RemoveAll(p.host.proc)
	if r := p.rlimit(); r.MaxPID != nil || r.NumOfRunningProcesses != nil {
		t.Errorf("nothing readable: %+v, want nil figures", r)
	}
}

func TestNodeCPUUsageNanoCores(t *testing.T) {
	host := v1Host(t)
	now := testNow
	p := newProvider(Options{RootDir: t.TempDir()}, host, func() time.Time { return now })
	// New took the first sample; 10 s later, 5 more core-seconds were used.
	now = now.Add(10 * time.Second)
	writeFiles(t, filepath.Dir(host.proc), map[string]string{
		"proc/stat": "cpu  663292 25 270334 2909440 14532 0 12914 698 0 0\nbtime 1763900000\n",
	})
	cpu, err := p.nodeCPU()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64((663292 + 25 + 270334 + 12914) * 10_000_000); *cpu.UsageCoreNanoSeconds != want {
		t.Errorf("usageCoreNanoSeconds = %d, want %d", *cpu.UsageCoreNanoSeconds, want)
	}
	if cpu.UsageNanoCores == nil || *cpu.UsageNanoCores != 500_000_000 {
		t.Errorf("usageNanoCores = %v, want 5e8 (500 ticks in 10 s)", cpu.UsageNanoCores)
	}
}

// TestNodeFromThisMachine reads the real kernel files: the figures must
// be there and plausible on any Linux machine.
func TestNodeFromThisMachine(t *testing.T) {
	p := New(Options{NodeName: "here", RootDir: t.TempDir()})
	boot, err := p.bootTime()
	if err != nil || boot.After(time.Now()) || boot.Before(time.Unix(1e9, 0)) {
		t.Errorf("boot time %v, %v", boot, err)
	}
	cpu, err := p.nodeCPU()
	if err != nil || *cpu.UsageCoreNanoSeconds == 0 {
		t.Errorf("cpu %+v, %v", cpu, err)
	}
	mem, _, err := p.nodeMemory()
	if err != nil || *mem.WorkingSetBytes == 0 || *mem.AvailableBytes == 0 {
		t.Errorf("memory %+v, %v", mem, err)
	}
	if _, err := p.nodeNetwork(); err != nil {
		t.Errorf("network: %v", err)
	}
	fi, err := statfs(p.o.RootDir)
	if err != nil || fi.Capacity == 0 || fi.Available > fi.Capacity {
		t.Errorf("statfs %+v, %v", fi, err)
	}
	if r := p.rlimit(); r.MaxPID == nil || r.NumOfRunningProcesses == nil {
		t.Errorf("rlimit %+v", r)
	}
}
