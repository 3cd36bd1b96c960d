package stats

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestPodsContainer(t *testing.T) {
	const (
		memTotal = 8029412 * 1024 // meminfoFixture
		gi       = 1 << 30
		mi       = 1 << 20
	)
	v1Stat := "cache 1\nrss 2\ntotal_rss 1073741824\ntotal_inactive_file 536870912\ntotal_pgfault 10\ntotal_pgmajfault 1\n"
	v2Stat := "anon 1073741824\nfile 900000000\ninactive_file 536870912\npgfault 10\npgmajfault 1\n"
	v1 := func(path, limit string) map[string]string {
		return map[string]string{
			"cgroup/memory" + path + "/memory.usage_in_bytes": "2147483648\n",
			"cgroup/memory" + path + "/memory.stat":           v1Stat,
			"cgroup/memory" + path + "/memory.limit_in_bytes": limit + "\n",
			"cgroup/cpuacct" + path + "/cpuacct.usage":        "5000000000\n",
		}
	}
	v2 := func(path, limit string) map[string]string {
		return map[string]string{
			"cgroup" + path + "/memory.current": "2147483648\n",
			"cgroup" + path + "/memory.stat":    v2Stat,
			"cgroup" + path + "/memory.max":     limit + "\n",
			"cgroup" + path + "/cpu.stat":       "usage_usec 5000000\nuser_usec 4000000\nsystem_usec 1000000\n",
		}
	}
	const ws = 2*gi - 512*mi
	for _, tc := range []struct {
		name   string
		cgroup string
		files  map[string]string
		// avail is the wanted availableBytes, -1 for none.
		avail int64
	}{
		{"v1 with a limit", "/kubepods", v1("/kubepods", "4294967296"), 4*gi - ws},
		{"v1 unlimited: the machine's memory", "/kubepods", v1("/kubepods", "9223372036854771712"), memTotal - ws},
		{"v1 limit above the machine's memory", "/kubepods", v1("/kubepods", "17179869184"), memTotal - ws},
		{"v1 nested, path without a leading slash", "peapod-test-x/kubepods", v1("/peapod-test-x/kubepods", "4294967296"), 4*gi - ws},
		{"v1 cpu and cpuacct joined", "/kubepods", func() map[string]string {
			f := v1("/kubepods", "4294967296")
			delete(f, "cgroup/cpuacct/kubepods/cpuacct.usage")
			f["cgroup/cpu,cpuacct/kubepods/cpuacct.usage"] = "5000000000\n"
			return f
		}(), 4*gi - ws},
		{"v2 with a limit", "/kubepods", v2("/kubepods", "4294967296"), 4*gi - ws},
		{"v2 max: the machine's memory", "/peapod-test-x/kubepods", v2("/peapod-test-x/kubepods", "max"), memTotal - ws},
		{"v2 limit below the working set", "/kubepods", v2("/kubepods", "1073741824"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.files["proc/meminfo"] = meminfoFixture
			dir := writeFiles(t, t.TempDir(), tc.files)
			p := &Provider{o: Options{PodsCgroup: tc.cgroup}, cpu: newCPUCache(), now: func() time.Time { return testNow },
				host: hostPaths{proc: filepath.Join(dir, "proc"), cgroup: filepath.Join(dir, "cgroup")}}
			sc := p.systemContainers()
			if len(sc) != 1 {
				t.Fatalf("systemContainers = %+v, want the pods container", sc)
			}
			c := sc[0]
			if c.Name != statsapi.SystemContainerPods || c.Memory == nil || c.CPU == nil {
				t.Fatalf("container %+v", c)
			}
			if !c.Memory.Time.Time.Equal(testNow) || !c.CPU.Time.Time.Equal(testNow) {
				t.Errorf("times %v %v", c.Memory.Time, c.CPU.Time)
			}
			eq(t, "usage", c.Memory.UsageBytes, 2*gi)
			eq(t, "working set (usage − inactive file)", c.Memory.WorkingSetBytes, ws)
			eq(t, "rss", c.Memory.RSSBytes, 1*gi)
			eq(t, "page faults", c.Memory.PageFaults, 10)
			eq(t, "major page faults", c.Memory.MajorPageFaults, 1)
			eq(t, "available", c.Memory.AvailableBytes, uint64(tc.avail))
			eq(t, "cpu usageCoreNanoSeconds", c.CPU.UsageCoreNanoSeconds, 5_000_000_000)
			if c.CPU.UsageNanoCores != nil {
				t.Errorf("usageNanoCores %d after the first sample, want nil", *c.CPU.UsageNanoCores)
			}
		})
	}
}

