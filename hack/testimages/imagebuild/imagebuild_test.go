package imagebuild_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"peapod/hack/testenv"
	"peapod/hack/testimages/imagebuild"
)

func build(t *testing.T) *imagebuild.Set {
	t.Helper()
	testenv.Require(t, imagebuild.DefaultBusybox, "busybox-static")
	s, err := imagebuild.Build(imagebuild.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// digests lists every manifest, config and layer digest of the set.
func digests(t *testing.T, s *imagebuild.Set) []string {
	t.Helper()
	var out []string
	add := func(what string, h v1.Hash, err error) {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		out = append(out, what+"="+h.String())
	}
	img := func(what string, i v1.Image) {
		d, err := i.Digest()
		add(what, d, err)
		c, err := i.ConfigName()
		add(what+" config", c, err)
		ls, err := i.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			d, err := l.Digest()
			add(what+" layer", d, err)
		}
	}
	img("busybox", s.Busybox)
	img("busybox-oci", s.BusyboxOCI)
	img("busybox-config", s.BusyboxConfig)
	img("whiteout", s.Whiteout)
	img("fake", s.FakeArch)
	d, err := s.BusyboxMulti.Digest()
	add("multi", d, err)
	return out
}

func TestReproducible(t *testing.T) {
	a, b := digests(t, build(t)), digests(t, build(t))
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("two builds differ:\n%s\n---\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	for _, d := range a {
		t.Log(d)
	}
	// The archives are reproducible too.
	s := build(t)
	var x, y bytes.Buffer
	if err := imagebuild.WriteOCIArchive(&x, s.BusyboxOCI, imagebuild.ArchiveRefName); err != nil {
		t.Fatal(err)
	}
	if err := imagebuild.WriteOCIArchive(&y, build(t).BusyboxOCI, imagebuild.ArchiveRefName); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x.Bytes(), y.Bytes()) {
		t.Fatal("two OCI archives of the same image differ")
	}
}

func TestLayersAreNormalised(t *testing.T) {
	s := build(t)
	ls, err := s.Whiteout.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		gz, _ := io.ReadAll(rc)
		rc.Close()
		// gzip header: magic, CM, FLG (no FNAME/FCOMMENT), MTIME = 0
		if len(gz) < 10 || gz[3] != 0 || !bytes.Equal(gz[4:8], []byte{0, 0, 0, 0}) {
			t.Errorf("layer %d: gzip header carries a name or a time: % x", i, gz[:10])
		}
		rc, err = l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		prev := ""
		links := false
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.ModTime.Unix() != 0 || h.Uname != "" || h.Gname != "" {
				t.Errorf("layer %d %s: mtime %v uname %q gname %q", i, h.Name, h.ModTime, h.Uname, h.Gname)
			}
			if h.Typeflag == tar.TypeLink {
				if !links {
					links, prev = true, ""
				}
				if h.Mode != 0o755 {
					t.Errorf("hard link %s: mode %o, want its target's 0755", h.Name, h.Mode)
				}
			} else if links {
				t.Errorf("layer %d: %s after the hard links", i, h.Name)
			}
			if strings.TrimSuffix(h.Name, "/") < prev {
				t.Errorf("layer %d: %s sorts before %s", i, h.Name, prev)
			}
			prev = strings.TrimSuffix(h.Name, "/")
		}
		rc.Close()
	}
}

// TestWhiteoutExpectations flattens peapod/whiteout with go-containerregistry
// (a reference whiteout implementation) and checks the documented result.
func TestWhiteoutExpectations(t *testing.T) {
	s := build(t)
	rc := mutate.Extract(s.Whiteout)
	defer rc.Close()
	have := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		have["/"+strings.TrimSuffix(h.Name, "/")] = true
	}
	for _, p := range imagebuild.WhiteoutPresent {
		if !have[p] {
			t.Errorf("%s missing from the flattened whiteout image", p)
		}
	}
	for _, p := range imagebuild.WhiteoutAbsent {
		if have[p] {
			t.Errorf("%s present in the flattened whiteout image", p)
		}
	}
}

func TestOCIArchive(t *testing.T) {
	s := build(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "busybox.oci.tar")
	if err := imagebuild.WriteOCIArchiveFile(archive, s.BusyboxOCI, imagebuild.ArchiveRefName); err != nil {
		t.Fatal(err)
	}
	// Unpack the tar and read it back as an OCI layout.
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lay := filepath.Join(dir, "layout")
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(lay, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, _ := io.ReadAll(tr)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(m.Manifests))
	}
	desc := m.Manifests[0]
	if got := desc.Annotations[imagebuild.AnnotationRefName]; got != imagebuild.ArchiveRefName {
		t.Errorf("ref.name annotation %q, want %q", got, imagebuild.ArchiveRefName)
	}
	want, _ := s.BusyboxOCI.Digest()
	if desc.Digest != want {
		t.Errorf("archived manifest %s, want %s", desc.Digest, want)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validateLayers(img); err != nil {
		t.Fatal(err)
	}
}

func TestDockerArchive(t *testing.T) {
	s := build(t)
	archive := filepath.Join(t.TempDir(), "busybox.docker.tar")
	if err := imagebuild.WriteDockerArchiveFile(archive, s.Busybox, imagebuild.DockerArchiveTag); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(imagebuild.DockerArchiveTag)
	img, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatal(err)
	}
	gotCfg, _ := img.ConfigName()
	wantCfg, _ := s.Busybox.ConfigName()
	if gotCfg != wantCfg {
		t.Errorf("config %s, want %s", gotCfg, wantCfg)
	}
	if err := validateLayers(img); err != nil {
		t.Fatal(err)
	}
}

// validateLayers reads every layer and checks it against its digest.
func validateLayers(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			return err
		}
		if err := rc.Close(); err != nil {
			return err
		}
	}
	return nil
}

func TestRootfs(t *testing.T) {
	dir := testenv.BusyboxRootfs(t, "")
	bb, err := os.Stat(filepath.Join(dir, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	applets, err := imagebuild.Applets(imagebuild.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		st, err := os.Stat(filepath.Join(dir, "bin", a))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(bb, st) {
			t.Fatalf("/bin/%s is not a hard link of /bin/busybox", a)
		}
	}
	if n := bb.Sys().(*syscall.Stat_t).Nlink; int(n) != len(applets)+1 {
		t.Errorf("/bin/busybox has %d links, want %d", n, len(applets)+1)
	}
	st, err := os.Stat(filepath.Join(dir, "tmp"))
	if err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("/tmp: %v %v, want drwxrwxrwt", st.Mode(), err)
	}
	pw, err := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	if err != nil || !strings.Contains(string(pw), "www-data:x:33:33:") || !strings.Contains(string(pw), "user:x:1000:1000:") {
		t.Errorf("/etc/passwd: %q %v", pw, err)
	}
	// Writing again over the same dir works (idempotent).
	if err := imagebuild.WriteRootfs(dir, imagebuild.Options{}); err != nil {
		t.Fatal(err)
	}
}
