package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"peapod/hack/cluster/harness"
)

// (RuntimeClass) peapod-agent as a node resolves runtimeClassName as the
// kubelet does: through the API server's RuntimeClass to its handler. A
// `hostUsers: false` pod whose RuntimeClass (named unlike any handler)
// says runc-userns runs in a user namespace of its own, with a block of
// 65536 ids the agent picked; a static pod whose RuntimeClass does not
// exist gets no sandbox and the kubelet's FailedCreatePodSandBox event
// saying so (the API server refuses such an API pod itself).
func testAgentRuntimeClass(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	// The static pod first: its events come while the other pod starts.
	manifest := filepath.Join(c.ManifestsDir, k.ns+"-rc.yaml")
	missing := k.ns + "-missing"
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: no-class, namespace: %s}
spec:
  runtimeClassName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
`, k.ns, missing, busybox)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })

	userns := true
	if _, err := os.Stat("/var/cache/peapod/runc-v1.5.3/bin/runc"); err != nil {
		userns = false
		t.Log("runc v1.5.3 not built (make runc): the RuntimeClass pod runs on runc, without a user namespace")
	}
	rc, handler, hostUsers := k.ns+"-class", "runc", ""
	if userns {
		handler, hostUsers = "runc-userns", "  hostUsers: false\n"
	}
	k.apply(fmt.Sprintf("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: %s}\nhandler: %s\n", rc, handler))
	t.Cleanup(func() { k.try("delete", "runtimeclass", rc, "--wait=false") })
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: classy}
spec:
  runtimeClassName: %s
%s  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
`, rc, hostUsers, busybox))
	k.waitPodPhase("classy", "Running", 90*time.Second)
	if userns {
		m := strings.Fields(k.run("exec", "classy", "--", "cat", "/proc/self/uid_map"))
		host, _ := strconv.ParseUint(m[min(1, len(m)-1)], 10, 32)
		if len(m) != 3 || m[0] != "0" || host < 65536 || host%65536 != 0 || m[2] != "65536" {
			t.Errorf("uid_map in the pod: %v, want 0 <a multiple of 65536> 65536", m)
		}
		t.Logf("uid_map in the pod: %v", m)
	}

	static := "no-class-" + c.NodeName
	k.eventually(60*time.Second, "FailedCreatePodSandBox for the missing RuntimeClass", func() (bool, string) {
		evs, err := k.podEvents(static)
		if err != nil {
			return false, err.Error()
		}
		by, all := eventsByReason(evs)
		for _, e := range by["FailedCreatePodSandBox"] {
			if strings.Contains(e.Message, fmt.Sprintf("RuntimeClass %q not found", missing)) && e.Source.Component == "kubelet" {
				t.Logf("event: %s %s: %s", e.Type, e.Reason, e.Message)
				return true, ""
			}
		}
		return false, all
	})
}
