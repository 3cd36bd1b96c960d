package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"peapod/hack/cluster/harness"
)

// TestCSI: dynamic provisioning and online expansion through the
// cluster's StorageClass peapod-loop (hack/cluster/harness/csi.go:
// peapod-csi-loop, external-provisioner, external-attacher,
// external-resizer) under the upstream kubelet on peapod (the shared
// cluster).
func TestCSI(t *testing.T) {
	t.Parallel()
	c := cluster(t)
	// One after the other: Dynamic counts the loop devices of all the
	// driver's disks, so no other claim of the class may be attached then.
	t.Run("Dynamic", func(t *testing.T) { testCSIDynamic(t, c) })
	t.Run("Expand", func(t *testing.T) { testCSIExpand(newNSIn(t, c), c) })
}

// testAgentCSI is TestCSI under peapod-agent (TestAgentNode's cluster).
// The agent first publishes what the provisioner needs, as the kubelet
// does on a driver's registration (pkg/volume/csi/nodeinfomanager): its
// CSINode entry (node id, topology keys, volume limit) and the Node's
// topology label; external-provisioner reads both for a
// WaitForFirstConsumer claim ("failed to get selected CSINode").
func testAgentCSI(t *testing.T, c *harness.Cluster) {
	k := &kc{t: t, c: c}
	k.eventually(15*time.Second, "peapod-agent's CSINode entry for "+harness.CSIDriverName+" with its topology key", func() (bool, string) {
		keys, err := k.try("get", "csinode", c.NodeName, "-o", `jsonpath={.spec.drivers[?(@.name=="`+harness.CSIDriverName+`")].topologyKeys}`)
		return err == nil && strings.Contains(keys, harness.CSITopologyKey), fmt.Sprintf("%q %v", keys, err)
	})
	t.Run("Dynamic", func(t *testing.T) { testCSIDynamic(t, c) })
	t.Run("Expand", func(t *testing.T) { testCSIExpand(newNSIn(t, c), c) })
}

// csiSizedClaim: the claim "data" of peapod-loop, %s its request.
const csiSizedClaim = `apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: ` + harness.CSIStorageClass + `
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: %s}}
`

var csiClaim = fmt.Sprintf(csiSizedClaim, "64Mi")

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

