package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"

	"peapod/store"
)

// Fuzzing what a registry or an archive says about an image: manifests,
// indexes and configs, first as parsers, then through a real pull from a
// registry serving the fuzzed bytes.

var sha256Digest = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// manifestSeeds: a good image and its kin with wrong counts, digests,
// sizes and types.
func manifestSeeds(t testing.TB) [][2][]byte {
	good := craftImage(t, nil, nil, "a", "b")
	fewer := craftImage(t, func(c *v1.ConfigFile) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] }, nil, "a", "b")
	negative := craftImage(t, nil, func(m *v1.Manifest) { m.Layers[0].Size = -1 }, "a")
	sha512 := craftImage(t, nil, func(m *v1.Manifest) {
		m.Layers[0].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("0", 128)}
	}, "a")
	return [][2][]byte{
		{good.manifest, good.config},
		{good.manifest, fewer.config},
		{fewer.manifest, fewer.config},
		{negative.manifest, negative.config},
		{sha512.manifest, sha512.config},
		{[]byte(`{"schemaVersion":2,"config":{"digest":"sha256:../../x","size":1},"layers":[]}`), []byte(`{}`)},
		{[]byte(`{"schemaVersion":2,"layers":[{"digest":"sha256:` + strings.Repeat("A", 64) + `"}]}`), []byte(`{"rootfs":{"diff_ids":["sha256:x"]}}`)},
		{[]byte(`<html>`), nil},
		{[]byte(`null`), []byte(`null`)},
	}
}

// FuzzParseImage: parseManifest, setConfig and fill never panic, and what
// they accept names only sha256 digests (the store's paths are made from
// them), has as many chain ids as layers, and its id is the config's
// digest.
func FuzzParseImage(f *testing.F) {
	for _, s := range manifestSeeds(f) {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rawManifest, rawConfig []byte) {
		m, err := parseManifest(rawManifest)
		if err != nil {
			return
		}
		if err := m.setConfig(rawConfig); err != nil {
			return
		}
		rec := &record{}
		m.fill(rec)
		if d, _ := sha256Of(rawConfig); rec.ID != d.String() {
			t.Fatalf("id %s, config digest %s", rec.ID, d)
		}
		if d, _ := sha256Of(rawManifest); rec.Manifest != d.String() {
			t.Fatalf("manifest %s, digest %s", rec.Manifest, d)
		}
		if len(rec.Layers) != len(rec.ChainIDs) || len(rec.Layers) != len(m.Layers) {
			t.Fatalf("%d layers, %d chain ids, manifest %d", len(rec.Layers), len(rec.ChainIDs), len(m.Layers))
		}
		names := []string{rec.ID, rec.Manifest}
		for i, l := range rec.Layers {
			if l.Size < 0 {
				t.Fatalf("layer %s size %d", l.Digest, l.Size)
			}
			names = append(names, l.Digest, l.DiffID, rec.ChainIDs[i])
		}
		for _, n := range names {
			if !sha256Digest.MatchString(n) {
				t.Fatalf("accepted digest %q", n)
			}
		}
	})
}

// FuzzSelectPlatform: any index parses or not, never panics, and an entry
// picked for linux/amd64 is for that platform and has a sha256 digest.
func FuzzSelectPlatform(f *testing.F) {
	good := craftImage(f, nil, nil, "a")
	for _, p := range []*v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}, nil} {
		f.Add(must[[]byte](f)(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex,
			Manifests: []v1.Descriptor{{MediaType: types.OCIManifestSchema1, Digest: good.manD, Size: 1, Platform: p}}})))
	}
	f.Add([]byte(`{"manifests":[{"digest":"sha512:` + strings.Repeat("0", 128) + `","platform":{"os":"linux","architecture":"amd64"}}]}`))
	f.Add([]byte(`{"manifests":[{"platform":{"os":"linux","architecture":"amd64"}}]}`))
	f.Add([]byte(`{"manifests":null}`))
	want := v1.Platform{OS: "linux", Architecture: "amd64"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return
		}
		d, err := selectPlatform(im, v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}, want)
		if err != nil {
			return
		}
		if d.Platform == nil || !d.Platform.Satisfies(want) || !sha256Digest.MatchString(d.Digest.String()) {
			t.Fatalf("picked %+v", d)
		}
	})
}

