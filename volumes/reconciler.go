package volumes

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// Per-operation exponential back-off, the kubelet's numbers: 500ms doubling
// up to 2m2s, reset by a success.
var (
	initialBackoff = 500 * time.Millisecond
	maxBackoff     = 2*time.Minute + 2*time.Second
)

type backoff struct {
	next  time.Time
	delay time.Duration
	err   error
}

type backoffError struct {
	err   error
	until time.Time
}

func (e *backoffError) Error() string {
	return fmt.Sprintf("%v (retry in %s)", e.err, time.Until(e.until).Round(time.Millisecond))
}
func (e *backoffError) Unwrap() error { return e.err }

// BackingOff says the operation was not tried this time: callers outside
// the package report a failure once, not at every pass.
func (e *backoffError) BackingOff() bool { return true }

// do runs one operation unless it is backing off, counts it and records
// the back-off on failure.
func (m *Manager) do(key, op, plugin string, fn func() error) error {
	if b := m.backoffs[key]; b != nil && time.Now().Before(b.next) {
		return &backoffError{err: b.err, until: b.next}
	}
	err := fn()
	if op != "" {
		m.metrics.op(op, plugin, err)
	}
	if err == nil {
		delete(m.backoffs, key)
		return nil
	}
	b := m.backoffs[key]
	if b == nil {
		b = &backoff{delay: initialBackoff}
		m.backoffs[key] = b
	} else {
		b.delay *= 2
		if b.delay > maxBackoff {
			b.delay = maxBackoff
		}
	}
	b.err, b.next = err, time.Now().Add(b.delay)
	klog.InfoS("volume operation failed", "op", op, "key", key, "err", err, "retryIn", b.delay)
	return err
}

// reconcileLocked is one pass of the reconciler. Decide-then-act per
// object: (1) finish teardowns, (2) release devices no pod names,
// (3) bring desired volumes up (attach → mountdevice → setup), re-projecting
// ConfigMap/Secret content when the objects changed.
func (m *Manager) reconcileLocked(ctx context.Context) {
	for uid, pe := range m.pods {
		if !pe.terminating {
			continue
		}
		err := m.do("teardown/"+string(uid), "teardown", "pod", func() error { return m.teardownPodVolumes(ctx, pe) })
		if err == nil {
			delete(m.pods, uid)
			if err := os.Remove(m.podRecordPath(string(uid))); err != nil && !os.IsNotExist(err) {
				klog.ErrorS(err, "remove pod record", "pod", uid)
			}
		}
	}

	used := map[string]bool{}
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Device != "" {
				used[vs.Device] = true
			}
		}
	}
	for key, d := range m.devices {
		if !used[key] {
			if m.releaseDevice(ctx, d) == nil {
				delete(m.devices, key)
			}
		}
	}
	m.releaseCSI(ctx)
	// Before anything is staged: a new pod's volumes are reported in use
	// first (attach.go).
	m.updateInUseLocked()

	for _, pe := range m.pods {
		if pe.terminating || pe.held {
			continue
		}
		for _, vs := range pe.volumes {
			st := pe.state[vs.Name]
			if st == nil {
				st = &volState{}
				pe.state[vs.Name] = st
			}
			st.err = m.setupVolume(ctx, pe, vs, st)
		}
	}
	m.updateInUseLocked()
	m.metrics.snapshot(m.pods)
}

// setupVolume walks one volume up its state machine as far as it can.
func (m *Manager) setupVolume(ctx context.Context, pe *podEntry, vs *volumeSpec, st *volState) error {
	if vs.Kind == kindCSI {
		return m.setupCSIVolume(ctx, pe, vs, st)
	}
	if vs.Device != "" {
		d := m.ensureDevice(vs, !pe.fromRecord)
		if err := m.checkDevice(d, vs.Plugin); err != nil {
			st.ready = false // whatever is mounted is not known to be the volume's
			return err
		}
		if !d.Attached {
			if err := m.do("attach/"+d.Key, "attach", vs.Plugin, func() error { return m.attach(ctx, d) }); err != nil {
				return fmt.Errorf("attach: %w", err)
			}
		}
		if !d.Mounted {
			if err := m.do("mountdevice/"+d.Key, "mount_device", vs.Plugin, func() error { return m.mountDevice(ctx, d) }); err != nil {
				return fmt.Errorf("mount device: %w", err)
			}
		}
	}
	if st.ready && !m.reprojectDue(vs, st) {
		return nil
	}
	op := "setup"
	if st.ready {
		op = "update"
	}
	key := "setup/" + string(pe.pod.UID) + "/" + vs.Name
	return m.do(key, op, vs.Plugin, func() error {
		p, err := m.setupPodVolume(ctx, pe, vs)
		if err != nil {
			return err
		}
		st.ready, st.hostPath, st.gen, st.projected = true, p, m.objsGen, time.Now()
		return nil
	})
}

