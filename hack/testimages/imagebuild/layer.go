package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the only timestamp that appears in the test images: every tar
// entry's mtime, every config's "created" and every history entry.
var epoch = time.Unix(0, 0).UTC()

// entry is one file system object of a layer. Paths are relative and
// slash-separated ("bin/sh"); directories carry no trailing slash.
type entry struct {
	path     string
	typ      byte // tar.TypeDir, tar.TypeReg, tar.TypeLink, tar.TypeSymlink
	mode     int64
	uid, gid int
	data     []byte
	link     string // TypeLink: the target path, relative ("bin/busybox"); TypeSymlink: the link's content
}

func dir(p string, mode int64) entry { return entry{path: p, typ: tar.TypeDir, mode: mode} }

func file(p string, mode int64, data string) entry {
	return entry{path: p, typ: tar.TypeReg, mode: mode, data: []byte(data)}
}

// hardlink is a hard link to target. Its header repeats the target's mode, as
// GNU tar and Docker write it: some extractors chmod the link path to the
// header's mode, which with mode 0 would make the shared inode unusable.
func hardlink(p, target string, mode int64) entry {
	return entry{path: p, typ: tar.TypeLink, link: target, mode: mode}
}

// symlink is a symbolic link whose content is target, as written ("agnhost"
// is relative to the link's directory), mode 0777 as ln -s makes it.
func symlink(p, target string) entry {
	return entry{path: p, typ: tar.TypeSymlink, link: target, mode: 0o777}
}

// sortEntries gives a layer its one fixed order: every non-link entry sorted by
// path (a parent directory sorts before its children), then every hard link
// sorted by path, so that a link never precedes its target in the stream.
func sortEntries(es []entry) []entry {
	out := append([]entry(nil), es...)
	sort.SliceStable(out, func(i, j int) bool {
		li, lj := out[i].typ == tar.TypeLink, out[j].typ == tar.TypeLink
		if li != lj {
			return lj
		}
		return out[i].path < out[j].path
	})
	return out
}

// tarLayer writes the entries as an uncompressed tar stream: sorted, mtime 0,
// no user or group names, USTAR format.
func tarLayer(es []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range sortEntries(es) {
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     e.path,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  epoch,
			Format:   tar.FormatUSTAR,
		}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		case tar.TypeLink, tar.TypeSymlink:
			h.Linkname = e.link
		default:
			return nil, fmt.Errorf("entry %s: unsupported type %q", e.path, e.typ)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("entry %s: %w", e.path, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipBytes compresses like `gzip -n`: no file name, mtime 0, default level.
// The result depends only on the input and the Go release's compress/flate.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf) // zero Header: no name, no comment, mtime 0
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// newLayer turns entries into a gzip-compressed layer of media type mt
// (types.DockerLayer or types.OCILayer). The layer's digest is the sha256 of
// exactly these compressed bytes.
func newLayer(es []entry, mt types.MediaType) (v1.Layer, error) {
	raw, err := tarLayer(es)
	if err != nil {
		return nil, err
	}
	gz, err := gzipBytes(raw)
	if err != nil {
		return nil, err
	}
	return layerFromGzip(gz, mt)
}

func layerFromGzip(gz []byte, mt types.MediaType) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(mt))
}

// writeTree lays entries out under root. Ownership is applied only when the
// caller is root; mtimes are set to the epoch, as in the layer.
func writeTree(root string, es []entry) error {
	asRoot := os.Geteuid() == 0
	es = sortEntries(es)
	for _, e := range es {
		p := filepath.Join(root, filepath.FromSlash(e.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch e.typ {
		case tar.TypeDir:
			if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
				return err
			}
		case tar.TypeReg:
			if err := os.WriteFile(p, e.data, 0o600); err != nil {
				return err
			}
		case tar.TypeLink:
			_ = os.Remove(p)
			if err := os.Link(filepath.Join(root, filepath.FromSlash(e.link)), p); err != nil {
				return err
			}
			continue // a hard link shares its target's inode: nothing more to set
		case tar.TypeSymlink:
			_ = os.Remove(p)
			if err := os.Symlink(e.link, p); err != nil {
				return err
			}
			if asRoot {
				if err := os.Lchown(p, e.uid, e.gid); err != nil {
					return err
				}
			}
			continue // no mode of its own; its time is left alone (Chtimes follows links)
		}
		if asRoot {
			if err := os.Lchown(p, e.uid, e.gid); err != nil {
				return err
			}
		}
		if err := os.Chmod(p, fileMode(e.mode, e.typ)); err != nil {
			return err
		}
	}
	// Directories last and deepest first, so creating children does not bump
	// a parent's mtime after it was set.
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		if e.typ == tar.TypeLink || e.typ == tar.TypeSymlink {
			continue
		}
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(e.path)), epoch, epoch); err != nil {
			return err
		}
	}
	return os.Chtimes(root, epoch, epoch)
}

func fileMode(m int64, typ byte) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if typ == tar.TypeDir {
		mode |= os.ModeDir
	}
	return mode
}

// parents returns a directory entry (0755, root-owned) for every ancestor of
// the given paths that es does not already hold.
func withParents(es []entry) []entry {
	have := map[string]bool{}
	for _, e := range es {
		have[e.path] = true
	}
	out := es
	for _, e := range es {
		for d := path.Dir(e.path); d != "." && d != "/"; d = path.Dir(d) {
			if !have[d] {
				have[d] = true
				out = append(out, dir(d, 0o755))
			}
		}
	}
	return out
}
