package sandbox

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/oci"
	"peapod/store"
)

// recordingRuntime is an OCIRuntime that only records the calls made to it
// and answers State from a fixed status.
type recordingRuntime struct {
	mu     sync.Mutex
	calls  []string
	status string
}

func (r *recordingRuntime) record(call string) {
	r.mu.Lock()
	r.calls = append(r.calls, call)
	r.mu.Unlock()
}

func (r *recordingRuntime) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recordingRuntime) Check(context.Context) error { return nil }
func (r *recordingRuntime) Create(_ context.Context, o oci.CreateOptions) (int, error) {
	r.record("create " + o.ID)
	return 0, nil
}
func (r *recordingRuntime) Start(_ context.Context, id string) error {
	r.record("start " + id)
	return nil
}
func (r *recordingRuntime) Kill(_ context.Context, id string, _ syscall.Signal) error {
	r.record("kill " + id)
	return nil
}
func (r *recordingRuntime) Stop(_ context.Context, id string, _ time.Duration, _ syscall.Signal) error {
	r.record("stop " + id)
	return nil
}
func (r *recordingRuntime) Delete(_ context.Context, id string) error {
	r.record("delete " + id)
	return nil
}
func (r *recordingRuntime) State(_ context.Context, id string) (*oci.State, error) {
	r.record("state " + id)
	return &oci.State{Status: r.status}, nil
}
func (r *recordingRuntime) ExitRecorded(id string) (*oci.State, bool, error) {
	r.record("exit-recorded " + id)
	return nil, false, nil
}
func (r *recordingRuntime) Watch(id string) error { r.record("watch " + id); return nil }
func (r *recordingRuntime) ExecSync(context.Context, string, []string, time.Duration, int) ([]byte, []byte, int32, error) {
	return nil, nil, 0, nil
}
func (r *recordingRuntime) UpdateResources(context.Context, string, *specs.LinuxResources) error {
	return nil
}
func (r *recordingRuntime) ReopenLog(context.Context, string) error { return nil }
func (r *recordingRuntime) Exec(context.Context, string, []string, bool, io.Reader, io.Writer, io.Writer, <-chan oci.Size) (int32, error) {
	return 0, nil
}
func (r *recordingRuntime) Attach(context.Context, string, io.Reader, io.Writer, io.Writer, <-chan oci.Size) error {
	return nil
}

// TestLegacyPauseUpgrade: a sandbox record written by a peapod that ran the
// pause under the OCI runtime (a PausePid, no PauseStartTime) is adopted
// through the runtime after an upgrade, and stopped and deleted through it.
func TestLegacyPauseUpgrade(t *testing.T) {
	for _, tc := range []struct {
		status    string
		wantState runtimeapi.PodSandboxState
	}{
		{"running", runtimeapi.PodSandboxState_SANDBOX_READY},
		{"stopped", runtimeapi.PodSandboxState_SANDBOX_NOTREADY},
	} {
		t.Run(tc.status, func(t *testing.T) {
			dir := t.TempDir()
			st, err := store.Open(filepath.Join(dir, "peapod.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			cfg, _ := proto.Marshal(&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "old", Namespace: "ns", Uid: "u"}})
			const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			rec := SandboxRecord{
				ID: id, Name: "old_ns_u_0", ConfigProto: cfg, RuntimeHandler: "runc",
				State: runtimeapi.PodSandboxState_SANDBOX_READY, CgroupParent: "/peapod-test-legacy/podu",
				PausePid: 1 << 30, // a runtime-run pause: no start time recorded
			}
			if err := st.Put(store.BucketSandboxes, id, &rec); err != nil {
				t.Fatal(err)
			}
			rt := &recordingRuntime{status: tc.status}
			m, err := New(context.Background(), Options{
				Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "run"), Store: st,
				Runtimes: map[string]OCIRuntime{"runc": rt}, DefaultRuntime: "runc",
			})
			if err != nil {
				t.Fatal(err)
			}
			sb, err := m.Sandbox(id)
			if err != nil {
				t.Fatal(err)
			}
			if got := sb.Record().State; got != tc.wantState {
				t.Errorf("state after restore = %v, want %v", got, tc.wantState)
			}
			want := []string{"state " + id}
			if tc.status == "running" {
				want = append(want, "watch "+id)
			}
			if got := rt.Calls(); !slices.Equal(got, want) {
				t.Errorf("restore calls = %q, want %q", got, want)
			}
			if err := m.RemoveSandbox(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			want = append(want, "stop "+id, "delete "+id)
			if got := rt.Calls(); !slices.Equal(got, want) {
				t.Errorf("calls = %q, want %q", got, want)
			}
			if _, err := m.Sandbox(id); err == nil {
				t.Error("sandbox still known after remove")
			}
			var left SandboxRecord
			if err := st.Get(store.BucketSandboxes, id, &left); err == nil {
				t.Errorf("record still stored: %+v", left)
			}
		})
	}
}
