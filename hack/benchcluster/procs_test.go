package main

import (
	"fmt"
	"strings"
	"testing"
)

// statLine is a /proc/<pid>/stat line with the fields parseStat reads set.
func statLine(pid, ppid int, comm string, utime, stime, cutime, cstime, start uint64) string {
	return fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194304 101 0 0 0 %d %d %d %d 20 0 1 0 %d 3133440 412 18446744073709551615 0 0",
		pid, comm, ppid, pid, pid, utime, stime, cutime, cstime, start)
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		want    procStat
		wantErr bool
	}{
		{"plain", statLine(42, 1, "conmon", 10, 5, 3, 2, 9000), procStat{pid: 42, ppid: 1, comm: "conmon", state: "S", start: 9000, ticks: 20}, false},
		{"comm with spaces and parentheses", statLine(7, 3, "a) (b c", 1, 1, 0, 0, 5), procStat{pid: 7, ppid: 3, comm: "a) (b c", state: "S", start: 5, ticks: 2}, false},
		{"runc's init", statLine(9, 8, "runc:[2:INIT]", 0, 0, 0, 0, 1), procStat{pid: 9, ppid: 8, comm: "runc:[2:INIT]", state: "S", start: 1}, false},
		{"truncated", "12 (x) S 1 2", procStat{}, true},
		{"no comm", "12 x S 1 2 3", procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %t", err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A node as /proc shows it: the runtime daemon (100), the kubelet (200),
// helpers re-parented to init whose command line names the cluster dir,
// and another cluster's conmon (900) that must not count.
func fakeNode(shape string) (map[int]procStat, map[int]string) {
	p := func(pid, ppid int, comm string) procStat {
		return procStat{pid: pid, ppid: ppid, comm: comm, start: uint64(pid), ticks: 100}
	}
	procs := map[int]procStat{
		1:   p(1, 0, "init"),
		100: p(100, 1, "peapod"),
		200: p(200, 1, "kubelet"),
		201: p(201, 200, "iptables"),
		900: p(900, 1, "conmon"),
		901: p(901, 900, "sleep"),
	}
	cmd := map[int]string{900: "conmon --bundle /tmp/other/run/x"}
	switch shape {
	case "peapod": // pause below the daemon, one conmon per container above the workload
		for i := 0; i < 2; i++ {
			procs[110+i] = p(110+i, 100, "peapod-pause")
			procs[300+i] = p(300+i, 1, "conmon")
			procs[310+i] = p(310+i, 300+i, "sh")
			procs[320+i] = p(320+i, 310+i, "httpd")
			cmd[300+i] = "conmon --bundle /run/pbc-1/runtime/run/x"
		}
		procs[130] = p(130, 100, "bridge") // a CNI plugin the daemon runs
	case "containerd": // one shim per pod, pause and workload below it
		for i := 0; i < 2; i++ {
			procs[400+i] = p(400+i, 1, "containerd-shim")
			procs[410+i] = p(410+i, 400+i, "pause")
			procs[420+i] = p(420+i, 400+i, "sh")
			procs[430+i] = p(430+i, 420+i, "httpd")
			cmd[400+i] = "containerd-shim-runc-v2 -namespace k8s.io -address /run/pbc-1/runtime/cri.sock"
		}
		procs[440] = p(440, 400, "runc")
	}
	return procs, cmd
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		shape        string
		want         [nGroups]int
		wantWorkload int
	}{
		{"peapod", [nGroups]int{gDaemon: 2, gHelpers: 2, gPauses: 2, gNode: 2}, 4},
		{"containerd", [nGroups]int{gDaemon: 1, gHelpers: 3, gPauses: 2, gNode: 2}, 4},
	} {
		t.Run(tc.shape, func(t *testing.T) {
			procs, cmd := fakeNode(tc.shape)
			n := classify(procs, 100, 200, "/run/pbc-1", func(pid int) []byte { return []byte(cmd[pid]) })
			if got := n.count(); got != tc.want {
				t.Errorf("counts %v, want %v (groups %v)", got, tc.want, n.groups)
			}
			if n.workload != tc.wantWorkload {
				t.Errorf("workload %d, want %d", n.workload, tc.wantWorkload)
			}
			if _, ok := n.groups[900]; ok {
				t.Errorf("another cluster's conmon counted")
			}
		})
	}
}

func TestCPUSince(t *testing.T) {
	procs, cmd := fakeNode("peapod")
	cl := func(procs map[int]procStat) nodeProcs {
		return classify(procs, 100, 200, "/run/pbc-1", func(pid int) []byte { return []byte(cmd[pid]) })
	}
	before := cl(procs)
	later := map[int]procStat{}
	for pid, p := range procs {
		p.ticks += 50 // 0.5 s each
		later[pid] = p
	}
	delete(later, 130)                                                                      // the CNI plugin exited
	later[140] = procStat{pid: 140, ppid: 100, comm: "peapod-pause", start: 140, ticks: 30} // a new pod's pause
	recycled := later[111]
	recycled.start, recycled.ticks = 7777, 20 // PID 111 now another process: all of it is new
	later[111] = recycled
	got := cl(later).cpuSince(before)
	want := [nGroups]float64{gDaemon: 0.5, gHelpers: 1, gPauses: 0.5 + 0.2 + 0.3, gNode: 1}
	for g := range nGroups {
		if d := got[g] - want[g]; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: %g s, want %g s", groupNames[g], got[g], want[g])
		}
	}
}

func TestParseRollup(t *testing.T) {
	text := strings.Join([]string{
		"563f9f8a3000-7ffec2b3e000 ---p 00000000 00:00 0                          [rollup]",
		"Rss:                1760 kB",
		"Pss:                 388 kB",
		"Pss_Dirty:           116 kB",
		"Pss_Anon:            116 kB",
	}, "\n")
	if got, want := parseRollup(text), (mem{rss: 1760 << 10, pss: 388 << 10}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
