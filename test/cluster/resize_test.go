package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestInPlaceResize: `kubectl patch --subresource resize` changes a running
// pod's CPU and memory without a restart; the kubelet reads the resources
// in force back from peapod's ContainerStatus and reports them.
func TestInPlaceResize(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: rs}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
    resizePolicy:
    - {resourceName: cpu, restartPolicy: NotRequired}
    - {resourceName: memory, restartPolicy: NotRequired}
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 100m, memory: 32Mi}
`, busybox))
	k.waitPodPhase("rs", "Running", 90*time.Second)
	id := k.jsonpath("pod/rs", "{.status.containerStatuses[0].containerID}")
	k.run("patch", "pod", "rs", "--subresource", "resize", "--patch",
		`{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"200m","memory":"64Mi"},"limits":{"cpu":"200m","memory":"64Mi"}}}]}}`)
	k.eventually(90*time.Second, "resize applied", func() (bool, string) {
		res := k.jsonpath("pod/rs", "{.status.containerStatuses[0].resources.limits.cpu} {.status.containerStatuses[0].resources.limits.memory}")
		conds := k.jsonpath("pod/rs", "{.status.conditions[*].type}")
		return res == "200m 64Mi" && !strings.Contains(conds, "PodResize"), res + " | " + conds
	})
	if got := k.jsonpath("pod/rs", "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}"); got != id+" 0" {
		t.Errorf("container after resize: %q, want %q (no restart)", got, id+" 0")
	}
	// The cgroup inside says so too (cgroup v1: the container's own hierarchy).
	if out := k.run("exec", "rs", "--", "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"); strings.TrimSpace(out) != "67108864" {
		t.Errorf("memory.limit_in_bytes in the container: %q", out)
	}
}
