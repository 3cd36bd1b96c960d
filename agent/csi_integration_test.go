package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/api/core/v1"

	"peapod/csi/loop/looptest"
	"peapod/volumes"
	"peapod/volumes/csiplugin"
	"peapod/volumes/disk"
)

// Static pods on a CSI volume, end to end through the agent (fake CRI
// runtime, real volume manager, the real peapod-csi-loop binary, real loop
// devices and mounts). Needs PEAPOD_INTEGRATION=1 and root.

const csiStorageManifest = `apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-csi}
spec:
  capacity: {storage: 64Mi}
  accessModes: [ReadWriteOnce]
  storageClassName: csi-loop
  csi: {driver: loop.csi.peapod.io, volumeHandle: HANDLE, fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: csi-loop
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
`

func csiPodManifest(name string) string {
	return `apiVersion: v1
kind: Pod
metadata: {name: ` + name + `}
spec:
  containers:
  - name: app
    image: busybox:1.36
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
`
}

func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitingMessage(p *v1.Pod, name string) string {
	if p == nil {
		return ""
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name && cs.State.Waiting != nil {
			return cs.State.Waiting.Message
		}
	}
	return ""
}

func isMount(path string) bool {
	ok, _ := disk.IsMountPoint(path)
	return ok
}

// A static pod whose PVC is bound (in the manifests) to a PV with spec.csi:
// while the driver is not registered the pod waits in ContainerCreating
// with the reason; once it registers the pod runs on the staged and
// published volume; deleting the pod unpublishes, unstages and detaches;
// a second pod reads back what the first wrote.
func TestIntegrationStaticPodOnCSIVolume(t *testing.T) {
	if os.Getenv("PEAPOD_INTEGRATION") != "1" || os.Geteuid() != 0 {
		t.Skip("integration test: set PEAPOD_INTEGRATION=1 and run as root (loop devices, mounts)")
	}
	root := t.TempDir()
	sockDir, err := os.MkdirTemp("", "pcsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	drv := &looptest.Driver{Bin: looptest.Build(t, root), Endpoint: filepath.Join(sockDir, "csi.sock"),
		RegDir: filepath.Join(sockDir, "plugins_registry"), DiskDir: filepath.Join(root, "disks"), LogPath: filepath.Join(root, "driver.log")}
	var image string
	t.Cleanup(func() { // last: whatever is still mounted or attached
		ms, _ := disk.ReadMountInfo()
		for i := len(ms) - 1; i >= 0; i-- {
			if strings.HasPrefix(ms[i].MountPoint, root+"/") {
				if err := unix.Unmount(ms[i].MountPoint, unix.MNT_DETACH); err != nil {
					t.Logf("cleanup unmount %s: %v", ms[i].MountPoint, err)
				}
			}
		}
		if image != "" {
			devs, _ := disk.LoopDevicesFor(image)
			for _, d := range devs {
				if err := disk.LoopDetach(d); err != nil {
					t.Logf("cleanup detach %s: %v", d, err)
				}
			}
		}
	})
	t.Cleanup(func() {
		drv.Stop(t)
		if t.Failed() {
			t.Logf("driver log:\n%s", drv.Log())
		}
	})

	reg := csiplugin.New(drv.RegDir)
	ctx, cancel := context.WithCancel(context.Background())
	regDone, volsDone := make(chan struct{}), make(chan struct{})
	go func() { reg.Run(ctx); close(regDone) }()
	vols, err := volumes.New(volumes.Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "plugins"),
		StateDir: filepath.Join(root, "volumes"), CSIDrivers: reg})
	if err != nil {
		t.Fatal(err)
	}
	go func() { vols.Run(ctx); close(volsDone) }()
	t.Cleanup(func() { cancel(); <-regDone; <-volsDone })

	// The volume, made as external-provisioner would; then the driver goes.
	drv.Start(t)
	waitLong(t, "registration", func() bool { _, err := reg.Get("loop.csi.peapod.io"); return err == nil })
	conn, err := grpc.NewClient("unix://"+drv.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cv, err := csi.NewControllerClient(conn).CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pv-static", CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}}})
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	handle := cv.GetVolume().GetVolumeId()
	image = filepath.Join(drv.DiskDir, handle+".img")
	drv.Stop(t)
	waitLong(t, "deregistration", func() bool { _, err := reg.Get("loop.csi.peapod.io"); return csiplugin.IsNotRegistered(err) })

	e := newTestEnv(t, map[string]string{
		"storage.yaml": strings.Replace(csiStorageManifest, "HANDLE", handle, 1),
		"writer.yaml":  csiPodManifest("writer"),
	}, func(e *testEnv) { e.vols = vols })

	waitLong(t, "FailedMount in the pod's status", func() bool {
		return strings.Contains(waitingMessage(e.pod("writer"), "app"), "driver loop.csi.peapod.io not registered")
	})
	t.Logf("waiting: %s", waitingMessage(e.pod("writer"), "app"))
	if n := e.count("CreateContainer"); n != 0 {
		t.Fatalf("%d containers created without their volume", n)
	}

	drv.Start(t)
	waitLong(t, "writer running", func() bool { return containerRunning(e.pod("writer"), "app") })
	uid := e.pod("writer").UID
	target := filepath.Join(root, "pods", string(uid), "volumes/kubernetes.io~csi/pv-csi/mount")
	if !isMount(target) {
		t.Fatalf("%s is not mounted", target)
	}
	if err := os.WriteFile(filepath.Join(target, "hello"), []byte("from writer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if devs, _ := disk.LoopDevicesFor(image); len(devs) != 1 {
		t.Fatalf("loop devices of the volume: %v", devs)
	}

	os.Remove(filepath.Join(e.dir, "writer.yaml"))
	waitLong(t, "writer gone", func() bool { return e.pod("writer") == nil })
	waitLong(t, "the volume unstaged and detached", func() bool {
		devs, _ := disk.LoopDevicesFor(image)
		return len(devs) == 0 && !isMount(target)
	})

	writeFile(t, e.dir, "reader.yaml", csiPodManifest("reader"))
	waitLong(t, "reader running", func() bool { return containerRunning(e.pod("reader"), "app") })
	target = filepath.Join(root, "pods", string(e.pod("reader").UID), "volumes/kubernetes.io~csi/pv-csi/mount")
	if b, err := os.ReadFile(filepath.Join(target, "hello")); err != nil || string(b) != "from writer" {
		t.Fatalf("reader reads %q, %v", b, err)
	}
	os.Remove(filepath.Join(e.dir, "reader.yaml"))
	waitLong(t, "reader gone and the volume released", func() bool {
		devs, _ := disk.LoopDevicesFor(image)
		return e.pod("reader") == nil && len(devs) == 0
	})
}
