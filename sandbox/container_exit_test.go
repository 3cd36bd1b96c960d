package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/oci"
	"peapod/store"
)

// exitedRuntime is an OCI runtime whose containers have all exited with
// code 3; only what recording an exit calls is there.
type exitedRuntime struct{ OCIRuntime }

func (exitedRuntime) ExitRecorded(string) (*oci.State, bool, error) {
	return &oci.State{Status: "stopped", ExitCode: 3, FinishedAt: time.Now()}, true, nil
}

func (r exitedRuntime) State(context.Context, string) (*oci.State, error) {
	st, _, err := r.ExitRecorded("")
	return st, err
}

func (exitedRuntime) Delete(context.Context, string) error { return nil }

// TestExitRecordedOnceSpaceIsBack: a container and a pod sandbox's pause
// exit while the store's disk is full, so their exits cannot be written.
// They stay RUNNING and READY (memory and store agree), and the exits are
// recorded by themselves once there is space again: the monitor reports an
// exit only once, and it used to be dropped, leaving the dead container
// RUNNING (the pod READY) until peapod restarted.
func TestExitRecordedOnceSpaceIsBack(t *testing.T) {
	if os.Getenv("PEAPOD_INTEGRATION") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and PEAPOD_INTEGRATION=1 (mounts a tmpfs)")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	st, err := store.Open(filepath.Join(dir, "peapod.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	defer func(d time.Duration) { exitRetry = d }(exitRetry)
	exitRetry = 100 * time.Millisecond
	m := &Manager{
		o:          Options{Root: dir, State: dir, Store: st, Runtimes: map[string]OCIRuntime{"runc": exitedRuntime{}}, DefaultRuntime: "runc"},
		sandboxes:  map[string]*Sandbox{},
		containers: map[string]*Container{},
		names:      map[string]string{},
	}
	// 64 KiB of record each: their next versions need pages the database
	// file does not have yet, so writing them needs space.
	pad := map[string]string{"pad": strings.Repeat("x", 64<<10)}
	cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Labels: pad}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{rec: ContainerRecord{ID: "c1", SandboxID: "gone", State: runtimeapi.ContainerState_CONTAINER_RUNNING, ConfigProto: raw}, config: cfg}
	if err := st.Put(store.BucketContainers, "c1", &c.rec); err != nil {
		t.Fatal(err)
	}
	m.containers["c1"] = c
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p"}, Labels: pad}
	if raw, err = proto.Marshal(sbCfg); err != nil {
		t.Fatal(err)
	}
	sb := &Sandbox{rec: SandboxRecord{ID: "s1", State: runtimeapi.PodSandboxState_SANDBOX_READY, ConfigProto: raw}, config: sbCfg}
	if err := st.Put(store.BucketSandboxes, "s1", &sb.rec); err != nil {
		t.Fatal(err)
	}
	m.sandboxes["s1"] = sb

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for err == nil {
		_, err = f.Write(buf)
	}
	f.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling %s: %v", dir, err)
	}

	m.HandleExit("c1")
	m.HandleExit("s1")
	var onDisk ContainerRecord
	if err := st.Get(store.BucketContainers, "c1", &onDisk); err != nil {
		t.Fatal(err)
	}
	if got := c.Record().State; got != runtimeapi.ContainerState_CONTAINER_RUNNING || onDisk.State != got {
		t.Fatalf("on a full disk: container %v in memory, %v in the store; want RUNNING in both (the exit cannot be written)", got, onDisk.State)
	}
	var sbOnDisk SandboxRecord
	if err := st.Get(store.BucketSandboxes, "s1", &sbOnDisk); err != nil {
		t.Fatal(err)
	}
	if got := sb.Record().State; got != runtimeapi.PodSandboxState_SANDBOX_READY || sbOnDisk.State != got {
		t.Fatalf("on a full disk: sandbox %v in memory, %v in the store; want READY in both", got, sbOnDisk.State)
	}
	time.Sleep(3 * exitRetry) // tries that fail again
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec := c.Record()
		// RuntimeDeleted: HandleExit's last step is done too.
		if rec.State == runtimeapi.ContainerState_CONTAINER_EXITED && rec.RuntimeDeleted && sb.Record().State == runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			if rec.ExitCode != 3 {
				t.Errorf("exit code %d, want 3", rec.ExitCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("space is back but the exits are not recorded: container %v, sandbox %v", rec.State, sb.Record().State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := st.Get(store.BucketContainers, "c1", &onDisk); err != nil || onDisk.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("container in the store: %v, %v; want EXITED", onDisk.State, err)
	}
	if err := st.Get(store.BucketSandboxes, "s1", &sbOnDisk); err != nil || sbOnDisk.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("sandbox in the store: %v, %v; want NOTREADY", sbOnDisk.State, err)
	}
}
