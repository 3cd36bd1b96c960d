package harness

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"peapod/volumes/disk"
)

// Dynamic provisioning with peapod-csi-loop (Options.CSISidecars; the
// single node only): four more host processes beside the control plane,
// started by PID and stopped by PID like every component, the CSIDriver,
// the StorageClass and the sidecars' RBAC.
//
//	PVC (class peapod-loop) ─ pod scheduled ─▶ csi-provisioner ─ CreateVolume ─┐
//	   (WaitForFirstConsumer: the scheduler picks the node first)               │
//	PV (spec.csi, nodeAffinity on the driver's topology segment) ◀─────────────┘
//	pod on the node ─▶ attach/detach controller ─▶ VolumeAttachment
//	   ─▶ csi-attacher ─ ControllerPublishVolume (losetup) ─▶ status.attached
//	   ─▶ the node agent (kubelet, or peapod-agent) ─ NodeStage (mkfs, mount)
//	      ─ NodePublish (bind mount into the pod)
//	PVC spec.resources grows ─▶ csi-resizer ─ ControllerExpandVolume (truncate,
//	   loop capacity) ─▶ PV spec.capacity; PVC NodeResizePending
//	   ─▶ the node agent ─ NodeExpandVolume (resize2fs, online) ─▶ PVC status.capacity
//
//   - peapod-csi-loop (bin/peapod-csi-loop, `make build`): the driver, its
//     Identity, Controller and Node services on DIR/csi-loop/csi.sock, its
//     disk files in DIR/csi-loop/disks, node id = the node's name, and its
//     own plugin registration socket in the node agent's plugins registry:
//     the kubelet's <--root-dir>/plugins_registry (DIR/kubelet/root/…), or
//     peapod-agent's default <root>/plugins_registry
//     (DIR/peapod-agent/root/…). The node agent registers it from there
//     (the kubelet writes the CSINode and the node's topology label).
//   - csi-provisioner (external-provisioner v6), csi-attacher
//     (external-attacher v4) and csi-resizer (external-resizer v2), from
//     hack/cluster/build.sh csi-sidecars, on the driver's socket (the
//     driver serves its controller service on the node, and the disks are
//     local to it, so one socket serves every role, as a single-node
//     hostpath deployment does), each with a client certificate of its own
//     (users csi-provisioner, csi-attacher, csi-resizer) bound to the
//     ClusterRole upstream's deploy/kubernetes/rbac.yaml gives its service
//     account. Their namespaced Roles there are for leader-election Leases
//     and storage capacity objects: one instance each, no leader election
//     (the sidecars' default), no --enable-capacity, so neither is needed.
//   - The CSIDriver loop.csi.peapod.io (attachRequired: the attach is the
//     losetup, and with it the attach/detach controller makes a
//     VolumeAttachment; podInfoOnMount false) and the StorageClass
//     peapod-loop, the default class, volumeBindingMode
//     WaitForFirstConsumer, allowVolumeExpansion (without it the API
//     server refuses a bigger request on a bound claim; csi-resizer and
//     the node agent do the growing): a disk is a file on one node (the driver
//     reports the topology segment topology.loop.csi.peapod.io/node), so
//     it must be made where its first pod is scheduled; with Immediate
//     binding the provisioner would pick a node before any pod had one.
//     fstype ext4 (the driver's only filesystem) goes into each PV's
//     spec.csi.fsType, so the kubelet applies a pod's fsGroup to it (the
//     CSIDriver's default fsGroupPolicy, ReadWriteOnceWithFSType).
//
// Down stops the four processes before the node agent; after the mounts
// under the dir are gone it detaches every loop device whose backing file
// is in DIR/csi-loop/disks (an attach the attacher or the node agent made
// and nothing undid), and the disks go with the dir.

// The driver's name and topology key (loop.DriverName, loop.TopologyKey:
// the harness does not link the driver) and the StorageClass's name.
const (
	CSIDriverName   = "loop.csi.peapod.io"
	CSITopologyKey  = "topology.loop.csi.peapod.io/node"
	CSIStorageClass = "peapod-loop"
)

