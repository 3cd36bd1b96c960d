package volumes

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// atomicWriter publishes a set of files into a directory so that a reader
// sees either the whole old set or the whole new set, as the kubelet's
// AtomicWriter does for configMap, secret, downwardAPI and projected volumes:
//
//	<dir>/..2026_01_02_15_04_05.123456789/  the payload, one timestamped dir per version
//	<dir>/..data -> ..2026_01_02_...         swapped by rename(2) of ..data_tmp
//	<dir>/<key>  -> ..data/<key>             the user-visible names, one per top-level entry
//
// A write: (1) validate, (2) compare with the current version and stop when
// nothing changed, (3) write the new version into a fresh timestamped dir,
// (4) create the missing user-visible symlinks, (4b) apply the pod's fsGroup
// to the whole volume (the kubelet's setPerms), (5) point ..data_tmp at the
// new dir and rename it over ..data, (6) remove user-visible names that left
// the payload, (7) remove the old version. Until step 5 readers see the old
// files; after it, the new ones, already with their group and mode.
type atomicWriter struct {
	dir string
	// owner, when set, is the pod's fsGroup for this volume: applied to
	// the volume each time a new version is written, and part of what an
	// unchanged version looks like (group read on every file).
	owner *volumeOwnership
	// beforeSwap, when set, runs between steps 4 and 5 (tests).
	beforeSwap func()
}

// fileProjection is one file of a payload.
type fileProjection struct {
	Data []byte
	Mode os.FileMode
}

const (
	dataDirName    = "..data"
	newDataDirName = "..data_tmp"
)

// validatePayloadPath rejects absolute paths, '..' elements and paths that
// start with '..' (reserved for the writer's own entries).
func validatePayloadPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case filepath.IsAbs(p):
		return fmt.Errorf("%q: must be relative", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("%q: must not start with '..'", p)
	case len(p) > 4096:
		return fmt.Errorf("%q: too long", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%q: must not contain '..'", p)
		}
	}
	return nil
}

func (w *atomicWriter) Write(payload map[string]fileProjection) error {
	clean := make(map[string]fileProjection, len(payload))
	for p, f := range payload {
		if err := validatePayloadPath(p); err != nil {
			return fmt.Errorf("invalid payload path: %w", err)
		}
		clean[filepath.Clean(p)] = f
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return err
	}

	// (2) current version
	oldTS, _ := os.Readlink(filepath.Join(w.dir, dataDirName))
	oldTSPath := ""
	if oldTS != "" {
		oldTSPath = filepath.Join(w.dir, oldTS)
		if same, err := sameContent(oldTSPath, clean, w.owner); err == nil && same {
			return nil
		}
	}
	oldUserVisible := map[string]bool{}
	if oldTSPath != "" {
		ents, _ := os.ReadDir(oldTSPath)
		for _, e := range ents {
			oldUserVisible[e.Name()] = true
		}
	}

	// (3) new version
	tsDir, err := os.MkdirTemp(w.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	tsName := filepath.Base(tsDir)
	if err := os.Chmod(tsDir, 0o755); err != nil {
		os.RemoveAll(tsDir)
		return err
	}
	if err := writePayload(tsDir, clean); err != nil {
		os.RemoveAll(tsDir)
		return err
	}

	// (4) user-visible symlinks for the new top-level names
	newUserVisible := map[string]bool{}
	for p := range clean {
		top := strings.SplitN(p, "/", 2)[0]
		newUserVisible[top] = true
	}
	for top := range newUserVisible {
		link := filepath.Join(w.dir, top)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(dataDirName, top) {
			continue
		}
		if _, err := os.Lstat(link); err == nil {
			// A stale non-symlink with this name (never ours): replace it.
			if err := os.RemoveAll(link); err != nil {
				os.RemoveAll(tsDir)
				return err
			}
		}
		if err := os.Symlink(filepath.Join(dataDirName, top), link); err != nil {
			os.RemoveAll(tsDir)
			return err
		}
	}

	// (4b) the kubelet walks the whole volume, not only the new version:
	// on the first write the root and the symlinks are new too.
	if w.owner != nil {
		if err := w.owner.apply(w.dir); err != nil {
			os.RemoveAll(tsDir)
			return fmt.Errorf("fsGroup %d: %w", w.owner.fsGroup, err)
		}
	}

	if w.beforeSwap != nil {
		w.beforeSwap()
	}

	// (5) the swap
	tmpLink := filepath.Join(w.dir, newDataDirName)
	os.Remove(tmpLink)
	if err := os.Symlink(tsName, tmpLink); err != nil {
		os.RemoveAll(tsDir)
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(w.dir, dataDirName)); err != nil {
		os.Remove(tmpLink)
		os.RemoveAll(tsDir)
		return err
	}

	// (6) names that left the payload
	for top := range oldUserVisible {
		if !newUserVisible[top] {
			os.Remove(filepath.Join(w.dir, top))
		}
	}
	// (7) old version (and leftovers of interrupted writes)
	ents, _ := os.ReadDir(w.dir)
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "..") && n != dataDirName && n != tsName && e.IsDir() {
			os.RemoveAll(filepath.Join(w.dir, n))
		}
	}
	return nil
}

func writePayload(root string, payload map[string]fileProjection) error {
	for p, f := range payload {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(full, f.Data, mode); err != nil {
			return err
		}
		// WriteFile's mode is filtered by the umask; set it exactly.
		if err := os.Chmod(full, mode); err != nil {
			return err
		}
	}
	return nil
}

// sameContent reports whether dir holds exactly payload (data and modes,
// the modes as owner leaves them).
func sameContent(dir string, payload map[string]fileProjection, owner *volumeOwnership) (bool, error) {
	n := 0
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		f, ok := payload[rel]
		if !ok {
			return errDiffer
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if info.Mode().Perm() != owner.fileMode(mode).Perm() {
			return errDiffer
		}
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, f.Data) {
			return errDiffer
		}
		n++
		return nil
	})
	if err == errDiffer {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return n == len(payload), nil
}

var errDiffer = fmt.Errorf("content differs")