// testCSIExpand: online expansion of a mounted volume. A 32Mi claim of
// peapod-loop, used by a running pod that wrote a file, is patched to
// 64Mi; csi-resizer calls ControllerExpandVolume (the disk file and its
// loop device grow) and sets the PV's capacity; the node agent sees the
// claim's NodeResizePending and calls NodeExpandVolume (resize2fs on the
// mounted ext4), then records the new size in the claim's status. The pod
// keeps running throughout, sees the bigger filesystem and its file.
//
// Growing a mounted ext4 needs CAP_SYS_RESOURCE (EXT4_IOC_RESIZE_FS),
// and the driver has this process's capabilities. On a host that
// withholds it the online NodeExpandVolume must fail with the driver's
// reason in the claim's NodeResizeError condition; then the pod is
// replaced, the new stage grows the filesystem offline, the kubelet's
// NodeExpandVolume on the new mount has nothing left to do and completes
// the claim; the test says so in its log.
//
// TestCSI runs it under the upstream kubelet, testAgentCSI under
// peapod-agent (k: a kubectl of a fresh namespace of c).
func testCSIExpand(k *kc, c *harness.Cluster) {
	t := k.t
	const (
		before  = 32 << 20
		after   = 64 << 20
		payload = "written-before-the-expansion"
	)
	online, caps := capSysResource()
	var sc storagev1.StorageClass
	k.getJSON(&sc, "storageclass", harness.CSIStorageClass)
	if sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
		t.Fatalf("StorageClass %s: allowVolumeExpansion %v, want true (the API server refuses a bigger claim otherwise)", sc.Name, sc.AllowVolumeExpansion)
	}

	start := time.Now()
	pod := "a"
	k.apply(fmt.Sprintf(csiSizedClaim, "32Mi"))
	k.apply(fmt.Sprintf(csiPod, pod, busybox, "echo "+payload+" > /data/file && sync && sleep 3600"))
	k.waitReady(pod, 3*time.Minute)
	t.Logf("pod %s Ready %.1fs after the 32Mi claim", pod, time.Since(start).Seconds())

	var pvc corev1.PersistentVolumeClaim
	k.getJSON(&pvc, "pvc", "data")
	pvName := pvc.Spec.VolumeName
	if pvc.Status.Phase != corev1.ClaimBound || pvName == "" {
		t.Fatalf("claim: phase %s, volume %q; want Bound", pvc.Status.Phase, pvName)
	}
	var pv corev1.PersistentVolume
	k.getJSON(&pv, "pv", pvName)
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != harness.CSIDriverName {
		t.Fatalf("PV %s: spec.csi %+v, want driver %s", pvName, pv.Spec.CSI, harness.CSIDriverName)
	}
	if got := pv.Spec.Capacity.Storage().Value(); got != before {
		t.Errorf("PV %s capacity %d before the expansion, want %d", pvName, got, before)
	}
	diskFile := filepath.Join(c.CSIDisksDir(), pv.Spec.CSI.VolumeHandle+".img")
	t.Logf("/data before: %d KiB", k.dfTotalKiB(pod, "/data"))

	k.run("patch", "pvc", "data", "-p", `{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}`)
	patched := time.Now()

	// csi-resizer: ControllerExpandVolume, then the PV's capacity.
	k.eventually(90*time.Second, fmt.Sprintf("PV %s spec.capacity.storage 64Mi (csi-resizer)", pvName), func() (bool, string) {
		var pv corev1.PersistentVolume
		if err := k.tryJSON(&pv, "pv", pvName); err != nil {
			return false, err.Error()
		}
		return pv.Spec.Capacity.Storage().Value() == after, "spec.capacity.storage " + pv.Spec.Capacity.Storage().String()
	})
	t.Logf("PV %s at 64Mi %.1fs after the patch", pvName, time.Since(patched).Seconds())
	if st, err := os.Stat(diskFile); err != nil || st.Size() != after {
		t.Errorf("disk file %s after ControllerExpandVolume: %v (size %v), want %d bytes", diskFile, err, st, after)
	}

	// The node agent's NodeExpandVolume, then status.capacity and the
	// resize status entry gone (NodeResizePending, then InProgress while
	// it works). The kubelet looks at a running pod's volumes again only
	// at its periodic pod sync (60-90 s after the last, jittered), not
	// when the claim changes: 76-83 s here, so 3 min. peapod-agent reads
	// its pods' claims every 5 s.
	const nodeWait = 3 * time.Minute
	claimDone := func() (bool, string) {
		var pvc corev1.PersistentVolumeClaim
		if err := k.tryJSON(&pvc, "pvc", "data"); err != nil {
			return false, err.Error()
		}
		rs, pending := pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage]
		return pvc.Status.Capacity.Storage().Value() == after && !pending,
			fmt.Sprintf("status.capacity.storage %s, allocatedResourceStatuses[storage] %q, conditions %q",
				pvc.Status.Capacity.Storage(), rs, claimConditions(&pvc))
	}
	resized := time.Now()
	if !online {
		k.eventually(nodeWait, "PVC data condition NodeResizeError naming CAP_SYS_RESOURCE (the online NodeExpandVolume, refused: "+caps+")", func() (bool, string) {
			var pvc corev1.PersistentVolumeClaim
			if err := k.tryJSON(&pvc, "pvc", "data"); err != nil {
				return false, err.Error()
			}
			for _, cond := range pvc.Status.Conditions {
				if cond.Type == corev1.PersistentVolumeClaimNodeResizeError && strings.Contains(cond.Message, "CAP_SYS_RESOURCE") {
					return true, ""
				}
			}
			return false, fmt.Sprintf("conditions %q", claimConditions(&pvc))
		})
		t.Logf("online NodeExpandVolume refused (%s) %.1fs after the PV; replacing pod a", caps, time.Since(resized).Seconds())
		refused := time.Now()
		k.run("delete", "pod", pod, "--wait=true", "--timeout=90s")
		pod = "b"
		k.apply(fmt.Sprintf(csiPod, pod, busybox, "sleep 3600"))
		k.waitReady(pod, 3*time.Minute)
		t.Logf("pod b Ready %.1fs after the refusal", time.Since(refused).Seconds())
	}
	k.eventually(nodeWait, "PVC data status.capacity.storage 64Mi and no storage entry in status.allocatedResourceStatuses (NodeExpandVolume done)", claimDone)
	t.Logf("PVC data at 64Mi (node expansion done) %.1fs after the PV, %.1fs after the patch",
		time.Since(resized).Seconds(), time.Since(patched).Seconds())

	// ext4 of 64 MiB: ~60 MiB in df (of 32 MiB: ~28 MiB).
	if kib := k.dfTotalKiB(pod, "/data"); kib <= 48<<10 {
		t.Errorf("/data in pod %s: %d KiB in all after the expansion, want more than %d (48 MiB)", pod, kib, 48<<10)
	} else {
		t.Logf("/data after: %d KiB", kib)
	}
	if got := strings.TrimSpace(k.run("exec", pod, "--", "cat", "/data/file")); got != payload {
		t.Errorf("pod %s: /data/file %q after the expansion, want %q", pod, got, payload)
	}
	if p := k.jsonpath("pod/"+pod, "{.status.phase}"); p != "Running" {
		t.Errorf("pod %s %s after the expansion, want Running", pod, p)
	}

	k.run("delete", "pod", pod, "--wait=true", "--timeout=90s")
	k.run("delete", "pvc", "data", "--wait=true", "--timeout=90s")
	k.eventually(3*time.Minute, "PV "+pvName+" and its disk file gone", func() (bool, string) {
		_, pvErr := k.try("get", "pv", pvName, "-o", "name")
		_, fileErr := os.Stat(diskFile)
		return pvErr != nil && os.IsNotExist(fileErr), fmt.Sprintf("pv: %v, disk file: %v", pvErr == nil, fileErr)
	})
	t.Logf("%.1fs in all", time.Since(start).Seconds())
	if !online {
		// Not a skip: all but the online growth itself ran and was checked.
		t.Logf("the mounted ext4 could not grow online: this host withholds CAP_SYS_RESOURCE (%s); "+
			"csi-resizer's ControllerExpandVolume, the node's refused NodeExpandVolume (NodeResizeError) and the offline growth at the next stage passed", caps)
	}
}

