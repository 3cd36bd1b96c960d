package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Reading an image archive (`peapod images import`) safely.
//
// Real tools link entries to each other: skopeo's docker-archive (and
// Docker ≥ 25's `docker save`) write each layer once and add the legacy
// `<id>/layer.tar` as a symlink to it (`../<hex>.tar`,
// `../blobs/sha256/<hex>`); other writers use tar hardlinks for the same
// blob reached under two names. Links are resolved by name inside the
// archive, never on the filesystem: a link must lead, possibly through
// other links, to a regular-file entry of the same archive, and is then
// materialised as a hardlink to that already-extracted file. So no symlink
// ever exists on disk under the extraction dir, and nothing is read or
// written outside it. Refused, each with an error naming the entry: an
// absolute link target, a target leaving the archive (`../etc/passwd`), a
// target missing from the archive, a link to a directory, link cycles,
// devices, FIFOs, and a name given twice.
//
// A link is resolved lexically: `a/../b` is `b`, and a path through a
// directory reached by a symlink (`x/file` with `x -> blobs`) is not
// followed, since no image tool writes one.

// maxLinkHops bounds a chain of links, like the kernel's ELOOP (40).
const maxLinkHops = 40

type entryKind uint8

const (
	kindDir entryKind = iota + 1
	kindFile
	kindLink
)

type archiveLink struct {
	name   string // the entry as the archive names it, for errors
	target string // cleaned, relative to the archive root
}

// archiveIndex is what extractArchive learns of an archive's names.
type archiveIndex struct {
	kinds map[string]entryKind   // cleaned name -> kind ("." is the root dir)
	links map[string]archiveLink // cleaned name -> where it points
}

// addParents records the implicit directories above rel, refusing a name
// that goes through a file or a link (`f/x` where `f` is a file).
func (a *archiveIndex) addParents(hdrName, rel string) error {
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		switch a.kinds[d] {
		case 0:
			a.kinds[d] = kindDir
		case kindDir:
			return nil // its own parents were recorded with it
		default:
			return fmt.Errorf("archive entry %q: %q is not a directory in the archive", hdrName, d)
		}
	}
	return nil
}

// add records a name of kind k, refusing a name given twice (a directory
// may repeat, as tar writers do for implicit parents).
func (a *archiveIndex) add(hdrName, rel string, k entryKind) error {
	if err := a.addParents(hdrName, rel); err != nil {
		return err
	}
	if old := a.kinds[rel]; old != 0 && (old != kindDir || k != kindDir) {
		return fmt.Errorf("archive entry %q: the name appears twice in the archive", hdrName)
	}
	a.kinds[rel] = k
	return nil
}

// resolve follows the link rel to the regular file it ends at.
func (a *archiveIndex) resolve(rel string) (string, error) {
	l := a.links[rel]
	cur := rel
	seen := map[string]bool{}
	for hops := 0; ; hops++ {
		switch a.kinds[cur] {
		case kindFile:
			return cur, nil
		case kindDir:
			return "", fmt.Errorf("archive entry %q: link target %q is a directory (only links to files are accepted)", l.name, cur)
		case kindLink:
			if seen[cur] {
				return "", fmt.Errorf("archive entry %q: link cycle through %q", l.name, cur)
			}
			if hops >= maxLinkHops {
				return "", fmt.Errorf("archive entry %q: more than %d links in a chain", l.name, maxLinkHops)
			}
			seen[cur] = true
			cur = a.links[cur].target
		default:
			return "", fmt.Errorf("archive entry %q: link target %q is not in the archive", l.name, cur)
		}
	}
}

// archiveName cleans an entry's name; ok is false for the root itself.
func archiveName(name string) (rel string, ok bool, err error) {
	rel = path.Clean(strings.TrimPrefix(name, "./"))
	if rel == "." {
		return "", false, nil
	}
	if !filepath.IsLocal(rel) {
		return "", false, fmt.Errorf("archive entry %q escapes the archive", name)
	}
	return rel, true, nil
}

