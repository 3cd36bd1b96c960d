package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ensureSnapshot unpacks layer l (whose blob is in the store) into
// snapshots/<chainID>, once, even for concurrent pulls.
func (s *Service) ensureSnapshot(ctx context.Context, chainID string, l layerRecord) error {
	dst := s.snapPath(chainID)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	_, err := s.snaps.Do(ctx, hexOf(chainID), func(ctx context.Context) (any, error) {
		if _, err := os.Stat(dst); err == nil {
			return nil, nil
		}
		tmp, err := os.MkdirTemp(s.tmpDir, "snap-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		fs := filepath.Join(tmp, "fs")
		if err := os.Mkdir(fs, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Open(s.blobPath(l.Digest))
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		defer f.Close()
		r, err := decompress(f)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		defer r.Close()
		diffID, err := unpackLayer(ctx, r, fs)
		if err != nil {
			return nil, fmt.Errorf("unpack layer %s: %w", l.Digest, err)
		}
		if diffID != l.DiffID {
			return nil, fmt.Errorf("layer %s: diffID mismatch: config says %s, content is %s", l.Digest, l.DiffID, diffID)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return nil, fmt.Errorf("commit snapshot %s: %w", chainID, err)
		}
		klog.V(2).InfoS("Unpacked layer", "layer", l.Digest, "chainID", chainID)
		return nil, nil
	})
	return err
}

type nopCloser struct{ io.Reader }

func (nopCloser) Close() error { return nil }

// decompress detects gzip, zstd or a plain tar by their magic numbers.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return nopCloser{br}, nil
}

// unpackLayer extracts the tar stream r into dir, which must be empty and
// private to the caller, converting OCI whiteouts to overlay ones, and
// returns the digest of the uncompressed stream (the diffID).
//
// Every path is resolved with openat2(RESOLVE_IN_ROOT) against dir, so a
// symlink (even one this layer planted) resolves inside dir; the final
// component of an entry is never followed.
func unpackLayer(ctx context.Context, r io.Reader, dir string) (string, error) {
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(r, h))
	rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", dir, err)
	}
	u := &unpacker{root: rootFd}
	defer unix.Close(rootFd)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("read tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return "", fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	// The diffID covers the whole stream, including the tar's padding.
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return "", err
	}
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("read tar: %w", err)
	}
	u.fixDirTimes()
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

type dirTime struct {
	rel string
	ts  [2]unix.Timespec
}

type unpacker struct {
	root     int
	dirTimes []dirTime
}

// cleanName refuses absolute names and any ".." component.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path refused")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New("path traversal (..) refused")
		}
	}
	return path.Clean(name), nil
}

