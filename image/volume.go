package image

// Image volumes (CRI Mount.image, the kubelet's ImageVolume feature): an
// image's rootfs mounted read-only where a container asks for it.
//
// One overlay per image, made the first time a container mounts it and
// shared by every container that does: <Root>/volumes/<image hex>, its
// lowerdir the image's layer snapshots, no upper dir, so nothing can write
// to it. Overlay refuses a lower-only mount with a single lower, so a
// one-layer image gets <Root>/volume-empty (an empty dir) as a second,
// bottom lower, as CRI-O does; a config-only image with no layer at all
// gets a read-only bind of that empty dir.
//
// Who uses which image is a holder (Acquire/Release) per (container,
// image), keyed "volume:<container>:<image hex>", so it is durable in the
// store and keeps the snapshots from GC like a rootfs hold. The count of
// an image's volume holders is its refcount: nothing else is kept, so
// there is no counter to drift after a crash.
//
//	unmounted ──MountVolume (first holder)──▶ MOUNTED ──ReleaseVolumes (last holder)──▶ unmounted
//	                                           │  ▲
//	                         more MountVolume  ╰──╯  ReleaseVolumes (others left)
//
// A crash can leave a holder without its mount (killed between the store
// write and the mount; a reboot), a mount without holders (killed between
// the unmount and the store delete, or the other order), or a holder of a
// container that was never recorded (killed in CreateContainer).
// ReconcileVolumes, called once the container records are loaded, settles
// all three: holders of containers that do not exist are dropped, every
// image still held is mounted, every other mount under volumes/ goes.
//
// RemoveImage of an image with a volume holder fails with ErrInUse naming
// the containers. (An image that loses its last tag to a newer pull still
// goes, as before; its holders keep the snapshots, and so the mount,
// until the last user is removed.)

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ErrInUse: the image is mounted as a volume by a container.
var ErrInUse = errors.New("image in use")

// ErrBadSubPath: an image volume's sub path is not a relative path to a
// directory or file inside the image.
var ErrBadSubPath = errors.New("invalid image sub path")

const volumeHolderPrefix = "volume:"

// Volume is an image mounted read-only for containers.
type Volume struct {
	ImageID string // "sha256:<config digest hex>"
	Root    string // the image's rootfs on the host, read-only
}

func volumeHolder(container, imageID string) string {
	return volumeHolderPrefix + container + ":" + hexOf(imageID)
}

// volumeContainer is the container of a volume holder key.
func volumeContainer(holder string) (string, bool) {
	rest, ok := strings.CutPrefix(holder, volumeHolderPrefix)
	if !ok {
		return "", false
	}
	c, _, ok := strings.Cut(rest, ":")
	return c, ok && c != ""
}

func (s *Service) volumesDir() string { return filepath.Join(s.o.Root, "volumes") }
func (s *Service) emptyDir() string   { return filepath.Join(s.o.Root, "volume-empty") }

func (s *Service) volumePath(imageID string) string {
	return filepath.Join(s.volumesDir(), hexOf(imageID))
}

// MountVolume mounts the image ref resolves to for container (once per
// image, shared) and records that container uses it. Mounting the same
// image again for the same container is one hold. ErrNotFound when the
// image is not in the store: the kubelet pulls image volumes itself before
// it creates the container.
func (s *Service) MountVolume(ctx context.Context, container, ref string) (*Volume, error) {
	if container == "" {
		return nil, errors.New("mount image volume: empty container id")
	}
	s.volMu.Lock()
	defer s.volMu.Unlock()
	s.mu.RLock()
	r, err := s.resolveLocked(ref)
	var id string
	if err == nil {
		id = r.ID
	}
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	holder := volumeHolder(container, id)
	s.mu.RLock()
	_, held := s.holders[holder]
	s.mu.RUnlock()
	// By ID: a tag moved meanwhile must not switch images under the hold.
	if _, _, err := s.Acquire(ctx, holder, id); err != nil {
		return nil, err
	}
	s.mu.RLock()
	chains := slices.Clone(s.holders[holder].ChainIDs)
	s.mu.RUnlock()
	root, err := s.mountVolumeLocked(id, chains)
	if err != nil {
		if !held {
			if rerr := s.Release(ctx, holder); rerr != nil {
				klog.ErrorS(rerr, "Dropping image volume hold after a failed mount", "container", container, "image", id)
			}
		}
		return nil, fmt.Errorf("mount image %s for container %s: %w", id, container, err)
	}
	return &Volume{ImageID: id, Root: root}, nil
}

