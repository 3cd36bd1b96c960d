package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/network"
	"peapod/store"
)

// TestRestoreSettlesWhatACrashLeft: peapod killed inside RunPodSandbox and
// CreateContainer, after making things and before recording them: a pause,
// a netns pin, a /dev/shm mount, a container's dirs and rootfs mount. The
// next start stops and removes them all, and nothing of another peapod.
func TestRestoreSettlesWhatACrashLeft(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mounts and network namespaces")
	}
	dir := t.TempDir()
	state, root := filepath.Join(dir, "run"), filepath.Join(dir, "root")
	st, err := store.Open(filepath.Join(dir, "peapod.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nm, err := network.New(network.Options{ConfDir: filepath.Join(dir, "cni"), CacheDir: filepath.Join(dir, "cni-cache"), NetNSDir: filepath.Join(dir, "netns"), NoDefaultConf: true})
	if err != nil {
		t.Fatal(err)
	}
	const id = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	const cid = "2123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cfg, _ := proto.Marshal(&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "cut", Namespace: "ns", Uid: "u"}})
	rec := SandboxRecord{
		ID: id, Name: "cut_ns_u_0", ConfigProto: cfg, RuntimeHandler: "runc",
		State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, CgroupParent: "/peapod-test-restore/podu",
	}
	if err := st.Put(store.BucketSandboxes, id, &rec); err != nil {
		t.Fatal(err)
	}
	// What RunPodSandbox made before it was killed.
	pin, err := nm.NewNetNS("peapod-" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer network.RemoveNetNS(pin)
	shm := filepath.Join(state, "sandboxes", id, "shm")
	if err := mountShm(shm); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(shm)
	// Stand-ins for pauses: this peapod's (its -root is this state dir's
	// pause root) and another's.
	startPause := func(root string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", "-c", "while :; do sleep 0.1; done", "sh", "-root", root)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	ours := startPause(filepath.Join(state, "pause-root"))
	theirs := startPause(filepath.Join(dir, "other", "pause-root"))
	exited := make(chan struct{})
	go func() { ours.Wait(); close(exited) }()
	// What CreateContainer made before it was killed.
	rootfs := filepath.Join(state, "containers", cid, "rootfs")
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unmountAll(rootfs)
	if err := os.MkdirAll(filepath.Join(root, "containers", cid, "upper"), 0o711); err != nil {
		t.Fatal(err)
	}

	m, err := New(context.Background(), Options{
		Root: root, State: state, Store: st, Network: nm,
		Runtimes: map[string]OCIRuntime{"runc": &recordingRuntime{}}, DefaultRuntime: "runc",
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Error("this peapod's unrecorded pause still runs")
	}
	if err := theirs.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("another peapod's pause was stopped: %v", err)
	}
	if _, err := os.Lstat(pin); err == nil {
		t.Error("unrecorded netns pin left")
	}
	if isMountPoint(shm) {
		t.Error("unrecorded /dev/shm still mounted")
	}
	for _, p := range []string{filepath.Join(state, "containers", cid), filepath.Join(root, "containers", cid)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("dir of an unrecorded container left: %s", p)
		}
	}
	// The kubelet removes the sandbox: it goes, and its dir with it.
	if err := m.RemoveSandbox(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(state, "sandboxes", id)); err == nil {
		t.Error("sandbox dir left after remove")
	}
}