// capSysResource: whether this process (and so the driver the harness
// starts) has CAP_SYS_RESOURCE, and the CapEff/CapBnd lines that say so.
func capSysResource() (bool, string) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err.Error()
	}
	const capSysResource = 24
	have, seen := false, []string{}
	for _, line := range strings.Split(string(b), "\n") {
		name, hex, ok := strings.Cut(line, ":")
		if !ok || (name != "CapEff" && name != "CapBnd") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return false, line
		}
		seen = append(seen, name+" "+strings.TrimSpace(hex))
		if name == "CapEff" {
			have = v&(1<<capSysResource) != 0
		}
	}
	return have, strings.Join(seen, ", ")
}

// claimConditions are pvc's conditions as "Type=Status message".
func claimConditions(pvc *corev1.PersistentVolumeClaim) []string {
	var out []string
	for _, cond := range pvc.Status.Conditions {
		out = append(out, string(cond.Type)+"="+string(cond.Status)+" "+cond.Message)
	}
	return out
}

// tryJSON is getJSON that returns its error (for polling).
func (k *kc) tryJSON(v any, args ...string) error {
	out, err := k.try(append(append([]string{"get"}, args...), "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

// dfTotalKiB is the size of the filesystem at dir in pod, from `df -k`
// in its container (the 1K-blocks column).
func (k *kc) dfTotalKiB(pod, dir string) int64 {
	k.t.Helper()
	out := k.run("exec", pod, "--", "df", "-k", dir)
	lines := strings.SplitN(strings.TrimSpace(out), "\n", 2)
	// A long device name may wrap the row: its last five fields are
	// 1K-blocks, Used, Available, Use%, Mounted on.
	var f []string
	if len(lines) == 2 {
		f = strings.Fields(lines[1])
	}
	if len(f) < 5 || f[len(f)-1] != dir {
		k.t.Fatalf("df -k %s in pod %s: no row for %s:\n%s", dir, pod, dir, out)
	}
	kib, err := strconv.ParseInt(f[len(f)-5], 10, 64)
	if err != nil {
		k.t.Fatalf("df -k %s in pod %s: 1K-blocks %q: %v", dir, pod, f[len(f)-5], err)
	}
	return kib
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
