package volumes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"peapod/volumes/disk"
)

// Recovery after a restart. The agent may stop (or be killed) at any point
// and leave pods' mounts and loop devices behind; the next Manager starts
// from what StateDir's records meant and what the kernel has. Assumptions:
//
//   - A record is written before the node is changed and removed after, so
//     a record may name what is not there (adoption finds nothing and the
//     operation runs again). A pod dir may be left without its record; the
//     orphan sweep tears it down from what is on disk alone.
//   - The kernel is the truth for what is mounted (mountinfo) and for which
//     file a loop device holds: its inode and device (LOOP_GET_STATUS64),
//     not its path. A disk image replaced at the same path is another file.
//   - Until the agent knows every pod it wants (its pod sources are ready),
//     it cannot tell a pod that is gone from one it has not seen yet. A pod
//     rebuilt from its record is held meanwhile: its mounts stay as they
//     are, nothing is set up or released for it, and the devices it names
//     stay. SetupPod or TeardownPod claims it. ReleaseOrphans, which the
//     agent calls once it knows its pods (the kubelet's cleanup of orphaned
//     pod dirs, after its sources are ready), claims the held pods that are
//     still wanted, mounts adopted as they are (no remount), and tears down
//     every other pod's volumes under PodsDir, then the devices, global
//     mounts and loop devices no remaining pod needs.
//   - A loop device is a volume's only while it holds the file the volume
//     names now. One that holds another file (the image was replaced or
//     deleted, or the PV now names another image) is stale: its mounts
//     under PodsDir and GlobalMountDir are unmounted and it is detached
//     before the current file is attached and mounted. A stale device that
//     is also mounted outside those dirs is left attached: not ours to take.

// ReleaseOrphans is called once the agent knows every pod it wants (its
// pod sources are ready), with keep holding their UIDs and those of pods it
// still tears down itself; again at each housekeeping. Pods rebuilt after a
// restart that keep names are claimed, their volumes as they are. Every
// other pod's volumes under PodsDir — a held pod's, or a pod dir without
// any record — are unmounted and removed with the pod dir; then devices,
// global mounts and loop devices no remaining pod needs are released.
// Pods set up or torn down since the restart belong to the agent's
// workers and are not touched. Failures are retried by Run and the next
// call.
func (m *Manager) ReleaseOrphans(ctx context.Context, keep map[types.UID]bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dirs, err := podDirsOnDisk(m.opts.PodsDir)
	if err != nil {
		return fmt.Errorf("volumes: list pod dirs: %w", err)
	}
	entries := map[types.UID]entryPhase{}
	for uid, pe := range m.pods {
		entries[uid] = pe.phase()
	}
	plan := planOrphans(entries, dirs, keep)
	var errs []error
	for _, uid := range plan.claim {
		m.pods[uid].held = false
		klog.InfoS("Keeping the volumes of a pod from before the restart", "pod", klog.KObj(m.pods[uid].pod), "podUID", uid)
	}
	for _, uid := range plan.release {
		pe := m.pods[uid]
		if pe == nil {
			pe = &podEntry{pod: &v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}}, state: map[string]*volState{}}
			m.pods[uid] = pe
		}
		pe.held, pe.terminating = false, true
		if err := m.savePod(pe); err != nil {
			errs = append(errs, err)
		}
		delete(m.backoffs, "teardown/"+string(uid))
		klog.InfoS("Releasing the volumes of a pod no source wants", "pod", klog.KObj(pe.pod), "podUID", uid, "volumes", len(pe.volumes), "dir", m.podDir(uid))
	}
	m.reconcileLocked(ctx)
	for _, uid := range plan.release {
		if _, still := m.pods[uid]; still {
			err := errors.New("not finished")
			if b := m.backoffs["teardown/"+string(uid)]; b != nil && b.err != nil {
				err = b.err
			}
			errs = append(errs, fmt.Errorf("pod %s: %w", uid, err))
			continue
		}
		if err := removeDirSafely(m.podDir(uid)); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Released the volumes of a pod no source wants", "podUID", uid)
	}
	for key, b := range m.backoffs {
		if b.err != nil && (strings.HasPrefix(key, "unmountdevice/") || strings.HasPrefix(key, "detach/") || strings.HasPrefix(key, "stale/")) {
			errs = append(errs, fmt.Errorf("release device %s: %w", key[strings.Index(key, "/")+1:], b.err))
		}
	}
	if err := m.sweepGlobalMounts(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("volumes: release orphans: %w", err)
	}
	return nil
}

