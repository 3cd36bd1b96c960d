package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"k8s.io/klog/v2"
)

// Annotations naming an image in an OCI layout's index.json.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// Import loads a tar holding an OCI image layout (index.json; names from the
// io.containerd.image.name annotation, else org.opencontainers.image.ref.name
// when it is a full reference — a bare tag like "latest" leaves the image
// unnamed, reachable by id) or a `docker save` archive (manifest.json with
// RepoTags). When both are present (docker 25+, and Export) index.json wins.
func (s *Service) Import(ctx context.Context, r io.Reader) ([]*Image, error) {
	dir, err := os.MkdirTemp(s.tmpDir, "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := extractArchive(r, dir); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	type item struct {
		img  v1.Image
		rec  *record
		what string
	}
	var items []item
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("import: OCI layout: %w", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("import: OCI layout: %w", err)
		}
		for _, d := range im.Manifests {
			img, err := s.imageFromIndexDesc(idx, d)
			if err != nil {
				return nil, fmt.Errorf("import: %s: %w", d.Digest, err)
			}
			rec := &record{}
			n := d.Annotations[annotationContainerdName]
			if n == "" && strings.ContainsAny(d.Annotations[annotationRefName], "/:@") {
				n = d.Annotations[annotationRefName]
			}
			if n != "" {
				repo, suffix, err := splitRef(n)
				if err != nil {
					return nil, fmt.Errorf("import: %w", err)
				}
				if strings.HasPrefix(suffix, ":") {
					rec.RepoTags = []string{repo + suffix}
				}
				rec.RepoDigests = []string{repo + "@" + d.Digest.String()}
			}
			items = append(items, item{img, rec, d.Digest.String()})
		}
	} else if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err == nil {
		opener := func() (io.ReadCloser, error) { return tarDir(dir), nil }
		m, err := tarball.LoadManifest(opener)
		if err != nil {
			return nil, fmt.Errorf("import: manifest.json: %w", err)
		}
		for _, e := range m {
			var tag *name.Tag
			rec := &record{}
			for _, t := range e.RepoTags {
				named, err := Normalize(t)
				if err != nil {
					return nil, fmt.Errorf("import: %w", err)
				}
				rec.RepoTags = append(rec.RepoTags, named)
				if tag == nil {
					tt, err := name.NewTag(t)
					if err != nil {
						return nil, fmt.Errorf("import: %w", err)
					}
					tag = &tt
				}
			}
			img, err := tarball.Image(opener, tag)
			if err != nil {
				return nil, fmt.Errorf("import: %s: %w", e.Config, err)
			}
			items = append(items, item{img, rec, e.Config})
		}
	} else {
		return nil, errors.New("import: neither index.json (OCI layout) nor manifest.json (docker save) in archive")
	}
	var out []*Image
	for _, it := range items {
		fetch := func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
			l, err := it.img.LayerByDigest(d)
			if err != nil {
				return nil, err
			}
			return l.Compressed()
		}
		img, err := s.ingest(ctx, it.what, it.img, it.rec, fetch, &progress{}, func() {})
		if err != nil {
			return out, fmt.Errorf("import %s: %w", it.what, err)
		}
		klog.InfoS("Imported image", "image", img.ID, "tags", img.RepoTags)
		out = append(out, img)
	}
	return out, nil
}

func (s *Service) imageFromIndexDesc(idx v1.ImageIndex, d v1.Descriptor) (v1.Image, error) {
	if !d.MediaType.IsIndex() {
		return idx.Image(d.Digest)
	}
	child, err := idx.ImageIndex(d.Digest)
	if err != nil {
		return nil, err
	}
	cm, err := child.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, c := range cm.Manifests {
		if c.Platform != nil && c.Platform.Satisfies(*s.o.Platform) {
			return s.imageFromIndexDesc(child, c)
		}
	}
	return nil, fmt.Errorf("no image for platform %s", s.o.Platform)
}

// extractArchive unpacks regular files and dirs of an image archive into
// dir; anything else, or a name leaving dir, is refused.
func extractArchive(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		rel := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if rel == "." {
			continue
		}
		if !filepath.IsLocal(rel) {
			return fmt.Errorf("archive entry %q escapes the archive", hdr.Name)
		}
		p := filepath.Join(dir, rel)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg, tar.TypeRegA:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("archive entry %q: type %q not supported", hdr.Name, hdr.Typeflag)
		}
	}
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

type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Export writes the images refs resolve to as one tar that is both an OCI
// image layout (oci-layout, index.json, blobs/sha256/...) and a `docker
// save` archive (manifest.json pointing into the same blobs), as docker 25+
// writes. Layers stay compressed. Import reads it back.
func (s *Service) Export(ctx context.Context, w io.Writer, refs []string) error {
	s.mu.Lock()
	var recs []*record
	for _, ref := range refs {
		r, err := s.resolveLocked(ref)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("export %s: %w", ref, err)
		}
		if !slices.Contains(recs, r) {
			c := *r
			recs = append(recs, &c)
		}
	}
	var keys []string
	for _, r := range recs {
		keys = append(keys, "blob:"+hexOf(r.ID), "blob:"+hexOf(r.Manifest))
		for _, l := range r.Layers {
			keys = append(keys, "blob:"+hexOf(l.Digest))
		}
	}
	s.mu.Unlock()
	defer s.lease(keys)() // (blobs of a record removed meanwhile could already be gone: then we fail below)

	tw := tar.NewWriter(w)
	written := map[string]bool{}
	writeFile := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	writeBlob := func(digest string) error {
		if written[digest] {
			return nil
		}
		written[digest] = true
		f, err := os.Open(s.blobPath(digest))
		if err != nil {
			return fmt.Errorf("export blob %s: %w", digest, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + hexOf(digest), Mode: 0o644, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	}
	if err := writeFile("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	var dm []dockerManifest
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := dockerManifest{Config: "blobs/sha256/" + hexOf(r.ID), RepoTags: slices.Clone(r.RepoTags)}
		for _, d := range append([]string{r.Manifest, r.ID}, layerDigests(r)...) {
			if err := writeBlob(d); err != nil {
				return err
			}
		}
		for _, l := range r.Layers {
			e.Layers = append(e.Layers, "blobs/sha256/"+hexOf(l.Digest))
		}
		dm = append(dm, e)
		fi, err := os.Stat(s.blobPath(r.Manifest))
		if err != nil {
			return err
		}
		h, err := v1.NewHash(r.Manifest)
		if err != nil {
			return err
		}
		desc := v1.Descriptor{MediaType: types.MediaType(r.ManifestMediaType), Digest: h, Size: fi.Size()}
		if len(r.RepoTags) == 0 {
			index.Manifests = append(index.Manifests, desc)
		}
		for _, t := range r.RepoTags {
			d := desc
			_, tag, _ := strings.Cut(t[strings.LastIndex(t, "/"):], ":")
			d.Annotations = map[string]string{annotationContainerdName: t, annotationRefName: tag}
			index.Manifests = append(index.Manifests, d)
		}
	}
	ij, err := json.Marshal(index)
	if err != nil {
		return err
	}
	if err := writeFile("index.json", ij); err != nil {
		return err
	}
	mj, err := json.Marshal(dm)
	if err != nil {
		return err
	}
	if err := writeFile("manifest.json", mj); err != nil {
		return err
	}
	return tw.Close()
}

func layerDigests(r *record) []string {
	var out []string
	for _, l := range r.Layers {
		out = append(out, l.Digest)
	}
	return out
}
