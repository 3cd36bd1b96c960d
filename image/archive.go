package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
// The layout may also be the only directory of the tar (a tarred layout
// dir). Links inside the archive are accepted as archive_read.go says.
// Each image is ingested whole or not at all: a failure leaves no record,
// blob or snapshot of the failing image; the images of the archive
// imported before it stay, and are returned with the error.
func (s *Service) Import(ctx context.Context, r io.Reader) ([]*Image, error) {
	dir, err := os.MkdirTemp(s.tmpDir, "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := extractArchive(r, dir); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	items, err := s.archiveImages(archiveRoot(dir))
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
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

// archiveImage is one image found in an extracted archive.
type archiveImage struct {
	img  v1.Image
	rec  *record
	what string // for errors: its name and digest
}

// archiveImages lists the images of the extracted archive in dir.
func (s *Service) archiveImages(dir string) ([]archiveImage, error) {
	var items []archiveImage
	if fi, err := os.Stat(filepath.Join(dir, "index.json")); err == nil && fi.Mode().IsRegular() {
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("OCI layout: %w", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("OCI layout: index.json: %w", err)
		}
		for _, d := range im.Manifests {
			rec := &record{}
			what := d.Digest.String()
			n := d.Annotations[annotationContainerdName]
			if n == "" && strings.ContainsAny(d.Annotations[annotationRefName], "/:@") {
				n = d.Annotations[annotationRefName]
			}
			if n != "" {
				repo, suffix, err := splitRef(n)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", what, err)
				}
				if strings.HasPrefix(suffix, ":") {
					rec.RepoTags = []string{repo + suffix}
				}
				rec.RepoDigests = []string{repo + "@" + d.Digest.String()}
				what = repo + suffix + " (" + what + ")"
			}
			img, err := s.imageFromIndexDesc(idx, d, 0)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			items = append(items, archiveImage{img, rec, what})
		}
		return items, nil
	}
	if fi, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil || !fi.Mode().IsRegular() {
		return nil, errors.New("neither index.json (OCI layout) nor manifest.json (docker save) in the archive")
	}
	opener := func() (io.ReadCloser, error) { return tarDir(dir), nil }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	for _, e := range m {
		var tag *name.Tag
		rec := &record{}
		for _, t := range e.RepoTags {
			named, err := Normalize(t)
			if err != nil {
				return nil, fmt.Errorf("manifest.json: %w", err)
			}
			rec.RepoTags = append(rec.RepoTags, named)
			if tag == nil {
				tt, err := name.NewTag(t)
				if err != nil {
					return nil, fmt.Errorf("manifest.json: %w", err)
				}
				tag = &tt
			}
		}
		what := e.Config
		if len(rec.RepoTags) > 0 {
			what = rec.RepoTags[0] + " (" + e.Config + ")"
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		items = append(items, archiveImage{img, rec, what})
	}
	return items, nil
}

// maxIndexDepth bounds nested indexes in a layout (real ones nest once).
const maxIndexDepth = 4

// imageFromIndexDesc returns the image d names in idx, resolving nested
// indexes to the node's platform. ggcr's layout reader trusts the blob at
// blobs/sha256/<hex> to be what its name says; each manifest and index is
// checked against its descriptor here, so the digest recorded as a
// RepoDigest is the digest of what was stored.
func (s *Service) imageFromIndexDesc(idx v1.ImageIndex, d v1.Descriptor, depth int) (v1.Image, error) {
	if !d.MediaType.IsIndex() {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, archiveBlobErr("manifest", d.Digest, err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			return nil, archiveBlobErr("manifest", d.Digest, err)
		}
		if err := checkDescriptor("manifest", d, raw); err != nil {
			return nil, err
		}
		return img, nil
	}
	if depth >= maxIndexDepth {
		return nil, fmt.Errorf("index %s: indexes nested more than %d deep", d.Digest, maxIndexDepth)
	}
	child, err := idx.ImageIndex(d.Digest)
	if err != nil {
		return nil, archiveBlobErr("index", d.Digest, err)
	}
	raw, err := child.RawManifest()
	if err != nil {
		return nil, archiveBlobErr("index", d.Digest, err)
	}
	if err := checkDescriptor("index", d, raw); err != nil {
		return nil, err
	}
	cm, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", d.Digest, err)
	}
	c, err := selectPlatform(cm, d.Digest, *s.o.Platform)
	if err != nil {
		return nil, err
	}
	return s.imageFromIndexDesc(child, c, depth+1)
}

// checkDescriptor verifies raw is the blob descriptor d names.
func checkDescriptor(kind string, d v1.Descriptor, raw []byte) error {
	got, n, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if got != d.Digest {
		return fmt.Errorf("%s %s: digest mismatch: the archive's blob is %s", kind, d.Digest, got)
	}
	if d.Size != n {
		return fmt.Errorf("%s %s: size mismatch: the descriptor says %d bytes, the blob has %d", kind, d.Digest, d.Size, n)
	}
	return nil
}

// archiveBlobErr says "not in the archive" for a blob the layout lacks,
// rather than the open error on a temporary path.
func archiveBlobErr(kind string, d v1.Hash, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s is not in the archive", kind, d)
	}
	return fmt.Errorf("%s %s: %w", kind, d, err)
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