// entryPhase is where a pod the Manager knows stands for the orphan sweep.
type entryPhase int

const (
	phaseHeld        entryPhase = iota // rebuilt from its record, not claimed yet
	phaseActive                        // set up since the restart, or claimed
	phaseTerminating                   // being torn down
)

func (pe *podEntry) phase() entryPhase {
	switch {
	case pe.terminating:
		return phaseTerminating
	case pe.held:
		return phaseHeld
	}
	return phaseActive
}

type orphanPlan struct {
	claim   []types.UID // held and wanted: adopt as they are
	release []types.UID // held, or a pod dir without a record, and not wanted
}

// planOrphans decides what becomes of each held pod and each pod dir on
// disk once the wanted pods (keep) are known. Active and terminating pods
// are the agent's and their own teardown's business.
func planOrphans(entries map[types.UID]entryPhase, dirs []types.UID, keep map[types.UID]bool) orphanPlan {
	var p orphanPlan
	for uid, ph := range entries {
		if ph != phaseHeld {
			continue
		}
		if keep[uid] {
			p.claim = append(p.claim, uid)
		} else {
			p.release = append(p.release, uid)
		}
	}
	for _, uid := range dirs {
		if _, known := entries[uid]; !known && !keep[uid] {
			p.release = append(p.release, uid)
		}
	}
	slices.Sort(p.claim)
	slices.Sort(p.release)
	p.release = slices.Compact(p.release)
	return p
}

// podDirsOnDisk lists the pod dirs (<PodsDir>/<uid>).
func podDirsOnDisk(podsDir string) ([]types.UID, error) {
	ents, err := os.ReadDir(podsDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []types.UID
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, types.UID(e.Name()))
		}
	}
	return out, nil
}

// ownGlobalDir: the GlobalMountDir subdirs this Manager mounts devices in,
// flex drivers' (vendor~driver) and local volumes'. The other
// kubernetes.io~ ones (CSI) are not its own.
func ownGlobalDir(name string) bool {
	if name == "kubernetes.io~local-volume" {
		return true
	}
	return !strings.HasPrefix(name, "kubernetes.io~") && strings.Contains(name, "~")
}

// globalMountsToRelease picks the mounts in this Manager's GlobalMountDir
// subdirs at or beneath no needed path, deepest first.
func globalMountsToRelease(mounts []mountInfo, globalDir string, needed map[string]bool) []mountInfo {
	root := filepath.Clean(globalDir) + "/"
	var out []mountInfo
next:
	for _, mi := range mounts {
		rel, ok := strings.CutPrefix(mi.MountPoint, root)
		if !ok {
			continue
		}
		plugin, rest, _ := strings.Cut(rel, "/")
		if !ownGlobalDir(plugin) || rest == "" {
			continue
		}
		for n := range needed {
			if mi.MountPoint == n || strings.HasPrefix(mi.MountPoint, n+"/") {
				continue next
			}
		}
		out = append(out, mi)
	}
	slices.SortStableFunc(out, func(a, b mountInfo) int {
		return strings.Count(b.MountPoint, "/") - strings.Count(a.MountPoint, "/")
	})
	return out
}

