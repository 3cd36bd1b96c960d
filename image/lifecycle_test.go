package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestRemove(t *testing.T) {
	for _, tc := range []struct {
		name string
		ref  func(e *env, img *Image) string
	}{
		{"by tag", func(e *env, img *Image) string { return img.RepoTags[0] }},
		{"by id", func(e *env, img *Image) string { return img.ID }},
		{"by bare id", func(e *env, img *Image) string { return hexOf(img.ID) }},
		{"by id prefix", func(e *env, img *Image) string { return hexOf(img.ID)[:12] }},
		{"by digest", func(e *env, img *Image) string { return img.RepoDigests[0] }},
		{"by short name", func(e *env, img *Image) string { return e.reg.host + "/rm" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.reg.push(t, "rm:latest", must[v1.Image](t)(random.Image(256, 2)))
			e.reg.push(t, "other:1", must[v1.Image](t)(random.Image(256, 1)))
			img := e.pull(e.reg.host + "/rm")
			other := e.pull(e.reg.host + "/other:1")
			if err := e.svc.Remove(ctxT(t), tc.ref(e, img)); err != nil {
				t.Fatal(err)
			}
			if l := e.svc.List(); len(l) != 1 || l[0].ID != other.ID {
				t.Fatalf("List after remove = %v", l)
			}
			for _, q := range append(append([]string{img.ID}, img.RepoTags...), img.RepoDigests...) {
				if _, err := e.svc.Get(q); !errors.Is(err, ErrNotFound) {
					t.Errorf("Get(%s) after remove: %v", q, err)
				}
			}
			if n := dirNames(t, filepath.Join(e.root, "snapshots")); len(n) != 1 {
				t.Errorf("snapshots after remove: %v", n)
			}
			if n := dirNames(t, filepath.Join(e.root, "blobs/sha256")); len(n) != 3 {
				t.Errorf("blobs after remove: %v", n)
			}
			if err := e.svc.Remove(ctxT(t), img.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Remove = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestTagMoves: re-pulling a tag that now names another image moves the
// tag; an image left with no name at all is removed.
func TestTagMoves(t *testing.T) {
	e := newEnv(t)
	a, b := must[v1.Image](t)(random.Image(256, 1)), must[v1.Image](t)(random.Image(256, 1))
	e.reg.push(t, "app:latest", a)
	ia := e.pull(e.reg.host + "/app")
	e.reg.push(t, "app:latest", b)
	ib := e.pull(e.reg.host + "/app")
	ga := must[*Image](t)(e.svc.Get(ia.ID))
	if len(ga.RepoTags) != 0 || len(ga.RepoDigests) != 1 {
		t.Errorf("old image keeps tags %v digests %v; want no tags, its digest", ga.RepoTags, ga.RepoDigests)
	}
	if g := must[*Image](t)(e.svc.Get(e.reg.host + "/app:latest")); g.ID != ib.ID {
		t.Errorf("tag points at %s, want %s", g.ID, ib.ID)
	}
	// Tag-only images (docker save has no digests) vanish with their last tag.
	for _, img := range []v1.Image{a, b} {
		var buf bytes.Buffer
		tag := must[name.Tag](t)(name.NewTag("local/x:1"))
		if err := tarball.Write(tag, img, &buf); err != nil {
			t.Fatal(err)
		}
		e2 := e
		if img == a {
			e2 = newEnv(t)
			e = e2
		}
		must[[]*Image](t)(e2.svc.Import(ctxT(t), &buf))
	}
	if l := e.svc.List(); len(l) != 1 || l[0].ID != must[v1.Hash](t)(b.ConfigName()).String() ||
		!slices.Equal(l[0].RepoTags, []string{"docker.io/local/x:1"}) {
		t.Errorf("after re-import: %v", l)
	}
}

// TestAcquireRelease: an image removed while a container holds it keeps its
// snapshots until Release; Release is idempotent.
func TestAcquireRelease(t *testing.T) {
	e := newEnv(t)
	e.reg.push(t, "held:1", must[v1.Image](t)(random.Image(256, 3)))
	img := e.pull(e.reg.host + "/held:1")
	dirs, got, err := e.svc.Acquire(ctxT(t), "ctr1", e.reg.host+"/held:1")
	if err != nil || got.ID != img.ID || len(dirs) != 3 {
		t.Fatalf("Acquire = %v, %v, %v", dirs, got, err)
	}
	if dirs[0] != filepath.Join(e.root, "snapshots", hexOf(img.ChainIDs[2]), "fs") {
		t.Errorf("lowerdirs not top first: %v", dirs)
	}
	if err := e.svc.Remove(ctxT(t), img.ID); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("held snapshot gone after Remove: %v", err)
		}
	}
	e.reopen() // holds survive a restart
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("held snapshot gone after restart: %v", err)
		}
	}
	for range 2 {
		if err := e.svc.Release(ctxT(t), "ctr1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := dirNames(t, filepath.Join(e.root, "snapshots")); len(n) != 0 {
		t.Errorf("snapshots after Release: %v", n)
	}
	if _, _, err := e.svc.Acquire(ctxT(t), "ctr2", img.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Acquire of removed image: %v", err)
	}
}

// TestRestart: records, names and configs survive closing and reopening.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	e.reg.push(t, "r:1", must[v1.Image](t)(random.Image(256, 2)))
	e.reg.push(t, "r:2", must[v1.Image](t)(random.Image(256, 1)))
	e.pull(e.reg.host + "/r:1")
	e.pull(e.reg.host + "/r:2")
	before := e.svc.List()
	e.reopen()
	after := e.svc.List()
	if len(before) != 2 || len(after) != 2 {
		t.Fatalf("before %d after %d", len(before), len(after))
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || !slices.Equal(a.RepoTags, b.RepoTags) || !slices.Equal(a.RepoDigests, b.RepoDigests) ||
			!slices.Equal(a.ChainIDs, b.ChainIDs) || a.Size != b.Size || a.Config == nil {
			t.Errorf("image changed over restart:\n%+v\n%+v", b, a)
		}
	}
	u, err := e.svc.FsUsage()
	if err != nil || u.UsedBytes == 0 || u.InodesUsed == 0 || u.Mountpoint != e.root {
		t.Errorf("FsUsage = %+v, %v", u, err)
	}
}

// TestImportExport: Export's archive imports back identically; archives
// written by go-containerregistry (docker save, OCI layout) import too.
func TestImportExport(t *testing.T) {
	e := newEnv(t)
	e.reg.push(t, "x:1", must[v1.Image](t)(random.Image(512, 2)))
	e.reg.push(t, "y:2", must[v1.Image](t)(random.Image(512, 1)))
	x := e.pull(e.reg.host + "/x:1")
	y := e.pull(e.reg.host + "/y:2")
	var buf bytes.Buffer
	if err := e.svc.Export(ctxT(t), &buf, []string{x.ID, y.RepoTags[0]}); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t)
	imgs, err := e2.svc.Import(ctxT(t), bytes.NewReader(buf.Bytes()))
	if err != nil || len(imgs) != 2 {
		t.Fatalf("Import = %v, %v", imgs, err)
	}
	for _, want := range []*Image{x, y} {
		got, err := e2.svc.Get(want.RepoTags[0])
		if err != nil || got.ID != want.ID || !slices.Equal(got.ChainIDs, want.ChainIDs) || got.Size != want.Size ||
			!slices.Equal(got.RepoTags, want.RepoTags) {
			t.Errorf("imported %+v, %v; want %+v", got, err, want)
		}
	}
	// The same archive read as a docker-save one (manifest.json only).
	t.Run("docker save from ggcr", func(t *testing.T) {
		img := must[v1.Image](t)(random.Image(256, 2))
		var b bytes.Buffer
		tag := must[name.Tag](t)(name.NewTag("busybox:1.36"))
		if err := tarball.Write(tag, img, &b); err != nil {
			t.Fatal(err)
		}
		e3 := newEnv(t)
		got := must[[]*Image](t)(e3.svc.Import(ctxT(t), &b))
		if len(got) != 1 || got[0].ID != must[v1.Hash](t)(img.ConfigName()).String() ||
			!slices.Equal(got[0].RepoTags, []string{"docker.io/library/busybox:1.36"}) {
			t.Errorf("imported %+v", got)
		}
		if _, err := e3.svc.Get("busybox:1.36"); err != nil {
			t.Error(err)
		}
	})
	t.Run("OCI layout from ggcr with a nested index", func(t *testing.T) {
		amd := platformImage(t, "amd64", types.OCIManifestSchema1)
		idx := indexOf(t, types.OCIImageIndex, map[string]v1.Image{"amd64": amd, "arm64": platformImage(t, "arm64", types.OCIManifestSchema1)})
		dir := t.TempDir()
		lp := must[layout.Path](t)(layout.Write(dir, empty.Index))
		if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "registry.k8s.io/pause:3.10"})); err != nil {
			t.Fatal(err)
		}
		plain := must[v1.Image](t)(random.Image(128, 1))
		if err := lp.AppendImage(plain, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "latest"})); err != nil {
			t.Fatal(err)
		}
		r := tarDir(dir)
		defer r.Close()
		e4 := newEnv(t)
		got, err := e4.svc.Import(ctxT(t), r)
		if err != nil || len(got) != 2 {
			t.Fatalf("Import = %v, %v", got, err)
		}
		p := must[*Image](t)(e4.svc.Get("registry.k8s.io/pause:3.10"))
		if p.ID != must[v1.Hash](t)(amd.ConfigName()).String() || len(p.RepoDigests) != 1 {
			t.Errorf("pause = %+v", p)
		}
		if u := must[*Image](t)(e4.svc.Get(must[v1.Hash](t)(plain.ConfigName()).String())); len(u.RepoTags) != 0 {
			t.Errorf("bare ref.name tag gave names %v", u.RepoTags)
		}
	})
	t.Run("hostile archive", func(t *testing.T) {
		data := tarBytes(t, []tent{{body: "x", hdr: tarHeader("../escape")}})
		if _, err := e2.svc.Import(ctxT(t), bytes.NewReader(data)); err == nil {
			t.Error("archive with ../ imported")
		}
		if _, err := e2.svc.Import(ctxT(t), io.LimitReader(bytes.NewReader(buf.Bytes()), 1000)); err == nil {
			t.Error("truncated archive imported")
		}
	})
	_ = mutate.Annotations
}
