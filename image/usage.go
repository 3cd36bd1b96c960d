package image

import (
	"errors"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"
)

// usageTTL is how long an FsUsage walk is reused.
const usageTTL = 5 * time.Second

// FsUsage walks Root and reports the bytes (allocated blocks) and inodes it
// uses; hard links count once. The result is cached for a few seconds.
func (s *Service) FsUsage() (FsUsage, error) {
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if time.Since(s.usageAt) < usageTTL {
		return s.usage, nil
	}
	u := FsUsage{Mountpoint: s.o.Root}
	type ino struct{ dev, ino uint64 }
	seen := map[ino]bool{}
	err := filepath.WalkDir(s.o.Root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != s.o.Root && (errorsIsNotExist(err)) {
				return nil // removed while walking (GC)
			}
			return err
		}
		if d.IsDir() && p == s.volumesDir() {
			return filepath.SkipDir // image volumes: the snapshots again, through overlay
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !d.IsDir() {
			k := ino{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		u.InodesUsed++
		u.UsedBytes += uint64(st.Blocks) * 512
		return nil
	})
	if err != nil {
		return FsUsage{}, err
	}
	s.usage, s.usageAt = u, time.Now()
	return u, nil
}

func errorsIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
