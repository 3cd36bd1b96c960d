package volumes

import (
	"os"
	"path/filepath"
	"syscall"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Volume ownership: pod.spec.securityContext.fsGroup, as the kubelet's
// SetVolumeOwnership (pkg/volume/volume_linux.go) applies it. Every file,
// directory and symlink of the volume gets group fsGroup (lchown, so a
// symlink is never followed); every file and directory other than a
// symlink gets group read and write (read only, for a read-only volume)
// added to its mode, directories also group execute and setgid, so what is
// created in them later belongs to fsGroup too. Nothing is taken away.
// Which volumes get it, and how (decide), is ownershipFor; apply walks
// the tree (act).
//
//	volume                       mask          when
//	emptyDir (disk, Memory)      rw            on setup (SetUpAt, policy ignored)
//	configMap, secret,           ro            on each write of a new version,
//	  downwardAPI, projected                     before the ..data swap
//	local PV (not read-only)     rw            on the first pod mount of it, per fsGroupChangePolicy
//	flexVolume (not read-only,   rw            on mount, per fsGroupChangePolicy
//	  driver capability fsGroup)
//	hostPath                     -             never
//
// As in the kubelet, a failed lchown or chmod of one file is logged and the
// walk goes on; only a tree that cannot be walked is an error.

const (
	ownerRWMask   = os.FileMode(0o660)
	ownerROMask   = os.FileMode(0o440)
	ownerExecMask = os.FileMode(0o110)
)

// volumeOwnership is fsGroup applied to one volume.
type volumeOwnership struct {
	fsGroup int64
	// readOnly: the volume is read-only for containers (the projected
	// kinds), so group read is added, not read-write.
	readOnly bool
	// onRootMismatch: fsGroupChangePolicy OnRootMismatch; the walk is
	// skipped when the volume's root already has the group and mode.
	onRootMismatch bool
}

// podFSGroup is pod.spec.securityContext.fsGroup, or nil.
func podFSGroup(pod *v1.Pod) *int64 {
	if pod == nil || pod.Spec.SecurityContext == nil {
		return nil
	}
	return pod.Spec.SecurityContext.FSGroup
}

// ownershipFor decides whether and how the pod's fsGroup applies to a
// volume, as the kubelet's plugins do (the right column above); nil leaves
// the volume's ownership alone. flexFSGroup is the driver's fsGroup
// capability.
func ownershipFor(pod *v1.Pod, vs *volumeSpec, flexFSGroup bool) *volumeOwnership {
	g := podFSGroup(pod)
	if g == nil {
		return nil
	}
	onRootMismatch := false
	if sc := pod.Spec.SecurityContext; sc.FSGroupChangePolicy != nil && *sc.FSGroupChangePolicy == v1.FSGroupChangeOnRootMismatch {
		onRootMismatch = true
	}
	switch vs.Kind {
	case kindEmptyDir:
		// empty_dir.go: NewVolumeOwnership(ed, dir, FsGroup, nil /*policy*/)
		return &volumeOwnership{fsGroup: *g}
	case kindConfigMap, kindSecret, kindDownwardAPI, kindProjected:
		// their SetUpAt's setPerms: nil policy, attributes ReadOnly
		return &volumeOwnership{fsGroup: *g, readOnly: true}
	case kindLocal:
		// local.go: if !m.readOnly
		if vs.ReadOnly {
			return nil
		}
		return &volumeOwnership{fsGroup: *g, onRootMismatch: onRootMismatch}
	case kindFlex:
		// flexvolume/mounter.go: if !f.readOnly && capabilities.FSGroup
		if vs.ReadOnly || !flexFSGroup {
			return nil
		}
		return &volumeOwnership{fsGroup: *g, onRootMismatch: onRootMismatch}
	}
	return nil // hostPath: the kubelet's host_path plugin never changes ownership
}

func (o *volumeOwnership) mask() os.FileMode {
	if o.readOnly {
		return ownerROMask
	}
	return ownerRWMask
}

// fileMode is the mode a regular file of mode m has after apply.
func (o *volumeOwnership) fileMode(m os.FileMode) os.FileMode {
	if o == nil {
		return m
	}
	return m | o.mask()
}

// dirMode is the mode a directory of mode m has after apply.
func (o *volumeOwnership) dirMode(m os.FileMode) os.FileMode {
	if o == nil {
		return m
	}
	return m | o.mask() | ownerExecMask | os.ModeSetgid
}

// change applies the ownership to dir unless the policy is OnRootMismatch
// and the root already matches (the kubelet's ChangePermissions).
func (o *volumeOwnership) change(dir string) error {
	if o == nil {
		return nil
	}
	if o.onRootMismatch && o.rootMatches(dir) {
		klog.V(3).InfoS("fsGroup: volume root matches, not walking it", "path", dir, "fsGroup", o.fsGroup)
		return nil
	}
	return o.apply(dir)
}

// rootMatches: the root is a directory of group fsGroup with setgid and at
// least the mask's bits (group rwx, or r-x for a read-only volume) — the
// kubelet's requiresPermissionChange, negated.
func (o *volumeOwnership) rootMatches(dir string) bool {
	fi, err := os.Stat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int64(st.Gid) != o.fsGroup || !fi.IsDir() {
		return false
	}
	want := o.mask() | ownerExecMask
	return fi.Mode().Perm()&want == want && fi.Mode()&os.ModeSetgid != 0
}

// apply walks dir depth-first, each directory after its entries, without
// following symlinks, and sets group and mode as the kubelet's
// changeFilePermission does.
func (o *volumeOwnership) apply(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	return o.walk(dir, fi)
}

func (o *volumeOwnership) walk(path string, fi os.FileInfo) error {
	if fi.IsDir() {
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range ents {
			p := filepath.Join(path, e.Name())
			cfi, err := os.Lstat(p)
			if os.IsNotExist(err) {
				continue // gone meanwhile (a container's temp file)
			}
			if err != nil {
				return err
			}
			if err := o.walk(p, cfi); err != nil {
				return err
			}
		}
	}
	o.changeOne(path, fi)
	return nil
}

func (o *volumeOwnership) changeOne(path string, fi os.FileInfo) {
	if err := os.Lchown(path, -1, int(o.fsGroup)); err != nil {
		klog.ErrorS(err, "fsGroup: lchown failed", "path", path, "fsGroup", o.fsGroup)
	}
	// chmod would go through a symlink to its target and widen a mode the
	// volume set on purpose; a symlink's own mode means nothing.
	if fi.Mode()&os.ModeSymlink != 0 {
		return
	}
	mode := o.fileMode(fi.Mode())
	if fi.IsDir() {
		mode = o.dirMode(fi.Mode())
	}
	// Always: chown may have cleared a file's setuid/setgid, and the mode
	// read before it puts them back, as in the kubelet.
	if err := os.Chmod(path, mode); err != nil {
		klog.ErrorS(err, "fsGroup: chmod failed", "path", path, "mode", mode)
	}
}
