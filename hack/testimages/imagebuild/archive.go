package imagebuild

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations WriteOCIArchive puts on the image's descriptor in index.json.
const (
	AnnotationRefName       = "org.opencontainers.image.ref.name"
	AnnotationContainerdRef = "io.containerd.image.name"
)

// WriteOCIArchive writes an OCI image layout holding img, as a tar stream
// (the format of `ctr images export` / `skopeo copy oci-archive:`), with
// index.json's descriptor annotated with refName (e.g. ArchiveRefName).
// Entries are sorted with mtime 0, so the archive is reproducible too.
func WriteOCIArchive(w io.Writer, img v1.Image, refName string) error {
	tmp, err := os.MkdirTemp("", "peapod-oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		AnnotationRefName:       refName,
		AnnotationContainerdRef: refName,
	})); err != nil {
		return err
	}
	return tarDir(w, tmp)
}

// WriteOCIArchiveFile is WriteOCIArchive to a new file at path.
func WriteOCIArchiveFile(path string, img v1.Image, refName string) error {
	return writeFile(path, func(w io.Writer) error { return WriteOCIArchive(w, img, refName) })
}

// WriteDockerArchiveFile writes a `docker save`-style tarball (manifest.json
// with RepoTags [tag], config and layer blobs) of img to path.
func WriteDockerArchiveFile(path string, img v1.Image, tag string) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return writeFile(path, func(w io.Writer) error { return tarball.Write(t, img, w) })
}

func writeFile(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// tarDir writes the regular files and directories under root as a tar
// stream: sorted, mtime 0, root-owned, 0644/0755.
func tarDir(w io.Writer, root string) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Format: tar.FormatUSTAR}
		switch {
		case st.IsDir():
			h.Typeflag, h.Mode, h.Name = tar.TypeDir, 0o755, h.Name+"/"
		case st.Mode().IsRegular():
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
		default:
			return fmt.Errorf("%s: unexpected file type %v in OCI layout", p, st.Mode())
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