// csiComponents are the CSI processes, in the order Down stops them.
var csiComponents = []string{"csi-resizer", "csi-attacher", "csi-provisioner", "peapod-csi-loop"}

// csiSidecarNames are the sidecars of Options.CSISidecars, each a client
// certificate user of the same name.
var csiSidecarNames = []string{"csi-provisioner", "csi-attacher", "csi-resizer"}

// csiSteps are Up's steps for CSI: none without Options.CSISidecars or on
// a multi-node cluster.
func (c *Cluster) csiSteps() []struct {
	name string
	fn   func(context.Context) error
} {
	if c.opts.CSISidecars == "" || c.opts.Hosts > 0 {
		return nil
	}
	return []struct {
		name string
		fn   func(context.Context) error
	}{{"CSI (peapod-csi-loop, " + strings.Join(csiSidecarNames, ", ") + ", StorageClass " + CSIStorageClass + ")", c.startCSI}}
}

func (c *Cluster) csiDir() string { return filepath.Join(c.Dir, "csi-loop") }

// CSIDisksDir is where peapod-csi-loop keeps its disk files
// (<volume id>.img).
func (c *Cluster) CSIDisksDir() string { return filepath.Join(c.csiDir(), "disks") }

// KubeletRootDir is the kubelet's --root-dir ("" on a peapod-agent node):
// e2e.test's --kubelet-root-dir, for the storage specs that look into it.
func (c *Cluster) KubeletRootDir() string {
	if !c.kubeletNode() || len(c.Hosts) > 0 {
		return ""
	}
	// kubeletConfig.write: --root-dir=<dir>/root, dir DIR/kubelet.
	return filepath.Join(c.Dir, "kubelet", "root")
}

// csiRegistrationDir is the node agent's plugins registry dir.
func (c *Cluster) csiRegistrationDir() string {
	if root := c.KubeletRootDir(); root != "" {
		return filepath.Join(root, "plugins_registry")
	}
	// peapod-agent's [agent] plugins_registry_dir default: <root>/plugins_registry.
	return filepath.Join(c.Dir, NodePeapodAgent, "root", "plugins_registry")
}

