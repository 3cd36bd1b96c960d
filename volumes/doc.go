// Package volumes prepares pods' volumes on the node, in the kubelet's two
// phases — attach (the storage appears on the node) and mount (formatted if
// needed, mounted at <PodsDir>/<uid>/volumes/<plugin>/<name>) — and hands
// the agent the CRI mounts, subPaths included. A reconciler (Run) keeps the
// actual state of the node equal to the desired state (pods and their
// volumes), and rebuilds the actual state after a restart from StateDir,
// /proc/self/mountinfo and the loop devices' backing files (inode and
// device, not just the path). A pod rebuilt after a restart is HELD (its
// mounts kept as they are, nothing set up or released for it) until the
// agent, knowing all its pods, calls ReleaseOrphans: wanted pods are claimed
// as they are, every other pod's volumes are torn down, and devices no pod
// needs are released (restart.go).
//
// Two small state machines, one per device and one per pod volume. A device
// is node-wide and shared by every pod volume naming it (an attachable flex
// volume such as peapod/loop, a local block device):
//
//	           attach (+waitforattach)          mountdevice (format if empty)
//	DETACHED ───────────────────────► ATTACHED ───────────────────────────► MOUNTED (global path)
//	         ◄─────────────────────── ATTACHED ◄─────────────────────────── MOUNTED
//	           detach                             unmountdevice
//	                                  (only when no pod, desired or terminating, names it)
//
// A pod volume:
//
//	           SetupPod                    [device MOUNTED] setup: mkdir, tmpfs,
//	(absent) ──────────► DESIRED ───────────────────────────────────────────► READY ──┐ objects changed, or each
//	                        │            bind mount / driver mount / project     ▲    │ minute for a volume with a
//	                        │            then the pod's fsGroup                  │    │ service account token:
//	                        │                                                    └────┘ re-project (..data swap)
//	                        │ TeardownPod (from DESIRED or READY)
//	                        ▼
//	                   TERMINATING ── teardown: subPath unmounts, unmount, rm dir ──► (absent); then
//	                                                                                 unused devices are released
//
// Every arrow is one idempotent operation: it first checks whether the
// kernel already has the result (a mount at the target, a loop device backed
// by the image) and adopts it. A failed operation undoes what it did itself
// (a tmpfs it mounted, a dir it made, an attach whose waitforattach failed),
// leaves the state where it was, and is retried by the reconciler after a
// per-operation exponential back-off (500ms doubling to 2m2s). All
// operations run under one Manager lock; Collect for metrics does not take it.
//
// Files: manager.go (API), spec.go (pod volumes → volumeSpecs),
// binding.go (PVC → PV), reconciler.go (the state machines, back-off,
// reconstruction), restart.go (orphans after a restart, stale loop
// devices), state.go (records), emptydir.go (emptyDir, and the one
// the projected kinds are wrapped in), atomic_writer.go + projection.go
// (configMap, secret, downwardAPI, projected; serviceAccountToken sources
// from Options.Tokens), ownership.go (the pod's fsGroup on its volumes),
// hostpath.go, subpath.go,
// flexvolume.go (driver protocol, built-in peapod/loop), csi.go (CSI
// volumes: attach, stage, publish through drivers registered with
// csiplugin/, the plugin watcher; its own state machine), attach.go (node
// mode: CSI attach is the attach/detach controller's; wait for the
// VolumeAttachment; status.volumesInUse), expand.go (online expansion:
// NodeExpandVolume, the node half), loop.go and
// mount.go (thin wrappers over disk/: loop ioctls, mountinfo, mount helpers,
// format; shared with the CSI driver csi/loop), metrics.go.
package volumes