// linkTarget returns where the link entry hdr points, as a cleaned name
// relative to the archive root: a symlink's target is relative to the
// symlink's own directory, a hardlink's to the archive root.
func linkTarget(hdr *tar.Header, rel string) (string, error) {
	if hdr.Linkname == "" {
		return "", fmt.Errorf("archive entry %q: link without a target", hdr.Name)
	}
	if path.IsAbs(hdr.Linkname) {
		return "", fmt.Errorf("archive entry %q: absolute link target %q (only links to entries of the archive are accepted)", hdr.Name, hdr.Linkname)
	}
	var t string
	if hdr.Typeflag == tar.TypeSymlink {
		t = path.Join(path.Dir(rel), hdr.Linkname)
	} else {
		t = path.Clean(strings.TrimPrefix(hdr.Linkname, "./"))
	}
	if !filepath.IsLocal(t) {
		return "", fmt.Errorf("archive entry %q: link target %q leaves the archive", hdr.Name, hdr.Linkname)
	}
	return t, nil
}

// extractArchive unpacks the regular files and directories of an image
// archive into dir (empty, private to the caller) and then materialises
// its links as described above. Anything else is refused.
func extractArchive(r io.Reader, dir string) error {
	idx := &archiveIndex{kinds: map[string]entryKind{".": kindDir}, links: map[string]archiveLink{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX defaults for later entries (git archive writes one); Next applies them
		}
		rel, ok, err := archiveName(hdr.Name)
		if err != nil {
			return err
		}
		if !ok {
			if hdr.Typeflag != tar.TypeDir {
				return fmt.Errorf("archive entry %q: not a directory", hdr.Name)
			}
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := idx.add(hdr.Name, rel, kindDir); err != nil {
				return err
			}
			if err := os.MkdirAll(p, 0o700); err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
		case tar.TypeReg, tar.TypeRegA:
			if err := idx.add(hdr.Name, rel, kindFile); err != nil {
				return err
			}
			if err := writeArchiveFile(p, tr); err != nil {
				return fmt.Errorf("archive entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink, tar.TypeLink:
			t, err := linkTarget(hdr, rel)
			if err != nil {
				return err
			}
			if err := idx.add(hdr.Name, rel, kindLink); err != nil {
				return err
			}
			idx.links[rel] = archiveLink{name: hdr.Name, target: t}
		default:
			return fmt.Errorf("archive entry %q: type %q not supported (an image archive holds files, directories and links between them)", hdr.Name, hdr.Typeflag)
		}
	}
	// Links last: their targets may come later in the stream (skopeo writes
	// the legacy symlink before or after the blob).
	names := make([]string, 0, len(idx.links))
	for n := range idx.links {
		names = append(names, n)
	}
	slices.Sort(names)
	var errs []error
	for _, n := range names {
		t, err := idx.resolve(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("archive entry %q: %w", idx.links[n].name, err)
		}
		if err := os.Link(filepath.Join(dir, filepath.FromSlash(t)), p); err != nil {
			return fmt.Errorf("archive entry %q: %w", idx.links[n].name, err)
		}
	}
	return errors.Join(errs...)
}

func writeArchiveFile(p string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// archiveRoot is the directory of an extracted archive that holds the
// image: the archive's root, or its only top-level directory when the
// archive is a tarred layout dir (`tar cf x.tar mylayout`).
func archiveRoot(dir string) string {
	if hasImageIndex(dir) {
		return dir
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 || !ents[0].IsDir() {
		return dir
	}
	if sub := filepath.Join(dir, ents[0].Name()); hasImageIndex(sub) {
		return sub
	}
	return dir
}

func hasImageIndex(dir string) bool {
	for _, f := range []string{"index.json", "manifest.json"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil && fi.Mode().IsRegular() {
			return true
		}
	}
	return false
}

// tarDir streams the regular files of dir as a tar, so ggcr's docker-save
// reader (which wants a tar opener) can read an extracted archive.
func tarDir(dir string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