// FuzzPullResponses runs real pulls against a registry that answers the
// tag with top (as an index when asIndex, else as an image manifest), any
// manifest by digest with child, the layers of a good image with their
// bytes, and any other blob with config. Whatever it serves: no panic, and
// a pull that fails leaves no record, blob, snapshot or temp file; one that
// succeeds is removed again, which must leave the same.
func FuzzPullResponses(f *testing.F) {
	good := craftImage(f, nil, nil, "layer zero", "layer one")
	idx := must[[]byte](f)(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex,
		Manifests: []v1.Descriptor{{MediaType: types.OCIManifestSchema1, Digest: good.manD, Size: int64(len(good.manifest)),
			Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}}))
	f.Add(good.manifest, false, []byte(nil), good.config)
	f.Add(idx, true, good.manifest, good.config)
	f.Add(idx, true, good.manifest, []byte(`{}`))
	f.Add(idx, false, good.manifest, good.config)
	f.Add(good.manifest, true, good.manifest, good.config)
	for _, s := range manifestSeeds(f) {
		f.Add(s[0], false, []byte(nil), s[1])
	}

	saved := registryRetry
	registryRetry.Duration = time.Millisecond
	f.Cleanup(func() { registryRetry = saved })
	cr := newCraftedRegistry(f)
	for i, l := range good.layers {
		cr.putBlob(good.layerD[i], l)
	}
	dir := f.TempDir()
	st, err := store.Open(filepath.Join(dir, "peapod.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	root := filepath.Join(dir, "images")
	svc, err := New(context.Background(), Options{Root: root, Store: st, Registerer: prometheus.NewRegistry(),
		Platform:  &v1.Platform{OS: "linux", Architecture: "amd64"},
		Transport: hostOnly{host: cr.host, inner: remote.DefaultTransport}})
	if err != nil {
		f.Fatal(err)
	}
	ref := cr.host + "/fuzz/app:1"

	f.Fuzz(func(t *testing.T, top []byte, asIndex bool, child, config []byte) {
		mt := types.OCIManifestSchema1
		if asIndex {
			mt = types.OCIImageIndex
		}
		cr.setHook(func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool {
			switch {
			case digest == "manifest:1":
				w.Header().Set("Content-Type", string(mt))
				w.Write(top)
			case strings.HasPrefix(digest, "manifest:"):
				w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
				w.Write(child)
			case body != nil:
				return false // a layer of the good image
			default:
				w.Write(config)
			}
			return true
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var img *Image
		var err error
		bounded(t, 30*time.Second, func() { img, err = svc.Pull(ctx, ref, nil) })
		if err == nil {
			if err := svc.Remove(ctx, img.ID); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("remove pulled %s: %v", img.ID, err)
			}
		}
		if l := svc.List(); len(l) != 0 {
			t.Fatalf("images left (pull err %v): %v", err, l)
		}
		for _, d := range []string{"tmp", "blobs/sha256", "snapshots"} {
			if n := dirNames(t, filepath.Join(root, d)); len(n) != 0 {
				t.Fatalf("%s/ left (pull err %v): %v", d, err, n)
			}
		}
	})
}

// hostOnly refuses any request but to host: a fuzzed manifest may name
// foreign layer URLs, and nothing may leave the box.
type hostOnly struct {
	host  string
	inner http.RoundTripper
}

func (h hostOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != h.host {
		return nil, errors.New("fuzz: request to " + r.URL.Host + " refused")
	}
	return h.inner.RoundTrip(r)
}