// ReleaseVolumes drops every image volume hold of container and unmounts
// each image no other container holds (idempotent). On an error the holds
// not yet dropped stay, for the caller's retry.
func (s *Service) ReleaseVolumes(ctx context.Context, container string) error {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	s.mu.RLock()
	var mine []*holderRecord
	for k, h := range s.holders {
		if c, ok := volumeContainer(k); ok && c == container {
			mine = append(mine, h)
		}
	}
	s.mu.RUnlock()
	for _, h := range mine {
		s.mu.RLock()
		others := s.volumeUsersLocked(h.ImageID, h.Holder)
		s.mu.RUnlock()
		// Unmount before the hold goes: dropping it may let GC take the
		// snapshots, which must not happen under a live overlay.
		if len(others) == 0 {
			if err := unmountVolume(s.volumePath(h.ImageID)); err != nil {
				return fmt.Errorf("release image volume %s of container %s: %w", h.ImageID, container, err)
			}
			klog.V(2).InfoS("Image volume unmounted", "image", h.ImageID, "lastUser", container)
		}
		if err := s.Release(ctx, h.Holder); err != nil {
			return fmt.Errorf("release image volume %s of container %s: %w", h.ImageID, container, err)
		}
	}
	return nil
}

// VolumeUsers lists the containers that mount image id as a volume, sorted.
func (s *Service) VolumeUsers(id string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.volumeUsersLocked(id, "")
}

