package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"peapod/csi/loop/looptest"
	"peapod/volumes/csiplugin"
)

// CSI integration tests: the real peapod-csi-loop binary, built into the
// test's temp dir, registers through its socket in a plugins_registry dir
// the volume manager's csiplugin.Registry watches; volumes are real loop
// devices, ext4 and mounts. Cleanup (also on failure): the driver process
// by its PID, every mount under the test's dirs, the loop devices of its
// disk files.

type csiEnv struct {
	*testEnv
	drv      *looptest.Driver
	sockDir  string
	regDir   string
	endpoint string
	diskDir  string
	logPath  string
	nodeID   string
	plugins  *csiplugin.Registry
}

func newCSIEnv(t *testing.T) *csiEnv {
	t.Helper()
	requireIntegration(t)
	e := newEnv(t)
	ce := &csiEnv{testEnv: e, nodeID: "csi-test-node"}
	bin := looptest.Build(t, e.root)
	// Sockets in a short dir: sun_path holds 108 bytes.
	var err error
	ce.sockDir, err = os.MkdirTemp("", "pcsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ce.sockDir) })
	ce.regDir = filepath.Join(ce.sockDir, "plugins_registry")
	ce.endpoint = filepath.Join(ce.sockDir, "csi.sock")
	ce.diskDir = filepath.Join(e.root, "disks")
	ce.logPath = filepath.Join(e.root, "driver.log")
	ce.drv = &looptest.Driver{Bin: bin, Endpoint: ce.endpoint, RegDir: ce.regDir, DiskDir: ce.diskDir, LogPath: ce.logPath, NodeID: ce.nodeID, Args: []string{"-v=4"}}

	ce.plugins = csiplugin.New(ce.regDir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ce.plugins.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	e.opts.CSIDrivers = ce.plugins
	// Registered after newEnv's: runs before its unmounts and detaches.
	t.Cleanup(func() {
		ce.stopDriver(t)
		if t.Failed() {
			b, _ := os.ReadFile(ce.logPath)
			t.Logf("driver log:\n%s", b)
		}
	})
	return ce
}

// startDriver runs the driver binary; stopDriver (and the cleanup) stop
// it by its PID.
func (ce *csiEnv) startDriver(t *testing.T) { ce.drv.Start(t) }

func (ce *csiEnv) stopDriver(t *testing.T) { ce.drv.Stop(t) }

func (ce *csiEnv) waitRegistered(t *testing.T, want bool) *csiplugin.Driver {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d, err := ce.plugins.Get(csiLoopDriver)
		if (err == nil) == want {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver registered=%t never came: %v", want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// createVolume asks the driver's controller for a volume (what
// external-provisioner would do) and returns its handle.
func (ce *csiEnv) createVolume(t *testing.T, name string, size int64) string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+ce.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := csi.NewControllerClient(conn).CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	ce.images = append(ce.images, filepath.Join(ce.diskDir, id+".img"))
	return id
}

func (ce *csiEnv) image(id string) string { return filepath.Join(ce.diskDir, id+".img") }

func (ce *csiEnv) driverLog(t *testing.T) string {
	b, err := os.ReadFile(ce.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func isRO(t *testing.T, path string) bool {
	ms, err := mountsAt(path)
	if err != nil || len(ms) == 0 {
		t.Fatalf("no mount at %s: %v", path, err)
	}
	for _, o := range strings.Split(ms[len(ms)-1].Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// The watcher finds the driver's registration socket, calls GetInfo and
// NotifyRegistrationStatus (the driver logs it), NodeGetInfo and the
// capabilities; the driver's exit removes its socket and deregisters it.
func TestIntegrationCSIRegistration(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	d := ce.waitRegistered(t, true)
	if d.NodeID != ce.nodeID || d.Endpoint != ce.endpoint || !d.StageUnstage || !d.VolumeStats || !d.ControllerPublish || d.MaxVolumes != 64 {
		t.Fatalf("registered driver: %+v", d)
	}
	waitFor(t, "the driver to log the registration status", func() bool {
		return strings.Contains(ce.driverLog(t), "Registered with the kubelet")
	})
	ce.stopDriver(t)
	ce.waitRegistered(t, false)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A static pod's claim on a PV with spec.csi: attach (ControllerPublish,
// the losetup), NodeStage (mkfs, mount at the kubelet's global path),
// NodePublish into the pod; teardown of the only user unpublishes,
// unstages and detaches; a second pod reads the data back;
// kubelet_volume_stats_* come from NodeGetVolumeStats; a restarted
// manager adopts the published volume without calling the driver.
func TestIntegrationCSIVolumeAcrossPods(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
	handle := ce.createVolume(t, "pv-csi-across", 64<<20)
	objs := csiObjs(handle)
	m := ce.manager(t)
	ctx := context.Background()

	podA := claimPod("u-a")
	mounts, err := m.SetupPod(ctx, podA, objs)
	if err != nil {
		t.Fatal(err)
	}
	data := mountFor(t, mounts, "db", "/data")
	if want := filepath.Join(ce.opts.PodsDir, "u-a/volumes/kubernetes.io~csi/pv-csi/mount"); data.HostPath != want || data.Readonly {
		t.Fatalf("mount %+v, want host path %s", data, want)
	}
	staging := m.csiStagingPath(csiLoopDriver, handle)
	gm, _ := mountsAt(staging)
	if len(gm) != 1 || gm[0].FSType != "ext4" || !strings.HasPrefix(gm[0].Source, "/dev/loop") {
		t.Fatalf("staging mount: %+v", gm)
	}
	if l := losetupJ(t, ce.image(handle)); l == "" || strings.Contains(l, "\n") {
		t.Fatalf("losetup -j: %q, want one device", l)
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(data.HostPath), csiVolDataFile)); err != nil || !strings.Contains(string(b), `"volumeHandle":"`+handle+`"`) {
		t.Fatalf("vol_data.json: %s %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(data.HostPath, "hello"), []byte("from A"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := mountFor(t, mounts, "db", "/logs")
	if err := os.WriteFile(filepath.Join(logs.HostPath, "l"), []byte("log"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := counter(t, ce.reg, "kubelet_volume_stats_capacity_bytes", map[string]string{"namespace": "ns", "persistentvolumeclaim": "data"}); c < 50<<20 {
		t.Fatalf("capacity metric %v", c)
	}
	if c := counter(t, ce.reg, "kubelet_volume_stats_inodes_used", map[string]string{"namespace": "ns", "persistentvolumeclaim": "data"}); c < 1 {
		t.Fatalf("inodes_used metric %v", c)
	}
	if !strings.Contains(ce.driverLog(t), "NodeGetVolumeStats") {
		t.Fatal("the stats did not come from NodeGetVolumeStats")
	}

	if err := m.TeardownPod(ctx, podA); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("still attached after teardown: %s", l)
	}
	if ms, _ := mountsBeneath(ce.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
	if ents, _ := os.ReadDir(filepath.Join(ce.opts.StateDir, "csi")); len(ents) != 0 {
		t.Fatalf("CSI records left: %v", ents)
	}
	if _, err := os.Stat(filepath.Dir(staging)); !os.IsNotExist(err) {
		t.Fatalf("staging dir left: %v", err)
	}

	podB := claimPod("u-b")
	mounts, err = m.SetupPod(ctx, podB, objs)
	if err != nil {
		t.Fatal(err)
	}
	pathB := mountFor(t, mounts, "db", "/data").HostPath
	if b, err := os.ReadFile(filepath.Join(pathB, "hello")); err != nil || string(b) != "from A" {
		t.Fatalf("pod B reads %q, %v", b, err)
	}
	for op, want := range map[string]float64{"attach": 2, "mount_device": 2, "setup": 2, "unmount_device": 1, "detach": 1} {
		if got := counter(t, ce.reg, "peapod_volume_operations_total", map[string]string{"operation": op, "plugin": "kubernetes.io/csi:" + csiLoopDriver, "result": "success"}); got != want {
			t.Errorf("%s count %v, want %v", op, got, want)
		}
	}

	// A restarted manager adopts pod B's volume as it is.
	reg2 := prometheus.NewRegistry()
	o := ce.opts
	o.Registerer = reg2
	m2, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	mounts, err = m2.SetupPod(ctx, podB, objs)
	if err != nil {
		t.Fatal(err)
	}
	if mountFor(t, mounts, "db", "/data").HostPath != pathB || mountCount(t, pathB) != 1 || mountCount(t, staging) != 1 {
		t.Fatal("the restarted manager did not keep pod B's mounts as they were")
	}
	if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": "setup", "result": "adopted"}); got != 1 {
		t.Fatalf("adopted setups %v, want 1", got)
	}
	for _, op := range []string{"attach", "mount_device", "setup"} {
		if got := counter(t, reg2, "peapod_volume_operations_total", map[string]string{"operation": op, "result": "success"}); got != 0 {
			t.Fatalf("the restarted manager ran %v %s operations", got, op)
		}
	}
	if err := m2.TeardownPod(ctx, podB); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("still attached after teardown: %s", l)
	}
	if ms, _ := mountsBeneath(ce.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

// Two pods on one claim: one attach and one stage, two publishes; the
// volume stays staged while either pod uses it and is unstaged and
// detached after both.
func TestIntegrationCSISharedStage(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
	handle := ce.createVolume(t, "pv-csi-shared", 64<<20)
	objs := csiObjs(handle)
	m := ce.manager(t)
	ctx := context.Background()
	staging := m.csiStagingPath(csiLoopDriver, handle)

	podA, podB := claimPod("u-sa"), claimPod("u-sb")
	ma, err := m.SetupPod(ctx, podA, objs)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := m.SetupPod(ctx, podB, objs)
	if err != nil {
		t.Fatal(err)
	}
	pa, pb := mountFor(t, ma, "db", "/data").HostPath, mountFor(t, mb, "db", "/data").HostPath
	if pa == pb || mountCount(t, pa) != 1 || mountCount(t, pb) != 1 || mountCount(t, staging) != 1 {
		t.Fatalf("mounts: A %s (%d) B %s (%d) staging %d", pa, mountCount(t, pa), pb, mountCount(t, pb), mountCount(t, staging))
	}
	if err := os.WriteFile(filepath.Join(pa, "shared"), []byte("A wrote"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(pb, "shared")); string(b) != "A wrote" {
		t.Fatalf("B sees %q", b)
	}
	plugin := "kubernetes.io/csi:" + csiLoopDriver
	count := func(op string) float64 {
		return counter(t, ce.reg, "peapod_volume_operations_total", map[string]string{"operation": op, "plugin": plugin, "result": "success"})
	}
	if count("attach") != 1 || count("mount_device") != 1 || count("setup") != 2 {
		t.Fatalf("attach %v, mount_device %v, setup %v; want 1, 1, 2", count("attach"), count("mount_device"), count("setup"))
	}

	if err := m.TeardownPod(ctx, podA); err != nil {
		t.Fatal(err)
	}
	if mountCount(t, pa) != 0 || mountCount(t, staging) != 1 || losetupJ(t, ce.image(handle)) == "" || count("unmount_device") != 0 {
		t.Fatal("the volume was released while pod B still uses it")
	}
	if b, err := os.ReadFile(filepath.Join(pb, "shared")); err != nil || string(b) != "A wrote" {
		t.Fatalf("B after A's teardown: %q %v", b, err)
	}
	if err := m.TeardownPod(ctx, podB); err != nil {
		t.Fatal(err)
	}
	if mountCount(t, staging) != 0 || losetupJ(t, ce.image(handle)) != "" || count("unmount_device") != 1 || count("detach") != 1 {
		t.Fatalf("after both teardowns: staging %d, losetup %q, unmount_device %v, detach %v",
			mountCount(t, staging), losetupJ(t, ce.image(handle)), count("unmount_device"), count("detach"))
	}
	if ms, _ := mountsBeneath(ce.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
}

// The driver's socket goes away: SetupPod fails with the reason (what the
// agent's FailedMount event and the pod's waiting message carry) and backs
// off; the driver comes back, registers, and the reconciler (Run) mounts
// the volume by itself.
func TestIntegrationCSIDriverComesBack(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
	handle := ce.createVolume(t, "pv-csi-back", 64<<20)
	ce.stopDriver(t)
	ce.waitRegistered(t, false)

	m := ce.manager(t)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { m.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	pod := claimPod("u-back")
	_, err := m.SetupPod(context.Background(), pod, csiObjs(handle))
	if err == nil || !strings.Contains(err.Error(), "driver "+csiLoopDriver+" not registered") {
		t.Fatalf("SetupPod without the driver: %v", err)
	}
	t.Logf("FailedMount: %v", err)
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("attached without a driver: %s", l)
	}

	ce.startDriver(t)
	ce.waitRegistered(t, true)
	target := filepath.Join(ce.opts.PodsDir, "u-back/volumes/kubernetes.io~csi/pv-csi/mount")
	waitFor(t, "the reconciler to mount the volume", func() bool { ok, _ := isMountPoint(target); return ok })
	mounts, err := m.SetupPod(context.Background(), pod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := mountFor(t, mounts, "db", "/data").HostPath; p != target {
		t.Fatalf("host path %s", p)
	}
	if err := os.WriteFile(filepath.Join(target, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.TeardownPod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("still attached: %s", l)
	}
}

// A claim mounted readOnly: published read-only (the container's mount
// says so too) over a writable staging mount; writes fail with EROFS.
func TestIntegrationCSIReadOnlyClaim(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
	handle := ce.createVolume(t, "pv-csi-ro", 64<<20)
	m := ce.manager(t)
	ctx := context.Background()
	pod := claimPod("u-ro")
	pod.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = true
	pod.Spec.Containers[0].VolumeMounts = pod.Spec.Containers[0].VolumeMounts[:1] // no subPath to create
	mounts, err := m.SetupPod(ctx, pod, csiObjs(handle))
	if err != nil {
		t.Fatal(err)
	}
	data := mountFor(t, mounts, "db", "/data")
	if !data.Readonly {
		t.Fatal("container mount is not read-only")
	}
	if !isRO(t, data.HostPath) {
		t.Fatal("published mount is not read-only")
	}
	if isRO(t, m.csiStagingPath(csiLoopDriver, handle)) {
		t.Fatal("staging mount is read-only; only the claim's publish should be")
	}
	if err := os.WriteFile(filepath.Join(data.HostPath, "nope"), []byte("x"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write to a read-only claim: %v, want EROFS", err)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("still attached: %s", l)
	}
}

// Online expansion, the node half: the disk grows (ControllerExpandVolume,
// what the external-resizer calls), then ExpandVolume grows the mounted
// ext4 through NodeExpandVolume, the data staying; the pod sees the new
// size at once. A volume not mounted says so (the agent waits), a size
// the disk does not have is the driver's final error.
func TestIntegrationCSIExpandOnline(t *testing.T) {
	ce := newCSIEnv(t)
	ce.startDriver(t)
	d := ce.waitRegistered(t, true)
	if !d.ExpandVolume {
		t.Fatal("peapod-csi-loop registered without the node EXPAND_VOLUME capability")
	}
	handle := ce.createVolume(t, "pv-csi-expand", 32<<20)
	m := ce.manager(t)
	ctx := context.Background()
	pod := claimPod("u-expand")
	if _, err := m.ExpandVolume(ctx, pod.UID, "data", 64<<20); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Fatalf("expand before the pod's setup: %v, want not mounted", err)
	}
	mounts, err := m.SetupPod(ctx, pod, csiObjs(handle))
	if err != nil {
		t.Fatal(err)
	}
	dir := mountFor(t, mounts, "db", "/data").HostPath
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	before := size()

	// A size the disk does not have yet: final, reported as such.
	_, err = m.ExpandVolume(ctx, pod.UID, "data", 64<<20)
	var final interface{ Final() bool }
	if err == nil || !errors.As(err, &final) {
		t.Fatalf("expand past the disk: %v, want the driver's final error", err)
	}
	// Backing off now: not tried again at once.
	_, err = m.ExpandVolume(ctx, pod.UID, "data", 64<<20)
	var boff interface{ BackingOff() bool }
	if err == nil || !errors.As(err, &boff) {
		t.Fatalf("second expand right after a failure: %v, want backing off", err)
	}

	conn, err := grpc.NewClient("unix://"+ce.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := csi.NewControllerClient(conn).ControllerExpandVolume(cctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: handle, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
	}); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	delete(m.backoffs, "expand/"+string(pod.UID)+"/data") // the test does not wait out the back-off
	m.mu.Unlock()
	called, err := m.ExpandVolume(ctx, pod.UID, "data", 64<<20)
	if err != nil && strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		// This host withholds CAP_SYS_RESOURCE, which online resize2fs
		// needs: the filesystem grows offline when the volume is staged
		// again, as for a pod recreated on the claim; the expansion that
		// follows finds nothing left to do and succeeds.
		t.Logf("online resize refused here (%v); staging again", err)
		if err := m.TeardownPod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pod = claimPod("u-expand2")
		if mounts, err = m.SetupPod(ctx, pod, csiObjs(handle)); err != nil {
			t.Fatal(err)
		}
		dir = mountFor(t, mounts, "db", "/data").HostPath
		called, err = m.ExpandVolume(ctx, pod.UID, "data", 64<<20)
	}
	if err != nil || !called {
		t.Fatalf("expand after the disk grew: called %v, %v", called, err)
	}
	after := size()
	if after < 48<<20 || after <= before {
		t.Fatalf("filesystem %d bytes after the expansion (was %d), want about 64 MiB", after, before)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "kept")); err != nil || string(b) != "before" {
		t.Fatalf("data after the expansion: %q %v", b, err)
	}
	t.Logf("filesystem %d → %d bytes", before, after)

	if _, err := m.ExpandVolume(ctx, pod.UID, "nope", 64<<20); err == nil || !strings.Contains(err.Error(), `no volume "nope"`) {
		t.Errorf("unknown volume: %v", err)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ExpandVolume(ctx, pod.UID, "data", 64<<20); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("expand after teardown: %v, want not mounted", err)
	}
}