func TestPodsContainerUnreadable(t *testing.T) {
	dir := writeFiles(t, t.TempDir(), map[string]string{
		"proc/meminfo": meminfoFixture,
		// v1 memory but no cpuacct: no half figures.
		"cgroup/memory/kubepods/memory.usage_in_bytes": "1\n",
		"cgroup/memory/kubepods/memory.stat":           "total_rss 1\n",
		// v2 cgroup without cpu.stat.
		"cgroup/v2pods/memory.current": "1\n",
		"cgroup/v2pods/memory.stat":    "anon 1\n",
	})
	for _, cg := range []string{"/kubepods", "/v2pods", "/missing"} {
		p := &Provider{o: Options{PodsCgroup: cg}, cpu: newCPUCache(), now: func() time.Time { return testNow },
			host: hostPaths{proc: filepath.Join(dir, "proc"), cgroup: filepath.Join(dir, "cgroup")}}
		if _, err := p.podsContainer(); err == nil {
			t.Errorf("%s: no error", cg)
		}
		if sc := p.systemContainers(); sc != nil {
			t.Errorf("%s: systemContainers = %+v, want none", cg, sc)
		}
	}
	p := &Provider{host: hostPaths{cgroup: filepath.Join(dir, "cgroup")}}
	if sc := p.systemContainers(); sc != nil {
		t.Errorf("no PodsCgroup: systemContainers = %+v", sc)
	}
}

// TestGetWithPodsCgroup: Get (what the eviction manager reads) and both
// HTTP summaries carry the pods container, with a CPU rate once sampled
// twice.
func TestGetWithPodsCgroup(t *testing.T) {
	e := newSummaryEnv(t)
	root := filepath.Dir(e.p.host.cgroup)
	files := map[string]string{
		"cgroup/memory/kubepods/memory.usage_in_bytes": "2000\n",
		"cgroup/memory/kubepods/memory.stat":           "total_inactive_file 500\ntotal_rss 1000\n",
		"cgroup/memory/kubepods/memory.limit_in_bytes": "10000\n",
		"cgroup/cpuacct/kubepods/cpuacct.usage":        "1000000000\n",
	}
	writeFiles(t, root, files)
	e.p.o.PodsCgroup = "/kubepods"

	s, err := e.p.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Node.SystemContainers) != 1 || s.Node.SystemContainers[0].Name != "pods" {
		t.Fatalf("systemContainers %+v", s.Node.SystemContainers)
	}
	eq(t, "pods available", s.Node.SystemContainers[0].Memory.AvailableBytes, 10000-1500)
	if len(s.Pods) != 2 {
		t.Errorf("Get has %d pods, want the summary's 2", len(s.Pods))
	}

	*e.now = e.now.Add(10 * time.Second)
	writeFiles(t, root, map[string]string{"cgroup/cpuacct/kubepods/cpuacct.usage": "6000000000\n"})
	for _, target := range []string{"/stats/summary", "/stats/summary?only_cpu_and_memory=true"} {
		s, _ := e.get(t, target)
		if len(s.Node.SystemContainers) != 1 {
			t.Fatalf("%s: systemContainers %+v", target, s.Node.SystemContainers)
		}
		c := s.Node.SystemContainers[0]
		eq(t, target+" pods working set", c.Memory.WorkingSetBytes, 1500)
		eq(t, target+" pods usageNanoCores", c.CPU.UsageNanoCores, 500_000_000) // 5 s of CPU in 10 s
	}
}
