package loop

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"peapod/hack/testenv"
	"peapod/volumes/disk"
)

// startDriver runs a driver on a socket in dir (root dir/disks,
// registration socket in dir/registry) until the test ends, and cleans up
// every mount under dir and every loop device backed by a file in root.
func startDriver(t *testing.T, dir string) (*Driver, string, func()) {
	t.Helper()
	for _, tool := range []struct{ path, pkg string }{
		{"/sbin/mkfs.ext4", "e2fsprogs"}, {"/sbin/e2fsck", "e2fsprogs"}, {"/sbin/resize2fs", "e2fsprogs"}, {"/sbin/blkid", "util-linux"},
	} {
		if _, err := exec.LookPath(filepath.Base(tool.path)); err != nil {
			testenv.Require(t, tool.path, tool.pkg)
		}
	}
	d, err := New(Options{NodeID: "sanity-node", Root: filepath.Join(dir, "disks"), MaxVolumesPerNode: 16})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, "unix://"+sock, filepath.Join(dir, "registry")) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	waitForSocket(t, sock)
	return d, sock, stop
}

func waitForSocket(t *testing.T, sock string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never appeared", sock)
}

// cleanupKernel undoes what a failed test may have left: mounts under dir
// (deepest first), then the loop devices of the disk files in root.
func cleanupKernel(t *testing.T, dir, root string) {
	t.Helper()
	all, _ := disk.ReadMountInfo()
	for i := len(all) - 1; i >= 0; i-- {
		if mp := all[i].MountPoint; strings.HasPrefix(mp, dir+"/") {
			t.Logf("cleanup: leftover mount %s", mp)
			if err := disk.UnmountAll(mp); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(root, "*"+imageSuffix))
	for _, f := range files {
		devs, _ := disk.LoopDevicesFor(f)
		for _, dev := range devs {
			t.Logf("cleanup: leftover loop device %s (%s)", dev, f)
			if err := disk.LoopDetach(dev); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// TestSanity runs csi-sanity (csi-test v5.6.0) against the driver.
func TestSanity(t *testing.T) {
	testenv.Integration(t)
	dir := t.TempDir()
	_, sock, stop := startDriver(t, dir)
	t.Cleanup(func() { cleanupKernel(t, dir, filepath.Join(dir, "disks")) })
	t.Cleanup(stop)

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix:" + sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 64 * MiB
	cfg.TestVolumeExpandSize = 128 * MiB
	cfg.TestNodeVolumeAttachLimit = true
	sanity.Test(t, cfg)
}

// TestRestartKeepsAttachments: a driver started again over attached and
// staged volumes finds them (sysfs, mountinfo) and answers every retried
// call idempotently, then tears them down.
func TestRestartKeepsAttachments(t *testing.T) {
	testenv.Integration(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "disks")
	t.Cleanup(func() { cleanupKernel(t, dir, root) })
	ctx := context.Background()
	c := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "pod", "mount")

	d, _, stop := startDriver(t, dir)
	if _, err := d.CreateVolume(ctx, createReq("pvc-r", 32*MiB, 0)); err != nil {
		t.Fatal(err)
	}
	pub, err := d.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-r", NodeId: "sanity-node", VolumeCapability: c})
	if err != nil {
		t.Fatal(err)
	}
	dev := pub.PublishContext[DevicePathKey]
	if _, err := d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, VolumeCapability: c, PublishContext: pub.PublishContext}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop()

	d2, _, stop2 := startDriver(t, dir)
	defer stop2()
	pub2, err := d2.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-r", NodeId: "sanity-node", VolumeCapability: c})
	if err != nil || pub2.PublishContext[DevicePathKey] != dev {
		t.Fatalf("publish after restart: %v %v, want %s", pub2, err, dev)
	}
	if _, err := d2.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-r", NodeId: "sanity-node", VolumeCapability: c, Readonly: true}); err == nil {
		t.Fatal("read-only publish of a read-write attach accepted")
	}
	if _, err := d2.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, VolumeCapability: c, PublishContext: pub2.PublishContext}); err != nil {
		t.Fatal(err)
	}
	// A devicePath that is not this volume's loop device is refused.
	if _, err := d2.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: filepath.Join(dir, "s2"), VolumeCapability: c,
		PublishContext: map[string]string{DevicePathKey: "/dev/sda"}}); err == nil {
		t.Fatal("foreign devicePath accepted")
	}
	if _, err := d2.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
		t.Fatal(err)
	}
	// A second, read-only publish of the same volume.
	ro := filepath.Join(dir, "pod2", "mount")
	if _, err := d2.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, TargetPath: ro, VolumeCapability: c, Readonly: true}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ro, "data")); err != nil || string(b) != "kept" {
		t.Fatalf("data after restart: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(ro, "x"), nil, 0o644); err == nil {
		t.Fatal("wrote through a read-only publish")
	}
	// Expansion while published: online where the driver has
	// CAP_SYS_RESOURCE, otherwise at the next stage (offline).
	if _, err := d2.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-r", CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * MiB}}); err != nil {
		t.Fatal(err)
	}
	expand := &csi.NodeExpandVolumeRequest{VolumeId: "pvc-r", VolumePath: target, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 * MiB}}
	if _, err := d2.NodeExpandVolume(ctx, expand); err != nil {
		if !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
			t.Fatalf("node expand: %v", err)
		}
		t.Logf("online resize refused here (%v); restaging", err)
		if _, err := d2.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-r", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
		if _, err := d2.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-r", TargetPath: ro}); err != nil {
			t.Fatal(err)
		}
		if _, err := d2.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
		if _, err := d2.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, VolumeCapability: c, PublishContext: pub2.PublishContext}); err != nil {
			t.Fatal(err)
		}
		if _, err := d2.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging, TargetPath: target, VolumeCapability: c}); err != nil {
			t.Fatal(err)
		}
	}
	ex, err := d2.NodeExpandVolume(ctx, expand)
	if err != nil || ex.CapacityBytes != 64*MiB {
		t.Fatalf("node expand: %v %v", ex, err)
	}
	st, err := d2.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pvc-r", VolumePath: target})
	if err != nil || st.Usage[0].Total < 50*MiB {
		t.Fatalf("stats after expand: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(target, "data")); err != nil || string(b) != "kept" {
		t.Fatalf("data after expand: %q %v", b, err)
	}
	if _, err := d2.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "pvc-r", NodeId: "sanity-node"}); err == nil {
		t.Fatal("detach of a mounted volume accepted")
	}
	for _, p := range []string{target, ro} { // ro may be gone already: idempotent
		if _, err := d2.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-r", TargetPath: p}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s left behind: %v", p, err)
		}
	}
	if _, err := d2.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "pvc-r", StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "pvc-r", NodeId: "sanity-node"}); err != nil {
		t.Fatal(err)
	}
	if devs, _ := disk.LoopDevicesFor(d2.imagePath("pvc-r")); len(devs) != 0 {
		t.Fatalf("still attached at %v", devs)
	}
	if _, err := d2.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-r"}); err != nil {
		t.Fatal(err)
	}
}

// TestRegistration: the kubelet's plugin watcher's view of the
// registration socket.
func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	d, err := New(Options{NodeID: "n", Root: filepath.Join(dir, "disks")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sock := filepath.Join(dir, "csi.sock")
	go func() { done <- d.Serve(ctx, "unix://"+sock, filepath.Join(dir, "registry")) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
	}()
	reg := filepath.Join(dir, "registry", DriverName+"-reg.sock")
	waitForSocket(t, reg)
	conn, err := grpc.NewClient("unix:"+reg, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := registerapi.NewRegistrationClient(conn)
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != DriverName || info.Endpoint != sock || len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Fatalf("GetInfo = %v", info)
	}
	if _, err := c.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	// The CSI socket it names answers.
	waitForSocket(t, sock)
	cc, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pi, err := csi.NewIdentityClient(cc).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || pi.Name != DriverName {
		t.Fatalf("GetPluginInfo = %v, %v", pi, err)
	}
}