func (c *Cluster) startCSI(ctx context.Context) error {
	driver := filepath.Join(c.Repo, "bin", "peapod-csi-loop")
	sidecars := map[string]string{}
	bins := []string{driver}
	for _, name := range csiSidecarNames {
		bins = append(bins, filepath.Join(c.opts.CSISidecars, name))
	}
	for _, name := range bins {
		if _, err := os.Stat(name); err != nil {
			return fmt.Errorf("%w (make build; hack/cluster/build.sh csi-sidecars)", err)
		}
		sidecars[filepath.Base(name)] = name
	}
	if err := os.MkdirAll(c.CSIDisksDir(), 0o700); err != nil {
		return err
	}
	if err := c.makeCSIPKI(); err != nil {
		return err
	}
	cmd := c.KubectlCmd(ctx, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(csiObjects)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply (CSIDriver, StorageClass, the sidecars' RBAC): %w: %s", err, out)
	}
	sock := filepath.Join(c.csiDir(), "csi.sock")
	drv, err := c.start("peapod-csi-loop", driver, []string{
		"--endpoint=unix://" + sock, "--node-id=" + c.NodeName, "--root=" + c.CSIDisksDir(),
		"--registration-dir=" + c.csiRegistrationDir(), "--v=2",
	}, nil)
	if err != nil {
		return err
	}
	if err := waitFile(ctx, drv, sock, 30*time.Second); err != nil {
		return err
	}
	// Every sidecar talks to the driver's socket with its own client
	// certificate. An explicit --timeout: the default 10s is each one's
	// CSI call deadline (CreateVolume, ControllerPublishVolume,
	// ControllerExpandVolume through --resize-timeout), enough for a
	// truncate or a losetup, but not on a busy machine. csi-resizer keeps
	// upstream's --handle-volume-inuse-error (it watches pods: the RBAC
	// below has them); the driver expands online, so it never has to wait
	// for a claim's pods to go. Each says so in its log once it has probed
	// the driver and asked its name (the resizer's controller starts only
	// for a driver that can expand).
	ready := map[string]string{
		"csi-provisioner": "Started provisioner controller",
		"csi-attacher":    "Starting CSI attacher",
		"csi-resizer":     "Starting external resizer",
	}
	started := map[string]*component{}
	for _, name := range csiSidecarNames {
		p, err := c.start(name, sidecars[name], []string{
			"--csi-address=" + sock, "--kubeconfig=" + c.csiKubeconfig(name), "--timeout=30s", "--v=2",
		}, nil)
		if err != nil {
			return err
		}
		started[name] = p
	}
	for _, name := range csiSidecarNames {
		if err := waitLog(ctx, started[name], ready[name], 60*time.Second); err != nil {
			return err
		}
	}
	if !c.kubeletNode() {
		return nil
	}
	// The kubelet's plugin watcher found the registration socket, called
	// NodeGetInfo and wrote the CSINode (with the topology key the
	// provisioner needs for WaitForFirstConsumer).
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := c.kubectl(ctx, "get", "csinode", c.NodeName, "-o", `jsonpath={.spec.drivers[?(@.name=="`+CSIDriverName+`")].topologyKeys}`)
		if err == nil && strings.Contains(out, CSITopologyKey) {
			return nil
		}
		last = out
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("CSINode %s has no driver %s with its topology key within 60s (last: %s); peapod-csi-loop's log ends:\n%s",
		c.NodeName, CSIDriverName, last, tail(drv.Log, 20))
}

func (c *Cluster) csiKubeconfig(user string) string {
	return filepath.Join(c.Dir, user+".kubeconfig")
}

// makeCSIPKI issues the sidecars' client certificates with the cluster CA
// (read back from pki/) and writes their kubeconfigs.
func (c *Cluster) makeCSIPKI() error {
	ca, err := loadCA(filepath.Join(c.Dir, "pki"), "ca")
	if err != nil {
		return err
	}
	for _, user := range csiSidecarNames {
		if err := ca.issue(filepath.Join(c.Dir, "pki"), certSpec{name: user, cn: user, client: true}); err != nil {
			return err
		}
		kc := kubeconfig(c.apiURL(), c.pki("ca.crt"), c.pki(user+".crt"), c.pki(user+".key"), user)
		if err := os.WriteFile(c.csiKubeconfig(user), []byte(kc), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// loadCA reads back a CA newCA wrote.
func loadCA(dir, name string) (*certAuthority, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s/%s.{crt,key}: no PEM block", dir, name)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	return &certAuthority{cert: cert, key: key}, nil
}

// csiObjects: the CSIDriver, the StorageClass and the sidecars' RBAC
// (upstream's ClusterRoles: external-provisioner v6.4.0,
// external-attacher v4.13.0 and external-resizer v2.3.0
// deploy/kubernetes/rbac.yaml, bound to the users of their client
// certificates instead of service accounts).
const csiObjects = `apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: ` + CSIDriverName + `
spec:
  attachRequired: true
  podInfoOnMount: false
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ` + CSIStorageClass + `
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: ` + CSIDriverName + `
parameters:
  csi.storage.k8s.io/fstype: ext4
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: external-provisioner-runner
rules:
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "update"]
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "watch", "create", "update", "patch"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["get", "list", "watch", "update"]
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshotcontents"]
  verbs: ["get", "list"]
- apiGroups: ["storage.k8s.io"]
  resources: ["csinodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["volumeattachments"]
  verbs: ["get", "list", "watch"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: csi-provisioner-role
subjects:
- {kind: User, name: csi-provisioner, apiGroup: rbac.authorization.k8s.io}
roleRef:
  kind: ClusterRole
  name: external-provisioner-runner
  apiGroup: rbac.authorization.k8s.io
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: external-attacher-runner
rules:
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["csinodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["volumeattachments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["volumeattachments/status"]
  verbs: ["patch"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: csi-attacher-role
subjects:
- {kind: User, name: csi-attacher, apiGroup: rbac.authorization.k8s.io}
roleRef:
  kind: ClusterRole
  name: external-attacher-runner
  apiGroup: rbac.authorization.k8s.io
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: external-resizer-runner
rules:
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "watch", "create", "update", "patch"]
- apiGroups: ["storage.k8s.io"]
  resources: ["volumeattributesclasses"]
  verbs: ["get", "list", "watch"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: csi-resizer-role
subjects:
- {kind: User, name: csi-resizer, apiGroup: rbac.authorization.k8s.io}
roleRef:
  kind: ClusterRole
  name: external-resizer-runner
  apiGroup: rbac.authorization.k8s.io
`

// waitFile waits until path exists (a socket comp serves), or comp dies.
func waitFile(ctx context.Context, comp *component, path string, timeout time.Duration) error {
	return comp.waitUntil(ctx, timeout, 100*time.Millisecond, "no "+path, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
}

// waitLog waits until comp's log has line, or comp dies.
func waitLog(ctx context.Context, comp *component, line string, timeout time.Duration) error {
	return comp.waitUntil(ctx, timeout, 200*time.Millisecond, fmt.Sprintf("no %q in its log", line), func() bool {
		b, err := os.ReadFile(comp.Log)
		return err == nil && strings.Contains(string(b), line)
	})
}

// waitUntil polls cond every period until it holds; it fails when comp
// exits, ctx ends or timeout passes ("<comp>: <missing> within <timeout>"),
// with the end of comp's log.
func (comp *component) waitUntil(ctx context.Context, timeout, period time.Duration, missing string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		if !comp.alive() {
			return fmt.Errorf("%s exited; its log ends:\n%s", comp.Name, tail(comp.Log, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(period):
		}
	}
	return fmt.Errorf("%s: %s within %s; its log ends:\n%s", comp.Name, missing, timeout, tail(comp.Log, 20))
}

// stopCSI stops the sidecars and the driver (Down, before the node agent).
func (c *Cluster) stopCSI(note func(error)) {
	for _, name := range csiComponents {
		if p := c.component(name); p != nil {
			note(p.stop(10 * time.Second))
		}
	}
}

// detachCSIDisks detaches every loop device backed by a file of the
// driver's disks dir (Down, once the mounts under the dir are gone).
func (c *Cluster) detachCSIDisks() error {
	devs, err := c.csiLoopDevices()
	if err != nil {
		return err
	}
	var errs []error
	for _, li := range devs {
		c.logf("down: detaching %s (%s)", li.Device, li.BackingFile)
		if err := disk.LoopDetach(li.Device); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CSILoopDevices lists the loop devices backed by the driver's disk files
// ("/dev/loopN FILE"; a test's leak check).
func (c *Cluster) CSILoopDevices() ([]string, error) {
	devs, err := c.csiLoopDevices()
	var out []string
	for _, li := range devs {
		out = append(out, li.Device+" "+li.BackingFile)
	}
	return out, err
}

// csiLoopDevices are the attached loop devices whose backing file (even
// deleted) was in the driver's disks dir. sysfs shows the path with the
// symlinks resolved: so is the dir here.
func (c *Cluster) csiLoopDevices() ([]disk.LoopInfo, error) {
	root := c.Dir
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	dir := filepath.Join(root, "csi-loop", "disks")
	devs, err := disk.LoopDevices()
	if err != nil {
		return nil, err
	}
	var out []disk.LoopInfo
	for _, li := range devs {
		if filepath.Dir(li.BackingFile) == dir {
			out = append(out, li)
		}
	}
	return out, nil
}
