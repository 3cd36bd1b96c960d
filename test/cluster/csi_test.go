package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"peapod/hack/cluster/harness"
)

// TestCSI: dynamic provisioning through the cluster's StorageClass
// peapod-loop (hack/cluster/harness/csi.go: peapod-csi-loop,
// external-provisioner, external-attacher) under the upstream kubelet on
// peapod (the shared cluster).
func TestCSI(t *testing.T) {
	t.Parallel()
	testCSIDynamic(t, cluster(t))
}

// testAgentCSI is TestCSI under peapod-agent (TestAgentNode's cluster),
// once the agent publishes what the provisioner needs: the kubelet, on a
// driver's registration, writes its CSINode entry (node id, topology keys,
// volume limit) and labels the Node with the driver's topology segment
// (pkg/volume/csi/nodeinfomanager); external-provisioner reads both for
// a WaitForFirstConsumer claim ("failed to get selected CSINode"). With
// them written by hand the whole test passes under the agent (tried).
func testAgentCSI(t *testing.T, c *harness.Cluster) {
	k := &kc{t: t, c: c}
	deadline := time.Now().Add(15 * time.Second)
	for {
		keys, err := k.try("get", "csinode", c.NodeName, "-o", `jsonpath={.spec.drivers[?(@.name=="`+harness.CSIDriverName+`")].topologyKeys}`)
		if err == nil && strings.Contains(keys, harness.CSITopologyKey) {
			break
		}
		if time.Now().After(deadline) {
			t.Skipf("peapod-agent wrote no CSINode entry for %s with its topology key (%q, %v): "+
				"external-provisioner cannot place a WaitForFirstConsumer volume on this node", harness.CSIDriverName, keys, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	testCSIDynamic(t, c)
}

const csiClaim = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: ` + harness.CSIStorageClass + `
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
`

// csiPod: %[1]s name, %[2]s image, %[3]s the shell script.
const csiPod = `apiVersion: v1
kind: Pod
metadata: {name: %[1]s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %[2]s
    command: [sh, -c, %[3]q]
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
`

// testCSIDynamic: a PVC of class peapod-loop gets a PV once a pod uses it
// (WaitForFirstConsumer); the pod gets the disk attached (a VolumeAttachment
// the external-attacher marks attached: a loop device of the disk file),
// formatted and mounted, and writes to it; a second pod, after the first
// is gone, reads the data back; deleting the claim deletes the PV, the disk
// file, and leaves no loop device of it.
func testCSIDynamic(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	start := time.Now()

	var sc storagev1.StorageClass
	k.getJSON(&sc, "storageclass", harness.CSIStorageClass)
	if sc.Provisioner != harness.CSIDriverName || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("StorageClass %s: provisioner %q, annotations %v; want %s, the default class", sc.Name, sc.Provisioner, sc.Annotations, harness.CSIDriverName)
	}

	k.apply(csiClaim)
	// WaitForFirstConsumer: no volume before a pod uses the claim.
	if p := k.jsonpath("pvc/data", "{.status.phase}"); p != "Pending" {
		t.Errorf("claim before any pod: phase %q, want Pending", p)
	}
	const payload = "written-by-a"
	k.apply(fmt.Sprintf(csiPod, "a", busybox, "echo "+payload+" > /data/file && sync && sleep 3600"))
	k.waitReady("a", 3*time.Minute)
	t.Logf("pod a Ready %.1fs after the claim", time.Since(start).Seconds())

	var pvc corev1.PersistentVolumeClaim
	k.getJSON(&pvc, "pvc", "data")
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		t.Fatalf("claim: phase %s, volume %q; want Bound", pvc.Status.Phase, pvc.Spec.VolumeName)
	}
	pvName := pvc.Spec.VolumeName
	var pv corev1.PersistentVolume
	k.getJSON(&pv, "pv", pvName)
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != harness.CSIDriverName {
		t.Fatalf("PV %s: spec.csi %+v, want driver %s", pvName, pv.Spec.CSI, harness.CSIDriverName)
	}
	handle := pv.Spec.CSI.VolumeHandle
	if got := pv.Spec.Capacity.Storage().Value(); got != 64<<20 {
		t.Errorf("PV capacity %d, want %d", got, 64<<20)
	}
	if pv.Spec.NodeAffinity == nil || !strings.Contains(fmt.Sprint(pv.Spec.NodeAffinity.Required), c.NodeName) {
		t.Errorf("PV node affinity %+v, want the node %s (the driver's topology)", pv.Spec.NodeAffinity, c.NodeName)
	}
	diskFile := filepath.Join(c.CSIDisksDir(), handle+".img")
	if st, err := os.Stat(diskFile); err != nil || st.Size() != 64<<20 {
		t.Errorf("disk file %s: %v (size %v), want 64 MiB", diskFile, err, st)
	}

	va := k.volumeAttachment(pvName)
	if va == nil {
		t.Fatalf("no VolumeAttachment for PV %s", pvName)
	}
	if !va.Status.Attached || va.Spec.Attacher != harness.CSIDriverName || va.Spec.NodeName != c.NodeName {
		t.Errorf("VolumeAttachment %s: attacher %q node %q attached %t (%+v); want %s on %s, attached",
			va.Name, va.Spec.Attacher, va.Spec.NodeName, va.Status.Attached, va.Status, harness.CSIDriverName, c.NodeName)
	}
	dev := va.Status.AttachmentMetadata["devicePath"]
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Errorf("VolumeAttachment %s: attachmentMetadata %v, want devicePath /dev/loopN", va.Name, va.Status.AttachmentMetadata)
	}
	if loops, err := c.CSILoopDevices(); err != nil || len(loops) != 1 || !strings.HasPrefix(loops[0], dev+" ") {
		t.Errorf("loop devices of the disks: %q (%v), want %s only", loops, err, dev)
	}
	mounts := k.run("exec", "a", "--", "cat", "/proc/mounts")
	if !strings.Contains(mounts, " /data ext4 ") {
		t.Errorf("pod a: /data is not an ext4 mount:\n%s", mounts)
	}
	k.run("delete", "pod", "a", "--wait=true", "--timeout=90s")

	k.apply(fmt.Sprintf(csiPod, "b", busybox, "cat /data/file > /dev/termination-log"))
	k.eventually(3*time.Minute, "pod b done", func() (bool, string) {
		p := k.jsonpath("pod/b", "{.status.phase}")
		return p == "Succeeded" || p == "Failed", p + " " + k.jsonpath("pod/b", "{.status.containerStatuses}")
	})
	if got := strings.TrimSpace(k.jsonpath("pod/b", "{.status.containerStatuses[0].state.terminated.message}")); got != payload {
		t.Errorf("pod b read %q, want %q (phase %s)", got, payload, k.jsonpath("pod/b", "{.status.phase}"))
	}
	if va := k.volumeAttachment(pvName); va != nil && va.Spec.NodeName != c.NodeName {
		t.Errorf("VolumeAttachment for pod b on node %q, want %s", va.Spec.NodeName, c.NodeName)
	}
	k.run("delete", "pod", "b", "--wait=true", "--timeout=90s")

	k.run("delete", "pvc", "data", "--wait=true", "--timeout=90s")
	deleted := time.Now()
	k.eventually(3*time.Minute, "PV "+pvName+", its VolumeAttachment and disk file gone", func() (bool, string) {
		_, pvErr := k.try("get", "pv", pvName, "-o", "name")
		_, fileErr := os.Stat(diskFile)
		va := k.volumeAttachment(pvName)
		if pvErr != nil && os.IsNotExist(fileErr) && va == nil {
			return true, ""
		}
		return false, fmt.Sprintf("pv: %v, disk file: %v, VolumeAttachment: %v", pvErr == nil, fileErr, va != nil)
	})
	t.Logf("PV, VolumeAttachment and disk gone %.1fs after the claim's deletion; %.1fs in all", time.Since(deleted).Seconds(), time.Since(start).Seconds())
	if loops, err := c.CSILoopDevices(); err != nil || len(loops) != 0 {
		t.Errorf("loop devices of the disks left: %q (%v)", loops, err)
	}
}

// volumeAttachment is the VolumeAttachment of PV pv, or nil.
func (k *kc) volumeAttachment(pv string) *storagev1.VolumeAttachment {
	k.t.Helper()
	out, err := k.try("get", "volumeattachments", "-o", "json")
	if err != nil {
		k.t.Logf("get volumeattachments: %v", err)
		return nil
	}
	var list storagev1.VolumeAttachmentList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		k.t.Fatalf("volumeattachments: %v", err)
	}
	for i, va := range list.Items {
		if n := va.Spec.Source.PersistentVolumeName; n != nil && *n == pv {
			return &list.Items[i]
		}
	}
	return nil
}
