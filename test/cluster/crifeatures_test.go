package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"peapod/hack/cluster/harness"
	"peapod/hack/testenv"
)

// TestKubeletEventsAndCRIMetrics brings up a cluster of its own whose
// kubelet runs with EventedPLEG and PodAndContainerStatsFromCRI: the
// kubelet watches peapod's GetContainerEvents stream and serves peapod's
// CRI metrics on /metrics/cadvisor. In 1.37 EventedPLEG no longer slows
// the generic relist (still every second): an event is a hint, a
// CONTAINER_STOPPED event makes the kubelet relist that one pod at once
// (pleg/evented.go, PLEGOnDemandRelist), so what the test can see of the
// stream is the kubelet's own metrics of it. Then, with 1.37's defaults, an image
// volume and a checkpoint request through the kubelet's API.
func TestKubeletEventsAndCRIMetrics(t *testing.T) {
	testenv.Integration(t)
	repo := repoRoot()
	out, err := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), "control-plane").Output()
	if err != nil {
		t.Fatalf("hack/cluster/build.sh: %v", err)
	}
	dir, err := os.MkdirTemp("", "peapod-cluster-gates.")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := harness.Up(ctx, harness.Options{
		Dir: dir, Repo: repo, BinDir: strings.TrimSpace(string(out)), Log: os.Stderr, NodeName: "peapod-gates",
		KubeletFeatureGates: "EventedPLEG=true,PLEGOnDemandRelist=true,PodAndContainerStatsFromCRI=true",
	})
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
	})
	k := &kc{t: t, c: c}
	k.eventually(60*time.Second, "default service account", func() (bool, string) {
		out, err := k.try("get", "serviceaccount", "default", "-o", "name")
		return err == nil, out
	})

	// A container that exits after 5 s: peapod's CONTAINER_STOPPED event
	// reaches the kubelet, which relists that pod.
	k.run("run", "exits", "--image="+busybox, "--restart=Never", "--command", "--", "sh", "-c", "sleep 5; exit 7")
	k.waitPodPhase("exits", "Running", 90*time.Second)
	running := time.Now()
	k.waitPodPhase("exits", "Failed", 60*time.Second)
	took := time.Since(running)
	t.Logf("exit 7 reached the pod's status %s after it was Running (the container sleeps 5 s)", took.Round(100*time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("exit seen %s after Running", took.Round(time.Second))
	}
	if code := k.jsonpath("pod/exits", "{.status.containerStatuses[0].state.terminated.exitCode}"); code != "7" {
		t.Errorf("exit code %q, want 7", code)
	}

	metrics := k.run("get", "--raw", "/api/v1/nodes/"+c.NodeName+"/proxy/metrics")
	t.Logf("kubelet_evented_pleg_connection_success_count %v, error_count %v", metricValue(metrics, "kubelet_evented_pleg_connection_success_count"), metricValue(metrics, "kubelet_evented_pleg_connection_error_count"))
	if n := metricValue(metrics, "kubelet_evented_pleg_connection_success_count"); n < 1 {
		t.Errorf("kubelet_evented_pleg_connection_success_count = %v: the kubelet never connected to the event stream", n)
	}
	if n := metricValue(metrics, "kubelet_evented_pleg_connection_error_count"); n > 0 {
		t.Errorf("kubelet_evented_pleg_connection_error_count = %v", n)
	}
	// Every event the kubelet takes from the stream is timed (its
	// created_at against the kubelet's clock); the container's stop made
	// the kubelet relist its pod alone.
	events, relists := metricValue(metrics, "kubelet_evented_pleg_connection_latency_seconds_count"), metricValue(metrics, "kubelet_pleg_pod_relist_duration_seconds_count")
	t.Logf("events taken from peapod's stream %v, single-pod relists %v", events, relists)
	if events < 1 {
		t.Errorf("kubelet_evented_pleg_connection_latency_seconds_count = %v: no event of peapod's reached the kubelet", events)
	}
	if relists < 1 {
		t.Errorf("kubelet_pleg_pod_relist_duration_seconds_count = %v: the container's stop event made no pod relist", relists)
	}

	// /metrics/cadvisor comes from ListPodSandboxMetrics: a running pod's
	// container series, labelled as the kubelet labels them.
	k.run("run", "steady", "--image="+busybox, "--restart=Never", "--command", "--", "sleep", "600")
	k.waitPodPhase("steady", "Running", 90*time.Second)
	k.eventually(60*time.Second, "steady's series on /metrics/cadvisor", func() (bool, string) {
		out, err := k.try("get", "--raw", "/api/v1/nodes/"+c.NodeName+"/proxy/metrics/cadvisor")
		if err != nil {
			return false, err.Error()
		}
		re := regexp.MustCompile(`(?m)^container_memory_working_set_bytes\{[^}]*container="steady"[^}]*pod="steady"[^}]*\} [1-9]`)
		return re.MatchString(out), fmt.Sprintf("%.600s", out)
	})

	// ImageVolume (on by default in 1.37): an image's rootfs as a
	// read-only volume, through Mount.image.
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: imgvol}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %[1]s
    command: [sleep, "600"]
    volumeMounts: [{name: iv, mountPath: /iv}]
  volumes:
  - name: iv
    image: {reference: "%[1]s", pullPolicy: IfNotPresent}
`, busybox))
	k.waitPodPhase("imgvol", "Running", 90*time.Second)
	if out, err := k.try("exec", "imgvol", "--", "/iv/bin/busybox", "echo", "from the image volume"); err != nil || !strings.Contains(out, "from the image volume") {
		t.Errorf("running the image volume's busybox: %q, %v", out, err)
	}
	if out, err := k.try("exec", "imgvol", "--", "touch", "/iv/x"); err == nil || !strings.Contains(err.Error(), "Read-only file system") {
		t.Errorf("write into the image volume: %q, %v; want Read-only file system", out, err)
	}

	// ContainerCheckpoint (on by default): the kubelet's /checkpoint
	// endpoint reaches peapod's CheckpointContainer, which answers why
	// CRIU cannot work here (criu check fails on this kernel) rather than a
	// fake archive; the kubelet passes that reason on.
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer ccancel()
	cout, cerr := k.tryCtx(cctx, []byte{}, "create", "--raw", "/api/v1/nodes/"+c.NodeName+"/proxy/checkpoint/default/steady/steady", "-f", "-")
	t.Logf("checkpoint through the kubelet: %q, %v", cout, cerr)
	if cerr == nil || !strings.Contains(cerr.Error(), "criu") {
		t.Errorf("checkpoint through the kubelet: %q, %v: want the refusal with criu's reason", cout, cerr)
	}
}

// metricValue sums the samples of a metric family in Prometheus text; -1
// when it is absent.
func metricValue(text, name string) float64 {
	sum, found := 0.0, false
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name) || strings.HasPrefix(l, "#") {
			continue
		}
		rest := l[len(name):]
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}
