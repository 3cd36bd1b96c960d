package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"peapod/hack/cluster/harness"
	"peapod/internal/procfs"
)

// Node resources of TestAgentNode's agent: a node made small by
// system_reserved (kubepods/ limited to 1.5Gi, in the cluster's own cgroup
// root, not the machine), the allocatable memory signal evicting at 300Mi
// available, read every second, pressure held 20 s (two node status
// rounds) after it ends.
const (
	agentKubepodsMemoryMi = 1536
	agentEvictionHardMi   = 300
)

func agentResourcesConfig(t *testing.T) string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	total := procfs.ParseMeminfo(b)["MemTotal"]
	reserved := int64(total>>20) - agentKubepodsMemoryMi
	return fmt.Sprintf("system_reserved = { memory = \"%dMi\" }\n"+
		"eviction_hard = { \"memory.available\" = \"%dMi\" }\n"+
		"eviction_monitoring_period = \"1s\"\neviction_pressure_transition_period = \"20s\"\n",
		reserved, agentEvictionHardMi)
}

const evictionGuaranteedPod = `apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %s
    command: [sleep, "3600"]
    resources: {limits: {cpu: 50m, memory: 32Mi}}
`

// The hog fills a memory-backed emptyDir (its pages are charged to its
// cgroup, and only unmounting frees them) 16Mi at a time up to 1280Mi:
// past the eviction point (1536 − 300 = 1236Mi of pods), short of the
// 1536Mi limit at which the kernel would OOM-kill instead.
const evictionHogPod = `apiVersion: v1
kind: Pod
metadata: {name: memhog}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{name: mem, emptyDir: {medium: Memory}}]
  containers:
  - name: main
    image: %s
    command: [sh, -c, 'i=0; while [ $i -lt 80 ]; do dd if=/dev/zero of=/mem/f$i bs=1M count=16 2>/dev/null; i=$((i+1)); sleep 0.1; done; sleep 3600']
    volumeMounts: [{name: mem, mountPath: /mem}]
`

// (s) Node allocatable and eviction: allocatable is capacity − reserved −
// the hard threshold; a BestEffort pod that eats the node's memory is
// evicted (Failed, reason Evicted, a message naming memory, the
// DisruptionTarget condition) while a Guaranteed pod survives untouched;
// MemoryPressure goes True, then back to False once the evicted pod's
// memory is released.
func testAgentEviction(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	var node corev1.Node
	k.getJSON(&node, "node", c.NodeName)
	capMem, alloc := node.Status.Capacity[corev1.ResourceMemory], node.Status.Allocatable[corev1.ResourceMemory]
	wantAlloc := int64(agentKubepodsMemoryMi-agentEvictionHardMi) << 20
	// system_reserved is whole Mi: MemTotal's odd KiB stay allocatable.
	if d := alloc.Value() - wantAlloc; d < 0 || d >= 1<<20 {
		t.Errorf("allocatable memory %s (capacity %s), want %dMi: capacity − system_reserved − eviction_hard", alloc.String(), capMem.String(), wantAlloc>>20)
	}

	k.apply(fmt.Sprintf(evictionGuaranteedPod, busybox))
	k.waitReady("guaranteed", 90*time.Second)
	k.apply(fmt.Sprintf(evictionHogPod, busybox))

	sawPressure := false
	pressure := func() string {
		out, _ := k.try("get", "node", c.NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="MemoryPressure")].status}`)
		return out
	}
	k.eventually(120*time.Second, "memhog evicted", func() (bool, string) {
		if pressure() == "True" {
			sawPressure = true
		}
		var p corev1.Pod
		out, err := k.try("get", "pod", "memhog", "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "Evicted", fmt.Sprintf("phase %s reason %q message %q", p.Status.Phase, p.Status.Reason, p.Status.Message)
	})
	var hog corev1.Pod
	k.getJSON(&hog, "pod", "memhog")
	if !strings.Contains(hog.Status.Message, "The node was low on resource: memory") {
		t.Errorf("evicted pod's message %q does not name memory", hog.Status.Message)
	}
	disruption := false
	for _, cond := range hog.Status.Conditions {
		disruption = disruption || cond.Type == corev1.DisruptionTarget && cond.Status == corev1.ConditionTrue && cond.Reason == "TerminationByKubelet"
	}
	if !disruption {
		t.Errorf("evicted pod has no DisruptionTarget condition: %+v", hog.Status.Conditions)
	}
	if !sawPressure {
		k.eventually(30*time.Second, "MemoryPressure True", func() (bool, string) { p := pressure(); return p == "True", p })
	}
	if ev := k.run("get", "events", "--field-selector", "involvedObject.name=memhog,reason=Evicted", "-o", "name"); strings.TrimSpace(ev) == "" {
		t.Errorf("no Evicted event for memhog")
	}

	k.eventually(90*time.Second, "MemoryPressure back to False", func() (bool, string) { p := pressure(); return p == "False", p })
	var g corev1.Pod
	k.getJSON(&g, "pod", "guaranteed")
	if g.Status.Phase != corev1.PodRunning || len(g.Status.ContainerStatuses) != 1 || g.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the Guaranteed pod did not survive untouched: phase %s, %+v", g.Status.Phase, g.Status.ContainerStatuses)
	}
}
