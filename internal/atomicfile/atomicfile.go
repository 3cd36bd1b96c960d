// Package atomicfile writes state files so that a crash at any point
// leaves either the old content or the new, never a mix or an empty file:
// the data goes to a temp file in the same directory, which is fsynced,
// renamed over the target, and the directory fsynced so the rename itself
// survives a power cut. Every place peapod writes state uses it.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes data to path with mode perm, crash-safely.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteFrom writes what r yields to path with mode perm, crash-safely: a
// reader that fails midway leaves the old file as it was.
func WriteFrom(path string, r io.Reader, perm os.FileMode) error {
	return write(path, perm, func(f *os.File) error {
		_, err := io.Copy(f, r)
		return err
	})
}

func write(path string, perm os.FileMode, fill func(*os.File) error) (err error) {
	dir := filepath.Dir(path)
	// The temp name is hidden and ends in no extension a reader lists
	// (*.json, *.conflist), so a directory scan never picks up a
	// half-written file; it is unique, so concurrent writers of one path
	// do not write into each other's temp file.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some filesystems cannot fsync a directory; the rename is done.
	if errors.Is(err, os.ErrInvalid) {
		return nil
	}
	return err
}