// volumeUsersLocked lists the containers holding image id as a volume,
// leaving out the holder except.
func (s *Service) volumeUsersLocked(id, except string) []string {
	var out []string
	for k, h := range s.holders {
		if k == except || h.ImageID != id {
			continue
		}
		if c, ok := volumeContainer(k); ok && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// ReconcileVolumes makes the mounts under volumes/ match the holders after
// a restart: alive says whether a container record exists; the holders of
// any other container are dropped, every image still held is mounted
// (again, after a reboot), every other mount is unmounted. A mount that
// fails is logged and its holders kept: RemoveContainer still releases
// them, and the container it belongs to cannot be running without it.
//
// The rootfs holds (keyed by the container id alone) of containers that
// do not exist go too: CreateContainer acquires the image before it
// records the container, so a crash in between left a hold nothing would
// ever release (the image's snapshots could never be collected).
func (s *Service) ReconcileVolumes(ctx context.Context, alive func(container string) bool) error {
	s.volMu.Lock()
	defer s.volMu.Unlock()
	var dead []string
	wanted := map[string][]string{} // image hex -> chain IDs
	ids := map[string]string{}      // image hex -> image ID
	s.mu.RLock()
	for k, h := range s.holders {
		c, ok := volumeContainer(k)
		if !ok {
			if !strings.HasPrefix(k, volumeHolderPrefix) && !alive(k) {
				dead = append(dead, k)
			}
			continue
		}
		if !alive(c) {
			dead = append(dead, k)
			continue
		}
		wanted[hexOf(h.ImageID)] = slices.Clone(h.ChainIDs)
		ids[hexOf(h.ImageID)] = h.ImageID
	}
	s.mu.RUnlock()
	var errs []error
	ents, err := os.ReadDir(s.volumesDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image volumes: %w", err)
	}
	for _, e := range ents {
		if _, ok := wanted[e.Name()]; ok {
			continue
		}
		if err := unmountVolume(filepath.Join(s.volumesDir(), e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Removed image volume nothing holds", "image", e.Name())
	}
	for _, k := range dead {
		klog.InfoS("Dropping image hold of a container that does not exist", "holder", k)
		if err := s.Release(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	for hex, chains := range wanted {
		if _, err := s.mountVolumeLocked(ids[hex], chains); err != nil {
			klog.ErrorS(err, "Cannot mount image volume again after restart", "image", ids[hex])
		}
	}
	if len(wanted) > 0 || len(dead) > 0 {
		klog.InfoS("Image volumes reconciled", "mounted", len(wanted), "droppedHolds", len(dead))
	}
	return errors.Join(errs...)
}

// mountVolumeLocked mounts the image's rootfs read-only at its volume path
// unless it is mounted already. The caller holds volMu.
func (s *Service) mountVolumeLocked(imageID string, chainIDs []string) (string, error) {
	target := s.volumePath(imageID)
	if ok, err := isMountRoot(target); err != nil {
		return "", err
	} else if ok {
		return target, nil
	}
	for _, d := range []string{s.emptyDir(), target} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", err
		}
	}
	if ents, err := os.ReadDir(s.emptyDir()); err != nil || len(ents) > 0 {
		return "", fmt.Errorf("%s must be an empty directory (err %v)", s.emptyDir(), err)
	}
	lowers := make([]string, 0, len(chainIDs)+1)
	for i := len(chainIDs) - 1; i >= 0; i-- {
		lowers = append(lowers, filepath.Join(s.snapPath(chainIDs[i]), "fs"))
	}
	var err error
	switch len(lowers) {
	case 0:
		if err = unix.Mount(s.emptyDir(), target, "", unix.MS_BIND, ""); err == nil {
			err = unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NODEV, "")
			if err != nil {
				_ = unix.Unmount(target, unix.MNT_DETACH)
			}
		}
	default:
		if len(lowers) == 1 {
			lowers = append(lowers, s.emptyDir())
		}
		opts := "lowerdir=" + strings.Join(lowers, ":")
		if len(opts) >= unix.Getpagesize() {
			return "", fmt.Errorf("overlay options for %d layers exceed one page", len(chainIDs))
		}
		err = unix.Mount("overlay", target, "overlay", unix.MS_RDONLY|unix.MS_NODEV, opts)
	}
	if err != nil {
		_ = os.Remove(target)
		return "", fmt.Errorf("mount image volume %s: %w", target, err)
	}
	klog.V(2).InfoS("Image volume mounted", "image", imageID, "path", target, "layers", len(chainIDs))
	return target, nil
}

// isMountRoot reports whether p is the root of a mount (statx's
// STATX_ATTR_MOUNT_ROOT, Linux 5.8+: exact for bind mounts of the same
// file system too, where comparing st_dev with the parent is not).
func isMountRoot(p string) (bool, error) {
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, 0, &st)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statx %s: %w", p, err)
	}
	if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("statx %s: the kernel does not report mount roots", p)
	}
	return st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// unmountVolume unmounts everything stacked on p and removes the dir.
// Containers' binds of it are mounts of their own and stay, so a plain
// unmount works; MNT_DETACH only if something on the host still has it
// open.
func unmountVolume(p string) error {
	for i := 0; i < 16; i++ {
		ok, err := isMountRoot(p)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := unix.Unmount(p, 0); err != nil {
			if err != unix.EBUSY {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", p, err)
			}
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// ResolveSubPath resolves sub (Mount.image_sub_path) inside the image
// rootfs at root and returns the host path to bind. Each component,
// symlinks included, resolves as if root were "/" (openat2
// RESOLVE_IN_ROOT): an absolute symlink or one with enough ".." stays in
// the image, as the image's own processes would see it, and never reaches
// the host. A ".." in sub itself or an absolute sub is refused (the
// kubelet refuses both in a subPath too), and so is a path that does not
// exist (the CRI: runtimes must fail) or is neither a directory nor a
// regular file. The result is the resolved path, so the OCI runtime,
// which follows symlinks on the host, never sees one; the overlay is
// read-only, so what it names cannot change before the runtime binds it.
// Errors wrap ErrBadSubPath.
func ResolveSubPath(root, sub string) (string, error) {
	if sub == "" {
		return root, nil
	}
	if strings.ContainsRune(sub, 0) {
		return "", fmt.Errorf("%w: contains a NUL byte", ErrBadSubPath)
	}
	if filepath.IsAbs(sub) {
		return "", fmt.Errorf("%w: %q must be a relative path", ErrBadSubPath, sub)
	}
	if slices.Contains(strings.Split(sub, "/"), "..") {
		return "", fmt.Errorf("%w: %q must not contain '..'", ErrBadSubPath, sub)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("image volume root: %w", err)
	}
	rootFd, err := unix.Open(realRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open image volume root %s: %w", realRoot, err)
	}
	defer unix.Close(rootFd)
	var fd int
	for {
		fd, err = unix.Openat2(rootFd, sub, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
		})
		if err != unix.EINTR && err != unix.EAGAIN {
			break
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", fmt.Errorf("%w: %q does not exist in the image", ErrBadSubPath, sub)
	case errors.Is(err, unix.ENOTDIR):
		return "", fmt.Errorf("%w: %q: a component on the way is not a directory", ErrBadSubPath, sub)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENAMETOOLONG), errors.Is(err, unix.EXDEV):
		return "", fmt.Errorf("%w: %q: %v", ErrBadSubPath, sub, err)
	case err != nil:
		return "", fmt.Errorf("resolve %q in %s: %w", sub, realRoot, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("resolve %q in %s: %w", sub, realRoot, err)
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFDIR && m != unix.S_IFREG {
		return "", fmt.Errorf("%w: %q is neither a directory nor a regular file", ErrBadSubPath, sub)
	}
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", fmt.Errorf("resolve %q in %s: %w", sub, realRoot, err)
	}
	// RESOLVE_IN_ROOT cannot leave the root; checked anyway, as the bind
	// source must never be anything else.
	if p != realRoot && !strings.HasPrefix(p, realRoot+"/") {
		return "", fmt.Errorf("%w: %q resolved to %s, outside the image", ErrBadSubPath, sub, p)
	}
	return p, nil
}
