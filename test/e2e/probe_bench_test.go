package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// procCPU is the user+system CPU of pid, its own and that of its waited-for
// children (conmon and runc of each exec probe), in seconds.
func procCPU(t testing.TB, pid int) (own, children float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	tick := 100.0 // USER_HZ
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v / tick }
	// Fields after the comm: state is index 0, utime 11, stime 12, cutime 13, cstime 14.
	return num(11) + num(12), num(13) + num(14)
}

var probeCount = regexp.MustCompile(`^peapod_prober_probe_total\{[^}]*probe_type="Liveness"[^}]*\} (\d+)`)

func livenessProbes(t testing.TB, addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := probeCount.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			total += v
		}
	}
	return total
}

// BenchmarkExecLivenessProbes runs 100 agent pods, each with an exec
// liveness probe every second, and reports peapod's CPU per probe: its own
// CPU (the prober, the CRI server, the agent) and with its children (the
// conmon and runc processes each exec needs). Run it with
//
//	PEAPOD_INTEGRATION=1 go test ./test/e2e -run '^$' -bench ExecLivenessProbes -benchtime 1x
func BenchmarkExecLivenessProbes(b *testing.B) {
	if binDir == "" {
		b.Skip("needs root and PEAPOD_INTEGRATION=1")
	}
	for i := 0; i < b.N; i++ {
		runProbeBench(b, 100, 30*time.Second)
	}
}

func runProbeBench(b *testing.B, pods int, window time.Duration) {
	reg := startRegistry(b)
	d := newDaemon(b, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	for i := 0; i < pods; i++ {
		d.writeManifest(fmt.Sprintf("p%03d.yaml", i), fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: probe-%03d
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    livenessProbe:
      exec:
        command: ["true"]
      periodSeconds: 1
`, i))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n := 0
		for _, p := range d.agentPods().Items {
			if p.Status.Phase == v1.PodRunning {
				n++
			}
		}
		if n == pods {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d pods running after 5 minutes", n, pods)
		}
		time.Sleep(time.Second)
	}
	pid := d.cmd.Process.Pid
	addr := d.httpAddr()
	p0 := livenessProbes(b, addr)
	own0, ch0 := procCPU(b, pid)
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	p1 := livenessProbes(b, addr)
	own1, ch1 := procCPU(b, pid)
	probes := p1 - p0
	if probes == 0 {
		b.Fatal("no liveness probes counted")
	}
	b.ReportMetric(probes/window.Seconds(), "probes/s")
	b.ReportMetric((own1-own0)/probes*1000, "peapod-cpu-ms/probe")
	b.ReportMetric((own1-own0+ch1-ch0)/probes*1000, "with-children-cpu-ms/probe")
	b.Logf("%d pods, %.0f probes in %v: peapod %.2fs CPU, children %.2fs CPU", pods, probes, window, own1-own0, ch1-ch0)
}