// reprojectDue says whether a ready projection is written again: when the
// objects changed since it was written, or, for one carrying a service
// account token, each tokenResyncPeriod, so the token is renewed well before
// it expires (10 minutes at the shortest). The token source decides when a
// new token is actually requested, and the atomicWriter leaves the volume
// as it is when nothing changed.
func (m *Manager) reprojectDue(vs *volumeSpec, st *volState) bool {
	if !vs.projection() {
		return false
	}
	if st.gen < m.objsGen {
		return true
	}
	return vs.hasToken() && time.Since(st.projected) >= tokenResyncPeriod
}

// ensureDevice returns the device a volume names, creating its state on
// first sight and adopting what the kernel already has: a loop device
// backed by the image, a mount at the global path. A volume resolved since
// the restart (current) whose PV names another disk image than the device
// was made for gets a new device state; the old one's loop devices are
// stale. A volume from a record does not: the PV may have moved on.
func (m *Manager) ensureDevice(vs *volumeSpec, current bool) *deviceState {
	old := m.devices[vs.Device]
	if old != nil && (!current || !loopImageChanged(old, vs)) {
		return old
	}
	d := &deviceState{deviceRecord: deviceRecord{Key: vs.Device, Kind: vs.Kind, GlobalPath: vs.GlobalPath, ReadOnly: vs.ReadOnly}}
	switch vs.Kind {
	case kindFlex:
		d.Driver, d.Options, d.FSType, d.SecretRef = vs.Flex.Driver, vs.Flex.Options, vs.Flex.FSType, vs.Flex.SecretRef
		d.ReadOnly = vs.Flex.ReadOnly
	case kindLocal:
		d.LocalPath = vs.Local.Path
		if vs.Local.FSType != nil {
			d.FSType = *vs.Local.FSType
		}
		d.Attached, d.DevicePath = true, vs.Local.Path // nothing to attach
	}
	if old != nil {
		// What the old image is attached and mounted as is stale now.
		klog.InfoS("The volume names another disk image than its loop device holds; the old device will be released",
			"volume", vs.Device, "image", d.Options[loopImageOption], "previousImage", old.Options[loopImageOption])
		d.formerImages = append(slices.Clone(old.formerImages), old.Options[loopImageOption])
	}
	m.adoptDevice(d)
	if old != nil {
		for _, li := range old.stale {
			if !slices.ContainsFunc(d.stale, func(x loopInfo) bool { return x.Device == li.Device }) {
				d.stale = append(d.stale, li)
			}
		}
	}
	m.devices[d.Key] = d
	return d
}

// adoptDevice fills in what the kernel says about a device. A peapod/loop
// device is adopted only when it holds the very file the volume names
// (inode and device, not just the path); the loop devices of the volume
// that hold another file are stale (restart.go), and so is a global mount
// of theirs.
func (m *Manager) adoptDevice(d *deviceState) {
	if d.Driver == loopDriverName {
		v := m.inspectLoop(d)
		d.stale, d.inspectErr = v.stale, v.err
		image := d.Options[loopImageOption]
		switch {
		case v.good != nil:
			klog.InfoS("adopted loop device", "device", v.good.Device, "image", image)
			m.metrics.op("attach", flexPluginPrefix+loopDriverName, errAdopted)
			d.Attached, d.DevicePath = true, v.good.Device
		default:
			d.Attached, d.DevicePath = false, ""
		}
		if v.err != nil {
			klog.InfoS("Cannot tell whether the loop devices of a volume hold the file it names; examined again before use", "volume", d.Key, "image", image, "devices", len(v.stale), "err", v.err)
		} else {
			for _, li := range v.stale {
				klog.InfoS("Loop device does not hold the file the volume names; it will be released", "device", li.Device,
					"backingFile", li.BackingFile, "deleted", li.Deleted, "inode", li.Inode, "image", image, "volume", d.Key)
			}
		}
	}
	ms, _ := mountsAt(d.GlobalPath)
	if len(ms) > 0 && !slices.ContainsFunc(d.stale, func(li loopInfo) bool { return loopNum(li) == devNum{ms[len(ms)-1].Major, ms[len(ms)-1].Minor} }) {
		if !d.Mounted {
			klog.InfoS("adopted device mount", "path", d.GlobalPath)
		}
		d.Mounted = true
	} else {
		d.Mounted = false
	}
}

