package volumes

import (
	"fmt"
	"os"

	v1 "k8s.io/api/core/v1"
)

// checkHostPathType enforces a hostPath's type as the kubelet's hostPath
// plugin does; the *OrCreate types create what is missing (0755 directories,
// 0644 empty files; a file's parent must exist).
func checkHostPathType(path string, t *v1.HostPathType) error {
	if t == nil || *t == v1.HostPathUnset {
		return nil
	}
	switch *t {
	case v1.HostPathDirectoryOrCreate:
		st, err := os.Stat(path)
		if os.IsNotExist(err) {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return fmt.Errorf("hostPath %s: create directory: %w", path, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("hostPath %s exists and is not a directory", path)
		}
		return nil
	case v1.HostPathFileOrCreate:
		st, err := os.Stat(path)
		if os.IsNotExist(err) {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("hostPath %s: create file: %w", path, err)
			}
			return f.Close()
		}
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("hostPath %s exists and is a directory, not a file", path)
		}
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("hostPath type check failed: %s is not a %s: %w", path, *t, err)
	}
	m := st.Mode()
	ok := false
	switch *t {
	case v1.HostPathDirectory:
		ok = m.IsDir()
	case v1.HostPathFile:
		ok = m.IsRegular()
	case v1.HostPathSocket:
		ok = m&os.ModeSocket != 0
	case v1.HostPathCharDev:
		ok = m&os.ModeDevice != 0 && m&os.ModeCharDevice != 0
	case v1.HostPathBlockDev:
		ok = m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0
	default:
		return fmt.Errorf("hostPath %s: unknown type %q", path, *t)
	}
	if !ok {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", path, *t)
	}
	return nil
}
