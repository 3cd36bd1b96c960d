package image

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"peapod/store"
)

// Fuzzing `peapod images import`, which reads archives from anyone who can
// hand the node a file. Whatever the archive: no panic; nothing outside the
// extraction dir (a sibling with a sentinel, the target of the "outside"
// tricks) is touched; nothing but directories and regular files appears on
// disk (links become hardlinks to extracted files); and a refused import
// leaves the store as it was.

// archiveSeeds are entriesTar specs (see unpack_fuzz_test.go): links as
// skopeo and docker write them, and the tricks the reader must refuse.
var archiveSeeds = []string{
	"0|abc.tar||layer\n--\n2|id/layer.tar|../abc.tar|\n--\n0|manifest.json||[]",
	"2|id/layer.tar|../abc.tar|\n--\n0|abc.tar||layer",
	"0|blobs/sha256/ab||x\n--\n1|id/layer.tar|blobs/sha256/ab|",
	"0|f||x\n--\n1|h|./f|\n--\n2|s|h|",
	"2|x/layer.tar|../nothere|",
	"2|layer.tar|../etc/passwd|",
	"2|layer.tar|OUTSIDE/sentinel|",
	"1|layer.tar|OUTSIDE/sentinel|",
	"1|layer.tar|../outside/sentinel|",
	"1|a|b|\n--\n1|b|a|",
	"2|loop|./loop|",
	"2|d1/x|../d2/y|\n--\n2|d2/y|../d1/x|",
	"5|blobs||\n--\n2|link|blobs|",
	"2|d/root|..|",
	"2|x|blobs|\n--\n0|x/evil||x",
	"0|f||x\n--\n0|f||y",
	"0|f||x\n--\n5|f||",
	"2|f|g|\n--\n0|f/x||y",
	"3|null||",
	"6|fifo||",
	"0|../escape||x",
	"0|/abs||x",
	"0|./||\n--\n5|./||\n--\n0|./a/b||c",
	"g|pax||\n--\n0|a||b",
}

// extractConfined extracts data into a fresh dir beside a sentinel and
// fails t if anything outside changed or anything but a directory or a
// regular file was created.
func extractConfined(t *testing.T, build func(outside string) []byte) {
	base := t.TempDir()
	dst := filepath.Join(base, "x")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{dst, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sentinel := filepath.Join(outside, "sentinel")
	if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = extractArchive(bytes.NewReader(build(outside)), dst)
	var found []string
	_ = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if strings.HasPrefix(p, dst+"/") {
			if !d.IsDir() && !d.Type().IsRegular() {
				t.Errorf("extracted %s is a %v", p, d.Type())
			}
			return nil
		}
		found = append(found, p)
		return nil
	})
	if want := []string{base, outside, sentinel, dst}; !slices.Equal(found, []string{base, outside, sentinel, dst}) {
		t.Fatalf("outside the extraction dir: %v, want %v", found, want)
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "untouched" {
		t.Fatalf("sentinel now %q", b)
	}
}

// FuzzArchiveEntries builds archives from entry specs: any names, any link
// targets, any order.
func FuzzArchiveEntries(f *testing.F) {
	for _, s := range append(slices.Clone(archiveSeeds), unpackSeeds...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		extractConfined(t, func(outside string) []byte {
			return entriesTar(strings.ReplaceAll(spec, "OUTSIDE", outside))
		})
	})
}

// fuzzService is an image store for a fuzz worker (one per process),
// with no registry: imports only.
func fuzzService(f *testing.F) (*Service, string) {
	dir := f.TempDir()
	st, err := store.Open(filepath.Join(dir, "peapod.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	root := filepath.Join(dir, "images")
	svc, err := New(context.Background(), Options{Root: root, Store: st, Registerer: prometheus.NewRegistry()})
	if err != nil {
		f.Fatal(err)
	}
	return svc, root
}

// importSeeds are whole archives: the formats import accepts (a
// skopeo-style docker-archive with its symlink, a docker 25 save, an
// oci-archive, a tarred layout dir) and a few it must refuse.
func importSeeds(t testing.TB) [][]byte {
	a := craftImage(t, nil, nil, "hi")
	legacy := strings.Repeat("1", 64)
	layout := a.ociLayout(t, "")
	seeds := [][]tent{
		{regEnt(a.configD.Hex+".json", string(a.config)), regEnt(a.layerD[0].Hex+".tar", string(a.layers[0])),
			symEnt(legacy+"/layer.tar", "../"+a.layerD[0].Hex+".tar"), regEnt(legacy+"/VERSION", "1.0"),
			regEnt("manifest.json", a.dockerManifestJSON(t, a.configD.Hex+".json", legacy+"/layer.tar"))},
		append(slices.Clone(layout), regEnt("manifest.json", a.dockerManifestJSON(t, "blobs/sha256/"+a.configD.Hex, "blobs/sha256/"+a.layerD[0].Hex)),
			symEnt(legacy+"/layer.tar", "../blobs/sha256/"+a.layerD[0].Hex)),
		append([]tent{dirEnt("blobs/"), dirEnt("blobs/sha256/")}, layout...),
		append([]tent{dirEnt("l/")}, a.ociLayout(t, "l/")...),
		append(slices.Clone(layout), symEnt("x", "../etc/passwd")),
		append(slices.Clone(layout), hardEnt("a", "b"), hardEnt("b", "a")),
		layout[:2],
	}
	var out [][]byte
	for _, s := range seeds {
		out = append(out, tarBytes(t, s))
	}
	return append(out, nil, bytes.Repeat([]byte{0}, 1024))
}

// FuzzImportArchive imports raw bytes into a real store: broken tars,
// index.json, manifest.json, manifests and configs mangled inside valid
// tars. An import that fails leaves no record, blob, snapshot or temp file
// (the images it imported before failing, each whole, are returned); what
// it imported is removed again, which must leave the same.
func FuzzImportArchive(f *testing.F) {
	for _, s := range importSeeds(f) {
		f.Add(s)
	}
	svc, root := fuzzService(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var imgs []*Image
		var err error
		bounded(t, 30*time.Second, func() { imgs, err = svc.Import(ctx, bytes.NewReader(data)) })
		for _, img := range imgs {
			if err := svc.Remove(ctx, img.ID); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("remove imported %s: %v", img.ID, err)
			}
		}
		if l := svc.List(); len(l) != 0 {
			t.Fatalf("images left (import err %v): %v", err, l)
		}
		for _, d := range []string{"tmp", "blobs/sha256", "snapshots"} {
			if n := dirNames(t, filepath.Join(root, d)); len(n) != 0 {
				t.Fatalf("%s/ left (import err %v): %v", d, err, n)
			}
		}
	})
}

// bounded runs fn and fails t, with every goroutine's stack, when it has
// not returned after d: a hang is a finding too (an archive or a registry
// that holds the node's image service forever), and the fuzzing engine
// has no per-input timeout of its own.
func bounded(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("still running after %s:\n%s", d, buf[:runtime.Stack(buf, true)])
	}
}
