package cluster

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestUserNamespacePod: a hostUsers: false pod under the upstream kubelet,
// on peapod's runc-userns handler through a RuntimeClass. The kubelet picks
// the pod's id range and passes it in userns_options; inside, the pod is
// root with that range mapped; on the host its process runs as the
// range's first id, not as root.
func TestUserNamespacePod(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/var/cache/peapod/runc-v1.5.3/bin/runc"); err != nil {
		t.Skip("runc v1.5.3 not built (make runc): no handler for user namespaces")
	}
	k := newNS(t)
	// RuntimeClasses are cluster-wide: this one is the test's.
	rc := k.ns + "-userns"
	k.apply(fmt.Sprintf("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: %s}\nhandler: runc-userns\n", rc))
	t.Cleanup(func() { k.try("delete", "runtimeclass", rc, "--wait=false") })
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: un}
spec:
  runtimeClassName: %s
  hostUsers: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sleep, "3600"]
`, rc, busybox))
	k.waitPodPhase("un", "Running", 90*time.Second)
	if id := strings.TrimSpace(k.run("exec", "un", "--", "id", "-u")); id != "0" {
		t.Errorf("id -u in the pod: %q, want 0", id)
	}
	m := strings.Fields(k.run("exec", "un", "--", "cat", "/proc/self/uid_map"))
	if len(m) != 3 || m[0] != "0" || m[1] == "0" || m[2] != "65536" {
		t.Fatalf("uid_map in the pod: %v, want 0 <host id> 65536", m)
	}
	// The container's process on the host: its uid is the mapped one.
	hostUID := m[1]
	found := false
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		st, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil || !strings.HasPrefix(string(st), "Name:\tsleep\n") {
			continue
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] == hostUID {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no sleep process on the host runs as uid %s (the pod's root)", hostUID)
	}
}
