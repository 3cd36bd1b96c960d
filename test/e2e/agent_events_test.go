package e2e

import (
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
)

// criCalls is how many times method was called on the daemon, from its
// peapod_cri_request_duration_seconds histogram.
func (d *daemon) criCalls(method string) float64 {
	var n float64
	for _, s := range find(parseExposition(d.metricsText()), "peapod_cri_request_duration_seconds_count", map[string]string{"method": method}) {
		n += s.value
	}
	return n
}

// TestAgentUsesContainerEvents: with peapod's GetContainerEvents stream up,
// the agent stops relisting every second (its workers resync every 10 s
// as a safety net) and still sees a container exit at once, because the
// event wakes the pod's worker, as the kubelet's EventedPLEG.
func TestAgentUsesContainerEvents(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	d.writeManifest("blip.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: blip
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "sleep 8; exit 3"]
`)
	d.waitPod("blip", 60*time.Second, "Running", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	// Idle: a worker relisting every second would list 5 times in 5 s.
	time.Sleep(2 * time.Second) // the stream counts as up 2 s after it opened
	before := d.criCalls("ListContainers")
	time.Sleep(5 * time.Second)
	lists := d.criCalls("ListContainers") - before
	if lists > 2 {
		t.Errorf("the agent listed containers %v times in 5 idle seconds; with events it resyncs every 10 s", lists)
	}
	// The exit is seen well before the next 10 s resync.
	p := d.waitPod("blip", 30*time.Second, "Failed", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodFailed })
	seen := time.Now()
	cs := containerStatus(p, "main")
	if cs == nil || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 {
		t.Fatalf("container status %+v", cs)
	}
	if lag := seen.Sub(cs.State.Terminated.FinishedAt.Time); lag > 4*time.Second {
		t.Errorf("the exit was seen %v after it happened; an event should have woken the worker", lag)
	}
}
