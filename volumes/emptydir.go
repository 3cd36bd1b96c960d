package volumes

import (
	"os"
)

// emptyDir as the kubelet's empty_dir.go sets it up (setupDir,
// setupTmpfs), for emptyDir volumes and for the emptyDir the kubelet wraps
// the projected kinds in (their wrappedVolumeSpec: configMap on disk;
// secret, downwardAPI and projected on tmpfs).

const (
	// emptyDirPerm is the kubelet's perm: the pod's containers, whatever
	// their user, can all write an emptyDir.
	emptyDirPerm = os.FileMode(0o777)
	// tmpfsRootMode is what the kubelet's tmpfs root has: it mounts without
	// mode=, so the kernel's default 1777 (sticky, as /tmp). Written out so
	// it does not depend on the kernel.
	tmpfsRootMode = 0o1777
)

// setupEmptyDir makes dir an emptyDir: a directory of mode 0777, with a
// tmpfs of size bytes (0: the kernel's default) mounted on it when memory.
// An existing tmpfs (mounted) is kept as it is, as the kubelet keeps a
// ready one. It reports whether it mounted a new tmpfs.
func setupEmptyDir(dir string, memory bool, size int64, mounted bool) (bool, error) {
	if memory && mounted {
		return false, nil
	}
	if err := setupDirPerm(dir); err != nil {
		return false, err
	}
	if !memory {
		return false, nil
	}
	if err := mountTmpfs(dir, size, tmpfsRootMode); err != nil {
		return false, err
	}
	return true, nil
}

// setupDirPerm creates dir 0777, or chmods it to 0777 when its permission
// bits are different (the umask, an older agent); as in the kubelet, only
// then, so the setgid bit fsGroup added stays.
func setupDirPerm(dir string) error {
	if err := os.MkdirAll(dir, emptyDirPerm); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm() != emptyDirPerm {
		return os.Chmod(dir, emptyDirPerm)
	}
	return nil
}
