package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func TestDeadContainersToRemove(t *testing.T) {
	c := func(name string, attempt uint32, state runtimeapi.ContainerState) *ContainerObserved {
		return &ContainerObserved{ID: fmt.Sprintf("%s-%d", name, attempt), Name: name, Attempt: attempt, State: state}
	}
	created := runtimeapi.ContainerState_CONTAINER_CREATED
	unknown := runtimeapi.ContainerState_CONTAINER_UNKNOWN
	for _, tc := range []struct {
		name  string
		cs    []*ContainerObserved // newest first per name
		limit int
		want  []string
	}{
		{"running + one dead: kept", []*ContainerObserved{c("app", 1, running), c("app", 0, exited)}, 1, nil},
		{"running does not count", []*ContainerObserved{c("app", 3, running), c("app", 2, exited), c("app", 1, exited), c("app", 0, exited)}, 1, []string{"app-1", "app-0"}},
		{"newest dead is the one kept", []*ContainerObserved{c("app", 2, exited), c("app", 1, exited), c("app", 0, exited)}, 1, []string{"app-1", "app-0"}},
		{"limit 2", []*ContainerObserved{c("app", 3, running), c("app", 2, exited), c("app", 1, exited), c("app", 0, exited)}, 2, []string{"app-0"}},
		{"negative: keep all", []*ContainerObserved{c("app", 3, running), c("app", 2, exited), c("app", 1, exited), c("app", 0, exited)}, -1, nil},
		{"0 still keeps the newest attempt", []*ContainerObserved{c("app", 1, exited), c("app", 0, exited)}, 0, []string{"app-0"}},
		{"0 with a running one", []*ContainerObserved{c("app", 1, running), c("app", 0, exited)}, 0, []string{"app-0"}},
		{"per name", []*ContainerObserved{
			c("app", 2, running), c("app", 1, exited), c("app", 0, exited),
			c("init", 1, exited), c("init", 0, exited),
			c("side", 0, running),
		}, 1, []string{"app-0", "init-0"}},
		{"created (failed start) counts as dead", []*ContainerObserved{c("app", 2, running), c("app", 1, created), c("app", 0, exited)}, 1, []string{"app-0"}},
		{"unknown is left alone", []*ContainerObserved{c("app", 2, running), c("app", 1, exited), c("app", 0, unknown)}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rm := deadContainersToRemove(tc.cs, tc.limit)
			var got []string
			for _, x := range tc.cs {
				if rm[x] {
					got = append(got, x.ID)
				}
			}
			if len(rm) != len(got) {
				t.Fatalf("removals outside the input: %v", rm)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("removed %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAgentContainerGC crash-loops a container against the fake runtime
// (back-off cut to a millisecond) and checks what the kubelet's container
// GC guarantees: one dead container kept per name, its log and
// termination message file gone with each removed one, restartCount the
// attempt count and lastState the last exit.
func TestAgentContainerGC(t *testing.T) {
	pod := strings.Replace(simplePod, "  initContainers:\n  - name: init\n    image: busybox:1.36\n", "", 1)
	e := &testEnv{rt: critest.NewFakeRuntimeService(), img: critest.NewFakeImageService(), dir: t.TempDir(), reg: prometheus.NewRegistry()}
	e.img.SetFakeImages([]string{"busybox:1.36"})
	writeFile(t, e.dir, "web.yaml", pod)
	state := t.TempDir()
	logs := filepath.Join(state, "logs")
	a, err := New(Options{
		ManifestsDir: e.dir, StateDir: state, PodLogsDir: logs, NodeName: "node1", NodeIP: "10.0.0.1",
		Runtime: e.rt, Images: e.img, Registerer: e.reg, SyncPeriod: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.o.MaxPerPodContainer != 1 {
		t.Fatalf("MaxPerPodContainer default %d, want 1", a.o.MaxPerPodContainer)
	}
	a.backOff = newBackOff(a.clock, time.Millisecond, time.Millisecond)
	e.a = a
	e.start()
	t.Cleanup(e.stop)

	// attempts are the CRI's containers named app: attempt → state.
	attempts := func() map[uint32]runtimeapi.ContainerState {
		e.rt.Lock()
		defer e.rt.Unlock()
		out := map[uint32]runtimeapi.ContainerState{}
		for _, c := range e.rt.Containers {
			if c.Metadata.Name == "app" {
				out[c.Metadata.Attempt] = c.State
			}
		}
		return out
	}
	var logDir, termDir string
	// The fake runtime writes no logs: write each attempt's as conmon would.
	writeLog := func(attempt uint32) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(logDir, fmt.Sprintf("%d.log", attempt)), []byte("2026-01-01T00:00:00Z stdout F hi\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	waitFor(t, "app running", func() bool { return containerRunning(e.pod("web"), "app") })
	p := e.pod("web")
	logDir = filepath.Join(podLogDir(logs, p), "app")
	termDir = filepath.Join(a.podDir(p.UID), "containers", "app")
	writeLog(0)
	for n := uint32(1); n <= 4; n++ {
		e.setExited(t, "app", n-1, int32(n))
		waitFor(t, fmt.Sprintf("restart %d", n), func() bool {
			p := e.pod("web")
			return containerRunning(p, "app") && p.Status.ContainerStatuses[0].RestartCount == int32(n) && len(attempts()) <= 2
		})
		writeLog(n)
		cs := e.pod("web").Status.ContainerStatuses[0]
		if lt := cs.LastTerminationState.Terminated; lt == nil || lt.ExitCode != int32(n) {
			t.Errorf("restart %d: lastState %+v, want exit code %d", n, cs.LastTerminationState, n)
		}
		got := attempts()
		want := map[uint32]runtimeapi.ContainerState{n: running, n - 1: exited}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("restart %d: containers %v, want %v", n, got, want)
		}
		for a := uint32(0); a+1 < n; a++ {
			if exists(filepath.Join(logDir, fmt.Sprintf("%d.log", a))) || exists(filepath.Join(termDir, fmt.Sprint(a))) {
				t.Errorf("restart %d: the log or termination message file of removed attempt %d is still there", n, a)
			}
		}
		for _, a := range []uint32{n - 1, n} {
			if !exists(filepath.Join(logDir, fmt.Sprintf("%d.log", a))) || !exists(filepath.Join(termDir, fmt.Sprint(a))) {
				t.Errorf("restart %d: the log or termination message file of kept attempt %d is gone", n, a)
			}
		}
	}
	if p := e.pod("web"); p.Status.Phase != v1.PodRunning {
		t.Errorf("phase %s", p.Status.Phase)
	}
}
