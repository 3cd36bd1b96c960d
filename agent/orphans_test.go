package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// releasingVolumes is a Volumes that records the keep sets of
// ReleaseOrphans.
type releasingVolumes struct {
	mu    sync.Mutex
	keeps []map[types.UID]bool
}

func (v *releasingVolumes) SetupPod(context.Context, *v1.Pod, *Objects) (map[string][]*runtimeapi.Mount, error) {
	return map[string][]*runtimeapi.Mount{}, nil
}
func (v *releasingVolumes) TeardownPod(context.Context, *v1.Pod) error { return nil }
func (v *releasingVolumes) ReleaseOrphans(_ context.Context, keep map[types.UID]bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := map[types.UID]bool{}
	for uid := range keep {
		k[uid] = true
	}
	v.keeps = append(v.keeps, k)
	return nil
}

func (v *releasingVolumes) first() map[types.UID]bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.keeps) == 0 {
		return nil
	}
	return v.keeps[0]
}

// Once the manifests are read, the agent hands the volume manager every
// pod it keeps — the desired ones, and the ones with sandboxes it tears
// down itself — so the volumes of any other pod (one that never got a
// sandbox) are released after a restart.
func TestAgentReleasesOrphanedVolumesOnceSourcesAreRead(t *testing.T) {
	vols := &releasingVolumes{}
	e := newTestEnv(t, map[string]string{"web.yaml": simplePod}, func(e *testEnv) {
		e.vols = vols
		// The agent's own state of a pod that never got a sandbox.
		for _, uid := range []string{"never-started", "olduid"} {
			if err := os.MkdirAll(filepath.Join(e.state, "pods", uid), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, filepath.Join(e.state, "pods", "never-started"), "pod.json", `{"metadata":{"uid":"never-started"}}`)
		writeFile(t, filepath.Join(e.state, "pods", "olduid"), "pod.json", `{"metadata":{"name":"gone","namespace":"default","uid":"olduid"}}`)
		orphan := &v1.Pod{}
		orphan.Name, orphan.Namespace, orphan.UID = "gone", "default", "olduid"
		cfg, _ := makeSandboxConfig(orphan, 0, "/var/log/pods", dnsSettings{ResolvConf: "/nonexistent"}, nil)
		_, _ = e.rt.RunPodSandbox(context.Background(), cfg, "")
	})
	waitFor(t, "ReleaseOrphans", func() bool { return vols.first() != nil })
	keep := vols.first()
	web := e.pod("web")
	if web == nil {
		t.Fatal("pod web not running")
	}
	for _, tc := range []struct {
		uid  types.UID
		want bool
	}{
		{web.UID, true},          // desired: its volumes stay
		{"olduid", true},         // has a sandbox: removeOrphan tears it down
		{"never-started", false}, // anything else is released
	} {
		if keep[tc.uid] != tc.want {
			t.Errorf("keep[%s] = %v, want %v (keep %v)", tc.uid, keep[tc.uid], tc.want, keep)
		}
	}
	// The never-started pod's state dir is gone with its volumes; the
	// orphan's goes once removeOrphan is done with its pod.json; the
	// running pod's stays.
	gone := func(uid types.UID) bool {
		_, err := os.Stat(filepath.Join(e.state, "pods", string(uid)))
		return os.IsNotExist(err)
	}
	waitFor(t, "the never-started pod's state dir removed", func() bool { return gone("never-started") })
	waitFor(t, "the orphan's state dir removed", func() bool { return gone("olduid") })
	if gone(web.UID) {
		t.Error("the running pod's state dir was removed")
	}
}
