// Package loop is peapod-csi-loop, a CSI driver (spec v1) for file-backed
// ext4 disks on loop devices: the Identity, Controller and Node services on
// one unix socket, plus a registration socket for the kubelet's plugin
// watcher (k8s.io/kubelet/pkg/apis/pluginregistration/v1), since the
// node-driver-registrar sidecar is not available here.
//
// The driver name is loop.csi.peapod.io (DriverName): a StorageClass's
// provisioner and a PersistentVolume's spec.csi.driver use it.
//
// A volume is one sparse file, <root>/<volume id>.img. The volume id is the
// CreateVolume name when that is a plain file name (names from
// external-provisioner are pvc-<uuid>), else "n-" and the name's SHA-256;
// so CreateVolume is idempotent by name without a metadata store. Volume
// ids must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, which keeps every id a
// plain file name inside root. The disk is local to this node: the driver
// reports the topology segment topology.loop.csi.peapod.io/node=<node id>.
//
// The driver keeps no state of its own. Each answer is read from the
// kernel, so a restarted driver (or a kill -9) picks up where it was:
//
//	                 CreateVolume                ControllerPublishVolume
//	(absent) ───────────────────────► CREATED ───────────────────────────► ATTACHED ──┐
//	         ◄─────────────────────── (file)  ◄─────────────────────────── (losetup)  │ NodeStageVolume
//	                 DeleteVolume              ControllerUnpublishVolume              │ (mkfs on first use,
//	                                                                                   ▼  else e2fsck -p; mount)
//	   PUBLISHED (bind mount at    ◄── NodePublishVolume ──   STAGED (ext4 at the staging path)
//	   each target path, ro when   ─── NodeUnpublishVolume ─►
//	   asked)                                                  NodeUnstageVolume → ATTACHED
//
// The states, as the kernel shows them:
//
//   - CREATED: the file exists; its size is the capacity.
//   - ATTACHED: /sys/block/loopN/loop/backing_file names the file; the
//     device path goes to the CO in publish_context["devicePath"].
//   - STAGED / PUBLISHED: /proc/self/mountinfo has the loop device at the
//     staging path / a target path.
//
// Each RPC checks what the kernel already has first, so all of them are
// idempotent, and they are serialised per volume id. Paths from requests are
// hostile: ids never leave root, target and staging paths must be absolute
// and clean, and a devicePath in publish_context is used only when it is a
// loop device backed by the volume's own file.
//
// Files: driver.go (options, serving, locks), identity.go, registration.go,
// controller.go (create, delete, list, capacity, validate),
// controller_publish.go (attach, detach, expand), node_stage.go,
// node_publish.go, node.go (info, capabilities, stats, expand),
// validate.go (request checks shared by the services).
package loop