func (u *unpacker) openInRoot(rel string, flags uint64, mode uint64) (int, error) {
	how := &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Mode:    mode,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for range 16 {
		fd, err := unix.Openat2(u.root, rel, how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
	return -1, unix.EAGAIN
}

// dir opens directory rel (resolved inside the root), creating missing
// components with mode 0755.
func (u *unpacker) dir(rel string) (int, error) {
	fd, err := u.openInRoot(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != unix.ENOENT || rel == "." {
		if err != nil {
			return -1, fmt.Errorf("open parent %s: %w", rel, err)
		}
		return fd, nil
	}
	pfd, err := u.dir(path.Dir(rel))
	if err != nil {
		return -1, err
	}
	err = unix.Mkdirat(pfd, path.Base(rel), 0o755)
	unix.Close(pfd)
	if err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("mkdir %s: %w", rel, err)
	}
	fd, err = u.openInRoot(rel, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, fmt.Errorf("open parent %s: %w (dangling symlink?)", rel, err)
	}
	return fd, nil
}

// clear removes whatever is at pfd/name, without following it. A directory
// is kept when keepDir is set.
func clear(pfd int, name string, keepDir bool) (existed bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return false, nil
		}
		return false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if keepDir {
			return true, nil
		}
		// os.RemoveAll works with openat/unlinkat below the fd and never
		// follows a symlink.
		return false, os.RemoveAll(fmt.Sprintf("/proc/self/fd/%d/%s", pfd, name))
	}
	return false, unix.Unlinkat(pfd, name, 0)
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the root itself: keep the snapshot dir's own mode
	}
	parent, base := path.Dir(rel), path.Base(rel)

	if strings.HasPrefix(base, ".wh.") {
		return u.whiteout(parent, base)
	}

	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("device node refused (%d:%d)", hdr.Devmajor, hdr.Devminor)
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		return fmt.Errorf("unsupported tar entry type %q refused", hdr.Typeflag)
	}

	pfd, err := u.dir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	mode := uint32(hdr.Mode) & 0o7777

	switch hdr.Typeflag {
	case tar.TypeDir:
		existed, err := clear(pfd, base, true)
		if err != nil {
			return err
		}
		if !existed {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return err
			}
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := u.attrs(fd, hdr, mode); err != nil {
			return err
		}
		u.dirTimes = append(u.dirTimes, dirTime{rel, times(hdr)})
		return nil

	case tar.TypeReg, tar.TypeRegA:
		if _, err := clear(pfd, base, false); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), base)
		defer f.Close()
		if _, err := io.Copy(f, r); err != nil {
			return err
		}
		if err := u.attrs(fd, hdr, mode); err != nil {
			return err
		}

	case tar.TypeSymlink:
		if _, err := clear(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return err
		}
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		}
		if target == rel || target == "." {
			return fmt.Errorf("hardlink to %q refused", hdr.Linkname)
		}
		tfd, err := u.openInRoot(path.Dir(target), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		}
		defer unix.Close(tfd)
		if _, err := clear(pfd, base, false); err != nil {
			return err
		}
		// Flags 0: a symlink target is linked itself, never followed.
		if err := unix.Linkat(tfd, path.Base(target), pfd, base, 0); err != nil {
			return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		return nil // a hard link shares the target's attributes

	case tar.TypeFifo:
		if _, err := clear(pfd, base, false); err != nil {
			return err
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
		fd, err := unix.Openat(pfd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fchownat(fd, "", hdr.Uid, hdr.Gid, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
		// chmod through the fd's magic link: it names the fifo itself.
		if err := os.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), os.FileMode(mode&0o777)|os.ModeNamedPipe); err != nil {
			return err
		}
	}
	ts := times(hdr)
	return unix.UtimesNanoAt(pfd, base, ts[:], unix.AT_SYMLINK_NOFOLLOW)
}

func times(hdr *tar.Header) [2]unix.Timespec {
	at := hdr.AccessTime
	if at.IsZero() {
		at = hdr.ModTime
	}
	return [2]unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
}

// attrs sets owner, mode (after chown, which clears setuid) and xattrs on
// an open regular file or directory.
func (u *unpacker) attrs(fd int, hdr *tar.Header, mode uint32) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(name, "trusted.overlay.") {
			klog.InfoS("Dropping overlay xattr from layer", "entry", hdr.Name, "xattr", name)
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			if err == unix.ENOTSUP || err == unix.EPERM {
				klog.V(2).InfoS("Cannot set xattr", "entry", hdr.Name, "xattr", name, "err", err)
				continue
			}
			return fmt.Errorf("xattr %s: %w", name, err)
		}
	}
	return nil
}

// whiteout turns OCI whiteouts into overlay ones: ".wh..wh..opq" marks its
// directory opaque, ".wh.<name>" becomes a 0:0 character device <name>.
func (u *unpacker) whiteout(parent, base string) error {
	if base == ".wh..wh..opq" {
		fd, err := u.dir(parent)
		if err != nil {
			return err
		}
		unix.Close(fd)
		dfd, err := u.openInRoot(parent, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return unix.Fsetxattr(dfd, "trusted.overlay.opaque", []byte("y"), 0)
	}
	if strings.HasPrefix(base, ".wh..wh.") {
		return nil // aufs bookkeeping (.wh..wh.plnk, ...)
	}
	name := strings.TrimPrefix(base, ".wh.")
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("invalid whiteout %q", base)
	}
	pfd, err := u.dir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if _, err := clear(pfd, name, false); err != nil {
		return err
	}
	return unix.Mknodat(pfd, name, unix.S_IFCHR, 0)
}

func (u *unpacker) fixDirTimes() {
	for i := len(u.dirTimes) - 1; i >= 0; i-- {
		d := u.dirTimes[i]
		fd, err := u.openInRoot(path.Dir(d.rel), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			continue
		}
		_ = unix.UtimesNanoAt(fd, path.Base(d.rel), d.ts[:], unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(fd)
	}
}