func (m *Manager) driverOptions(d *deviceRecord) (map[string]string, error) {
	rw := "rw"
	if d.ReadOnly {
		rw = "ro"
	}
	extra := map[string]string{optFSType: d.FSType, optReadWrite: rw, optPVOrVolName: deviceVolumeName(d.Key)}
	if d.SecretRef != nil {
		s := m.objs.Secret(d.SecretRef.Namespace, d.SecretRef.Name)
		if s == nil {
			return nil, fmt.Errorf("flexVolume secret %s/%s not found", d.SecretRef.Namespace, d.SecretRef.Name)
		}
		for k, v := range secretData(s) {
			extra[optSecretPrefix+k] = base64.StdEncoding.EncodeToString(v)
		}
	}
	out := map[string]string{}
	for k, v := range d.Options {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out, nil
}

// attach: driver attach, then waitforattach; "Not supported" keeps the
// device path as it is (the kubelet's attacher defaults).
func (m *Manager) attach(ctx context.Context, d *deviceState) error {
	drv, _, err := m.flex.get(ctx, d.Driver)
	if err != nil {
		return err
	}
	opts, err := m.driverOptions(&d.deviceRecord)
	if err != nil {
		return err
	}
	js := flexOptionsJSON(opts, nil)
	dev := ""
	r, err := drv.call(ctx, "attach", js, m.nodeName)
	switch {
	case errors.Is(err, errFlexNotSupported):
	case err != nil:
		return err
	default:
		dev = r.Device
	}
	r, err = drv.call(ctx, "waitforattach", dev, js)
	switch {
	case errors.Is(err, errFlexNotSupported):
	case err != nil:
		// Leave nothing half-done: undo the attach.
		if _, derr := drv.call(ctx, "detach", m.detachArg(d, dev), m.nodeName); derr != nil && !errors.Is(derr, errFlexNotSupported) {
			klog.ErrorS(derr, "detach after failed waitforattach", "device", d.Key)
		}
		return err
	default:
		if r.Device != "" {
			dev = r.Device
		}
	}
	d.Attached, d.DevicePath = true, dev
	if err := m.saveDevice(d); err != nil {
		return err
	}
	return nil
}

// detachArg: the kubelet passes the volume name; the built-in loop driver
// takes the device it attached, so it never has to guess from a name.
func (m *Manager) detachArg(d *deviceState, dev string) string {
	if d.Driver == loopDriverName {
		return dev
	}
	return deviceVolumeName(d.Key)
}

// mountDevice mounts the device at its global path: the driver's
// mountdevice, or format-if-empty and mount. A failure removes the dir.
func (m *Manager) mountDevice(ctx context.Context, d *deviceState) error {
	if ok, _ := isMountPoint(d.GlobalPath); ok {
		d.Mounted = true
		return nil
	}
	if err := os.MkdirAll(d.GlobalPath, 0o750); err != nil {
		return err
	}
	err := m.mountDeviceAt(ctx, d)
	if err != nil {
		if ok, _ := isMountPoint(d.GlobalPath); !ok {
			os.Remove(d.GlobalPath)
		}
		return err
	}
	d.Mounted = true
	return nil
}

func (m *Manager) mountDeviceAt(ctx context.Context, d *deviceState) error {
	if d.Kind == kindLocal {
		return formatAndMount(d.DevicePath, d.GlobalPath, d.FSType, d.ReadOnly)
	}
	drv, _, err := m.flex.get(ctx, d.Driver)
	if err != nil {
		return err
	}
	opts, err := m.driverOptions(&d.deviceRecord)
	if err != nil {
		return err
	}
	_, err = drv.call(ctx, "mountdevice", d.GlobalPath, d.DevicePath, flexOptionsJSON(opts, nil))
	if errors.Is(err, errFlexNotSupported) {
		if d.DevicePath == "" {
			return fmt.Errorf("mountdevice not supported by %s and no device path to mount", d.Driver)
		}
		return formatAndMount(d.DevicePath, d.GlobalPath, d.FSType, d.ReadOnly)
	}
	return err
}

// releaseDevice runs unmountdevice and detach for a device no pod names.
func (m *Manager) releaseDevice(ctx context.Context, d *deviceState) error {
	plugin := flexPluginPrefix + d.Driver
	if d.Kind == kindLocal {
		plugin = "kubernetes.io/local-volume"
	}
	if len(d.stale) > 0 {
		if err := m.do("stale/"+d.Key, "detach", plugin, func() error { return m.releaseStale(d) }); err != nil {
			return err
		}
	}
	if mounted, _ := isMountPoint(d.GlobalPath); mounted || d.Mounted {
		err := m.do("unmountdevice/"+d.Key, "unmount_device", plugin, func() error {
			if d.Kind == kindFlex {
				drv, _, err := m.flex.get(ctx, d.Driver)
				if err != nil {
					return err
				}
				if _, err := drv.call(ctx, "unmountdevice", d.GlobalPath); err != nil && !errors.Is(err, errFlexNotSupported) {
					return err
				}
			}
			return unmountAll(d.GlobalPath)
		})
		if err != nil {
			return err
		}
	}
	d.Mounted = false
	if err := os.Remove(d.GlobalPath); err != nil && !os.IsNotExist(err) {
		klog.ErrorS(err, "remove global mount dir", "path", d.GlobalPath)
	}
	if d.Kind == kindFlex && d.Attached {
		err := m.do("detach/"+d.Key, "detach", plugin, func() error {
			drv, _, err := m.flex.get(ctx, d.Driver)
			if err != nil {
				return err
			}
			if _, err := drv.call(ctx, "detach", m.detachArg(d, d.DevicePath), m.nodeName); err != nil && !errors.Is(err, errFlexNotSupported) {
				return err
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	d.Attached, d.DevicePath = false, ""
	return m.saveDevice(d)
}

// setupPodVolume makes one volume ready at its pod dir and returns the path
// containers get. Whatever it creates it removes again on failure.
func (m *Manager) setupPodVolume(ctx context.Context, pe *podEntry, vs *volumeSpec) (string, error) {
	pod := pe.pod
	if vs.Kind == kindHostPath {
		if err := checkHostPathType(vs.HostPath.Path, vs.HostPath.Type); err != nil {
			return "", err
		}
		return vs.HostPath.Path, nil
	}
	dir := m.volumeDir(pod.UID, vs)

	var payload map[string]fileProjection
	if vs.projection() {
		var err error
		if payload, err = m.payload(ctx, pod, vs); err != nil {
			return "", err
		}
	}

	created := false
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		created = true
	}
	undo := func() {
		if created {
			unmountAll(dir)
			removeDirSafely(dir)
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	mounted, err := isMountPoint(dir)
	if err != nil {
		return "", err
	}

	switch vs.Kind {
	case kindEmptyDir:
		var size int64
		if sl := vs.Source.EmptyDir.SizeLimit; sl != nil && !sl.IsZero() {
			size = sl.Value()
		}
		mountedNow, err := setupEmptyDir(dir, vs.onTmpfs(), size, mounted)
		if err != nil {
			undo()
			return "", err
		}
		if own := ownershipFor(pod, vs, false); own != nil {
			// The kubelet sets an emptyDir up once (its ready file) and
			// walks it then. Here a restarted agent comes again, when the
			// files are the pod's: walk only a root that does not match.
			own.onRootMismatch = !created && !mountedNow
			if err := own.change(dir); err != nil { // ignored by the kubelet too
				klog.ErrorS(err, "fsGroup on emptyDir", "path", dir)
			}
		}
	case kindConfigMap, kindSecret, kindDownwardAPI, kindProjected:
		if _, err := setupEmptyDir(dir, vs.onTmpfs(), 0, mounted); err != nil {
			undo()
			return "", err
		}
		w := &atomicWriter{dir: dir, owner: ownershipFor(pod, vs, false)}
		if err := w.Write(payload); err != nil {
			undo()
			return "", err
		}
	case kindFlex:
		if !mounted {
			_, caps, err := m.flex.get(ctx, vs.Flex.Driver)
			if err != nil {
				undo()
				return "", err
			}
			if err := m.flexMount(ctx, pe, vs, dir); err != nil {
				undo()
				return "", err
			}
			if err := ownershipFor(pod, vs, caps.FSGroup).change(dir); err != nil { // ignored by the kubelet too
				klog.ErrorS(err, "fsGroup on flexVolume", "path", dir)
			}
		}
	case kindLocal:
		if !mounted {
			src := vs.Local.Path
			if vs.Device != "" {
				src = vs.GlobalPath
			}
			if err := bindMount(src, dir, vs.ReadOnly); err != nil {
				undo()
				return "", err
			}
			// The kubelet sets the owner on the first pod mount of a
			// local volume only: the pods that share it keep what it has.
			if own := ownershipFor(pod, vs, false); own != nil && !m.localMountedByOtherPod(pod.UID, vs) {
				if err := own.change(dir); err != nil {
					unmountAll(dir)
					undo()
					return "", fmt.Errorf("fsGroup %d: %w", own.fsGroup, err)
				}
			}
		}
	default:
		undo()
		return "", fmt.Errorf("unknown volume kind %q", vs.Kind)
	}
	return dir, nil
}

// flexMount: the driver's mount with the pod's options, or (Not supported)
// a bind mount of the global mount, read-only when asked.
func (m *Manager) flexMount(ctx context.Context, pe *podEntry, vs *volumeSpec, dir string) error {
	drv, _, err := m.flex.get(ctx, vs.Flex.Driver)
	if err != nil {
		return err
	}
	rec := deviceRecord{Key: "x:" + vs.SpecName, Driver: vs.Flex.Driver, Options: vs.Flex.Options, FSType: vs.Flex.FSType, ReadOnly: vs.ReadOnly, SecretRef: vs.Flex.SecretRef}
	opts, err := m.driverOptions(&rec)
	if err != nil {
		return err
	}
	opts[optPodName], opts[optPodNamespace], opts[optPodUID] = pe.pod.Name, pe.pod.Namespace, string(pe.pod.UID)
	opts[optServiceAcct] = pe.pod.Spec.ServiceAccountName
	if g := podFSGroup(pe.pod); g != nil {
		opts[optFSGroup] = strconv.FormatInt(*g, 10)
	}
	_, err = drv.call(ctx, "mount", dir, flexOptionsJSON(opts, nil))
	if errors.Is(err, errFlexNotSupported) {
		if vs.Device == "" {
			return fmt.Errorf("driver %s: mount not supported and the volume is not attachable", vs.Flex.Driver)
		}
		return bindMount(vs.GlobalPath, dir, vs.ReadOnly)
	}
	return err
}

// localMountedByOtherPod: another pod has the local PV vs mounted (the
// kubelet's GetMountRefs of the volume, filtered to pods' mounts).
func (m *Manager) localMountedByOtherPod(uid types.UID, vs *volumeSpec) bool {
	for puid, pe := range m.pods {
		if puid == uid {
			continue
		}
		for _, o := range pe.volumes {
			if st := pe.state[o.Name]; o.Kind == kindLocal && o.PVName == vs.PVName && st != nil && st.ready {
				return true
			}
		}
	}
	return false
}

func (m *Manager) payload(ctx context.Context, pod *v1.Pod, vs *volumeSpec) (map[string]fileProjection, error) {
	switch vs.Kind {
	case kindConfigMap:
		return configMapPayload(pod, vs.Source.ConfigMap, m.objs)
	case kindSecret:
		return secretPayload(pod, vs.Source.Secret, m.objs)
	case kindDownwardAPI:
		def := int32(defaultFileMode)
		if vs.Source.DownwardAPI.DefaultMode != nil {
			def = *vs.Source.DownwardAPI.DefaultMode
		}
		return downwardAPIPayload(pod, vs.Source.DownwardAPI.Items, def)
	case kindProjected:
		return projectedPayload(ctx, pod, vs.Source.Projected, m.objs, m.opts.Tokens)
	}
	return nil, fmt.Errorf("%s is not a projection", vs.Kind)
}

// teardownPodVolumes is driven by what is on disk, not by the record, so it
// also cleans up after a pod it never knew: subPath mounts first, then each
// <PodsDir>/<uid>/volumes/<plugin>/<name> (a flex driver's unmount, or a
// plain unmount), then the dirs.
func (m *Manager) teardownPodVolumes(ctx context.Context, pe *podEntry) error {
	podDir := m.podDir(pe.pod.UID)
	if err := cleanupSubPaths(podDir); err != nil {
		return err
	}
	volsDir := filepath.Join(podDir, "volumes")
	plugins, err := os.ReadDir(volsDir)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, p := range plugins {
		pluginDir := filepath.Join(volsDir, p.Name())
		vols, err := os.ReadDir(pluginDir)
		if err != nil {
			return err
		}
		for _, v := range vols {
			dir := filepath.Join(pluginDir, v.Name())
			if err := m.teardownVolumeDir(ctx, p.Name(), dir); err != nil {
				return fmt.Errorf("%s: %w", dir, err)
			}
			if st := pe.state[v.Name()]; st != nil {
				st.ready = false
			}
		}
		if err := os.Remove(pluginDir); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if err := os.Remove(volsDir); err != nil && !os.IsNotExist(err) {
		return err
	}
	os.Remove(podDir) // only when empty: other components keep files there too
	return nil
}

func (m *Manager) teardownVolumeDir(ctx context.Context, pluginDirName, dir string) error {
	if pluginDirName == csiDirName {
		return m.teardownCSIDir(ctx, dir)
	}
	if !strings.HasPrefix(pluginDirName, "kubernetes.io~") && strings.Contains(pluginDirName, "~") {
		driver := strings.Replace(pluginDirName, "~", "/", 1)
		drv, _, err := m.flex.get(ctx, driver)
		if err != nil {
			klog.ErrorS(err, "flex driver gone; unmounting directly", "dir", dir)
		} else if _, err := drv.call(ctx, "unmount", dir); err != nil && !errors.Is(err, errFlexNotSupported) {
			return err
		}
	}
	if err := unmountAll(dir); err != nil {
		return err
	}
	return removeDirSafely(dir)
}

// reconstruct rebuilds the state after a restart: pod records become held
// pods (terminating ones stay terminating), device records and the kernel's
// view (loop devices' backing files, mountinfo) become the actual state.
func (m *Manager) reconstruct() error {
	pods, err := loadJSONDir[podRecord](filepath.Join(m.opts.StateDir, "pods"))
	if err != nil {
		return err
	}
	for _, r := range pods {
		if r.Pod == nil {
			continue
		}
		pe := &podEntry{pod: r.Pod, volumes: r.Volumes, terminating: r.Terminating, state: map[string]*volState{},
			held: !r.Terminating, fromRecord: true}
		for _, vs := range r.Volumes {
			if vs.PVName != "" {
				m.boundTo[vs.PVName] = vs.Claim
			}
			st := &volState{}
			pe.state[vs.Name] = st
			// Mounted volumes are ready as they are; the rest are set up
			// (idempotently) once the pod is claimed.
			if vs.Kind == kindFlex || vs.Kind == kindLocal || (vs.Kind == kindEmptyDir && vs.onTmpfs()) {
				if ok, _ := isMountPoint(m.volumeDir(r.Pod.UID, vs)); ok {
					st.ready, st.hostPath = true, m.volumeDir(r.Pod.UID, vs)
					m.metrics.op("setup", vs.Plugin, errAdopted)
				}
			}
		}
		m.pods[r.Pod.UID] = pe
	}
	devs, err := loadJSONDir[deviceRecord](filepath.Join(m.opts.StateDir, "devices"))
	if err != nil {
		return err
	}
	for _, r := range devs {
		d := &deviceState{deviceRecord: r}
		m.adoptDevice(d)
		m.devices[d.Key] = d
	}
	// A device a pod record names without a record of its own (the agent
	// stopped between attach and the record): what the kernel has of it
	// is adopted, so that it is released with its pod.
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Device != "" {
				m.ensureDevice(vs, false)
			}
		}
	}
	if len(m.pods) > 0 || len(m.devices) > 0 {
		klog.InfoS("Reconstructed volumes from before the restart; held until the agent's pods are known", "pods", len(m.pods), "devices", len(m.devices))
	}
	return nil
}