// sweepGlobalMounts unmounts global mounts no device and no pod needs
// (their records lost, or never written), and detaches a loop device that
// is then mounted nowhere.
func (m *Manager) sweepGlobalMounts() error {
	needed := map[string]bool{}
	for _, d := range m.devices {
		needed[d.GlobalPath] = true
	}
	for _, pe := range m.pods {
		if pe.terminating {
			continue
		}
		for _, vs := range pe.volumes {
			if vs.GlobalPath != "" {
				needed[vs.GlobalPath] = true
			}
		}
	}
	mounts, err := readMountInfo()
	if err != nil {
		return err
	}
	var errs []error
	loops := map[devNum]string{}
	done := map[string]bool{}
	for _, mi := range globalMountsToRelease(mounts, m.opts.GlobalMountDir, needed) {
		if dev := disk.DeviceOf(mi); strings.HasPrefix(dev, "/dev/loop") {
			loops[devNum{mi.Major, mi.Minor}] = dev
		}
		if done[mi.MountPoint] {
			continue
		}
		done[mi.MountPoint] = true
		if err := unmountAll(mi.MountPoint); err != nil {
			errs = append(errs, err)
			continue
		}
		os.Remove(mi.MountPoint)
		klog.InfoS("Unmounted a device mount no pod needs", "path", mi.MountPoint, "source", mi.Source)
	}
	if len(loops) > 0 {
		if mounts, err = readMountInfo(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, mi := range mounts {
			delete(loops, devNum{mi.Major, mi.Minor}) // still mounted somewhere: in use
		}
		for _, dev := range loops {
			li, err := disk.LoopStatus(dev)
			if errors.Is(err, disk.ErrLoopNotAttached) {
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := loopDetach(dev); err != nil {
				errs = append(errs, err)
				continue
			}
			klog.InfoS("Detached a loop device no pod needs", "device", dev, "backingFile", li.BackingFile, "deleted", li.Deleted)
		}
	}
	return errors.Join(errs...)
}

// devNum is a block device's number, as mountinfo's MAJ:MIN shows it.
type devNum struct{ major, minor uint32 }

func loopNum(li loopInfo) devNum { return devNum{li.Major, li.Minor} }

// loopView is what the kernel has for a peapod/loop device.
type loopView struct {
	good  *loopInfo  // the loop device holding the file the volume names
	stale []loopInfo // devices of this volume holding another file
	err   error      // the named file could not be examined: nothing is good
}

// classifyLoops splits the loop devices found for a volume into the one
// that holds image (want, nil when it could not be examined; the one
// mounted at the global path first) and the stale ones. More devices on
// the same file are neither: not peapod's doing, left alone.
func classifyLoops(cands []loopInfo, want *unix.Stat_t, global devNum) loopView {
	var v loopView
	for i := range cands {
		li := cands[i]
		if want != nil && li.Backs(want) {
			if v.good == nil || (loopNum(li) == global && loopNum(*v.good) != global) {
				v.good = &li
			}
			continue
		}
		v.stale = append(v.stale, li)
	}
	return v
}

// inspectLoop examines the loop devices of a peapod/loop device: every one
// whose backing path is the volume's image (or an image the volume named
// before), deleted or not, and every one mounted at its global path or at
// a pod volume dir of it.
func (m *Manager) inspectLoop(d *deviceState) loopView {
	image := d.Options[loopImageOption]
	all, err := loopDevices()
	if err != nil {
		return loopView{err: err}
	}
	mounts, err := readMountInfo()
	if err != nil {
		return loopView{err: err}
	}
	paths := map[string]bool{}
	for _, p := range append([]string{image}, d.formerImages...) {
		if p == "" {
			continue
		}
		paths[filepath.Clean(p)] = true
		if r, err := filepath.EvalSymlinks(p); err == nil {
			paths[r] = true
		}
	}
	at := map[string]bool{filepath.Clean(d.GlobalPath): true}
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if vs.Device == d.Key {
				at[m.volumeDir(pe.pod.UID, vs)] = true
			}
		}
	}
	mounted := map[devNum]bool{}
	var global devNum
	for _, mi := range mounts {
		if at[mi.MountPoint] {
			mounted[devNum{mi.Major, mi.Minor}] = true
			if mi.MountPoint == filepath.Clean(d.GlobalPath) {
				global = devNum{mi.Major, mi.Minor}
			}
		}
	}
	var cands []loopInfo
	for _, li := range all {
		if paths[li.BackingFile] || mounted[loopNum(li)] {
			cands = append(cands, li)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(image, &st); err != nil {
		v := classifyLoops(cands, nil, global)
		v.err = fmt.Errorf("disk image %s: %w", image, err)
		return v
	}
	return classifyLoops(cands, &st, global)
}

// checkDevice makes sure a device about to be used is what the volume
// names: a peapod/loop device that could not be examined is examined again,
// and stale loop devices are released first.
func (m *Manager) checkDevice(d *deviceState, plugin string) error {
	if d.inspectErr != nil {
		err := m.do("inspect/"+d.Key, "", plugin, func() error {
			m.adoptDevice(d)
			return d.inspectErr
		})
		if err != nil {
			return fmt.Errorf("examine loop device: %w", err)
		}
	}
	if len(d.stale) > 0 {
		if err := m.do("stale/"+d.Key, "detach", plugin, func() error { return m.releaseStale(d) }); err != nil {
			return fmt.Errorf("release stale loop device: %w", err)
		}
	}
	return nil
}

// underOwnDirs: a mount point beneath PodsDir or GlobalMountDir.
func (m *Manager) underOwnDirs(p string) bool {
	for _, dir := range []string{m.opts.PodsDir, m.opts.GlobalMountDir} {
		if strings.HasPrefix(p, filepath.Clean(dir)+"/") {
			return true
		}
	}
	return false
}

// releaseStale unmounts every mount of d's stale loop devices beneath
// PodsDir and GlobalMountDir (pod volume dirs, subPaths, the global path),
// marks the volumes mounted there not ready, and detaches the devices.
func (m *Manager) releaseStale(d *deviceState) error {
	mounts, err := readMountInfo()
	if err != nil {
		return err
	}
	var errs []error
	var left []loopInfo
	for _, li := range d.stale {
		var points []string
		elsewhere := ""
		for _, mi := range mounts {
			if mi.Major != li.Major || mi.Minor != li.Minor {
				continue
			}
			if !m.underOwnDirs(mi.MountPoint) {
				elsewhere = mi.MountPoint
			} else if !slices.Contains(points, mi.MountPoint) {
				points = append(points, mi.MountPoint)
			}
		}
		sortByDepthDesc(points)
		failed := false
		for _, p := range points {
			if err := unmountAll(p); err != nil {
				errs, failed = append(errs, err), true
				continue
			}
			klog.InfoS("Unmounted a stale loop device", "device", li.Device, "path", p, "volume", d.Key)
			m.markUnmounted(d, p)
		}
		if failed {
			left = append(left, li)
			continue
		}
		if elsewhere != "" {
			klog.InfoS("Stale loop device is mounted outside peapod's volume dirs; leaving it attached", "device", li.Device, "mountPoint", elsewhere, "backingFile", li.BackingFile, "volume", d.Key)
			continue
		}
		// The device may have been detached, and reused for another file,
		// since it was examined: detach only the same attachment.
		now, err := disk.LoopStatus(li.Device)
		if errors.Is(err, disk.ErrLoopNotAttached) || (err == nil && (now.Inode != li.Inode || now.Dev != li.Dev)) {
			continue
		}
		if err == nil {
			err = loopDetach(li.Device)
		}
		if err != nil {
			// Still open outside peapod's sight (a container's mount
			// namespace): LOOP_CLR_FD has left it to the kernel, which
			// detaches it when its last user closes it. Nothing of the
			// volume's uses it any more.
			if now, serr := disk.LoopStatus(li.Device); serr == nil && now.Inode == li.Inode && now.Dev == li.Dev && now.AutoClear {
				klog.InfoS("Stale loop device is still in use; the kernel detaches it once its last user closes it", "device", li.Device, "backingFile", li.BackingFile, "volume", d.Key)
				continue
			}
			errs = append(errs, err)
			left = append(left, li)
			continue
		}
		klog.InfoS("Detached a stale loop device: it does not hold the file the volume names", "device", li.Device, "backingFile", li.BackingFile, "deleted", li.Deleted, "inode", li.Inode, "image", d.Options[loopImageOption], "volume", d.Key)
	}
	d.stale = left
	return errors.Join(errs...)
}

// markUnmounted records that p, a mount of d's, is gone: the global path
// is no longer mounted, a pod volume there no longer ready.
func (m *Manager) markUnmounted(d *deviceState, p string) {
	if p == filepath.Clean(d.GlobalPath) {
		d.Mounted = false
	}
	for _, pe := range m.pods {
		for _, vs := range pe.volumes {
			if st := pe.state[vs.Name]; st != nil && vs.DirName != "" && m.volumeDir(pe.pod.UID, vs) == p {
				st.ready = false
			}
		}
	}
}

// loopImageChanged: the volume names another disk image than the loop
// device was attached for (a PV that changed while the agent was away).
func loopImageChanged(d *deviceState, vs *volumeSpec) bool {
	return d.Driver == loopDriverName && vs.Kind == kindFlex && vs.Flex != nil && vs.Flex.Driver == loopDriverName &&
		d.Options[loopImageOption] != vs.Flex.Options[loopImageOption]
}

// reresolve resolves the volumes of a pod rebuilt from its record against
// the current objects, on its first SetupPod after the restart. A volume
// whose source changed meanwhile (its claim's PV names another disk) gets
// the new one; what was mounted for the old source is torn down first.
// Volumes that no longer resolve keep their record.
func (m *Manager) reresolve(ctx context.Context, pe *podEntry, pod *v1.Pod) {
	pe.fromRecord = false
	vols, err := m.resolveVolumes(ctx, pod, m.objs)
	if err != nil {
		klog.InfoS("Volumes of a pod from before the restart do not resolve now; keeping the recorded ones", "pod", klog.KObj(pod), "podUID", pod.UID, "err", err)
		return
	}
	old := map[string]*volumeSpec{}
	for _, vs := range pe.volumes {
		old[vs.Name] = vs
	}
	changed := false
	for _, vs := range vols {
		o := old[vs.Name]
		if o != nil && sameVolumeSource(o, vs) {
			continue
		}
		changed = true
		delete(pe.state, vs.Name)
		if o == nil || o.DirName == "" {
			continue
		}
		dir := m.volumeDir(pod.UID, o)
		klog.InfoS("A volume of a pod from before the restart names another source now; unmounting the old one", "pod", klog.KObj(pod), "podUID", pod.UID, "volume", vs.Name, "dir", dir)
		if err := m.teardownVolumeDir(ctx, o.DirName, dir); err != nil {
			// The device check finds what stays mounted there.
			klog.ErrorS(err, "Unmounting the old source of a volume failed", "pod", klog.KObj(pod), "dir", dir)
		}
	}
	if !changed {
		return
	}
	pe.volumes = vols
	if err := m.savePod(pe); err != nil {
		klog.ErrorS(err, "Saving the pod record failed", "pod", klog.KObj(pod))
	}
}

// sameVolumeSource compares what a volume is mounted from. The rest of a
// volume comes from the pod spec, which does not change under one UID.
func sameVolumeSource(a, b *volumeSpec) bool {
	if a.Kind != b.Kind || a.DirName != b.DirName || a.SpecName != b.SpecName || a.Device != b.Device ||
		a.GlobalPath != b.GlobalPath || a.ReadOnly != b.ReadOnly || a.PVName != b.PVName {
		return false
	}
	switch {
	case (a.Flex == nil) != (b.Flex == nil), (a.Local == nil) != (b.Local == nil), (a.HostPath == nil) != (b.HostPath == nil):
		return false
	case a.Flex != nil:
		return a.Flex.Driver == b.Flex.Driver && a.Flex.FSType == b.Flex.FSType && a.Flex.ReadOnly == b.Flex.ReadOnly &&
			maps.Equal(a.Flex.Options, b.Flex.Options)
	case a.Local != nil:
		return a.Local.Path == b.Local.Path
	case a.HostPath != nil:
		return a.HostPath.Path == b.HostPath.Path
	}
	return true
}
