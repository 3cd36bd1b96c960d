package sandbox

import (
	"errors"
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/lxcfs"
)

// lxcfsFor decides what a new container gets from the mode, the pod's
// annotation and lxcfs's last known state.
func TestLXCFSFor(t *testing.T) {
	up := lxcfs.State{Up: true, Dev: 7, Paths: []string{"/proc/meminfo", "/proc/uptime"}}
	down := lxcfs.State{Reason: lxcfs.ReasonDisconnected, Message: "lxcfs at /l is gone"}
	tests := []struct {
		name      string
		mode      string
		state     lxcfs.State
		ann       map[string]string
		wantDir   string
		wantPaths []string
		wantErr   string
	}{
		{name: "off", mode: "off", state: up},
		{name: "auto, up", mode: "auto", state: up, wantDir: "/l", wantPaths: up.Paths},
		{name: "auto, down: own /proc", mode: "auto", state: down},
		{name: "on, up", mode: "on", state: up, wantDir: "/l", wantPaths: up.Paths},
		{name: "on, down: refused", mode: "on", state: down, wantErr: `containers.lxcfs = "on" and lxcfs is down (LXCFSDisconnected`},
		{name: "on, down, pod opts out", mode: "on", state: down, ann: map[string]string{lxcfs.PodAnnotation: "off"}},
		{name: "auto, up, pod opts out", mode: "auto", state: up, ann: map[string]string{lxcfs.PodAnnotation: "off"}},
		{name: "other annotation values change nothing", mode: "auto", state: up, ann: map[string]string{lxcfs.PodAnnotation: "yes"}, wantDir: "/l", wantPaths: up.Paths},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Manager{}
			if tt.mode != "off" {
				m.lxcfs = &lxcfsManager{o: LXCFSOptions{Mode: tt.mode, Dir: "/l"}, state: tt.state, gen: 3,
					synced: map[string]uint64{}, attached: map[string]bool{}, failedGen: map[string]uint64{}}
			}
			sb := &Sandbox{rec: SandboxRecord{ID: "sb"}, config: &runtimeapi.PodSandboxConfig{Annotations: tt.ann}}
			dir, paths, gen, err := m.lxcfsFor(sb)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrFailedPrecondion) {
					t.Fatalf("err = %v, want FailedPrecondition with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || dir != tt.wantDir || !slices.Equal(paths, tt.wantPaths) {
				t.Fatalf("lxcfsFor = %q %v %v, want %q %v", dir, paths, err, tt.wantDir, tt.wantPaths)
			}
			// A container that wants lxcfs is recorded at the current
			// generation, so the reconciler leaves it be.
			if wants := m.lxcfs != nil && tt.ann[lxcfs.PodAnnotation] != "off"; wants != (gen == 3) {
				t.Fatalf("generation %d (wants lxcfs: %v)", gen, wants)
			}
			m.lxcfsCreated("c1", gen, dir != "")
			if st := m.LXCFSStatus(); m.lxcfs != nil && gen != 0 && (st.Attached+st.Detached != 1 || (st.Attached == 1) != (dir != "")) {
				t.Fatalf("status after create = %+v", st)
			}
		})
	}
}

// observe starts a new generation only when what containers should get
// changes.
func TestLXCFSGenerations(t *testing.T) {
	l := &lxcfsManager{o: LXCFSOptions{Mode: "auto", Dir: "/l"}}
	a := lxcfs.State{Up: true, Dev: 1, Paths: lxcfs.Paths}
	steps := []struct {
		s       lxcfs.State
		wantGen uint64
	}{
		{a, 1},
		{a, 1},
		{lxcfs.State{Reason: lxcfs.ReasonDisconnected, Message: "gone"}, 2},
		{lxcfs.State{Reason: lxcfs.ReasonDisconnected, Message: "gone"}, 2},
		{lxcfs.State{Reason: lxcfs.ReasonNotMounted, Message: "absent"}, 3},
		{lxcfs.State{Up: true, Dev: 2, Paths: lxcfs.Paths}, 4},
		{lxcfs.State{Up: true, Dev: 2, Paths: lxcfs.Paths[:3]}, 5},
	}
	for i, st := range steps {
		if _, gen := l.observe(st.s); gen != st.wantGen {
			t.Fatalf("step %d: generation %d, want %d", i, gen, st.wantGen)
		}
	}
}
