package image

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// oddEnv is an image store whose registry is a craftedRegistry.
func oddEnv(t *testing.T) (*env, *craftedRegistry) {
	t.Helper()
	cr := newCraftedRegistry(t)
	fastRetries(t)
	e := newEnv(t, func(o *Options) {
		o.Transport = guardTransport{t: t, inner: remote.DefaultTransport, allowed: func(h string) bool { return h == cr.host }}
	})
	return e, cr
}

// fastRetries makes the registry client's retries 10 ms apart for t.
func fastRetries(t testing.TB) {
	saved := registryRetry
	registryRetry.Duration = 10 * time.Millisecond
	t.Cleanup(func() { registryRetry = saved })
}

// assertStoreEmpty fails t unless the store holds no image record (also
// after a reopen, which reads the records from disk), no blob, no snapshot
// and nothing in tmp/.
func assertStoreEmpty(t *testing.T, e *env, after string) {
	t.Helper()
	if l := e.svc.List(); len(l) != 0 {
		t.Errorf("images after %s: %v", after, l)
	}
	for _, d := range []string{"tmp", "blobs/sha256", "snapshots"} {
		if n := dirNames(t, filepath.Join(e.root, d)); len(n) != 0 {
			t.Errorf("%s/ after %s: %v", d, after, n)
		}
	}
	e.reopen()
	if l := e.svc.List(); len(l) != 0 {
		t.Errorf("image records on disk after %s: %v", after, l)
	}
}

// cutBody answers with the full Content-Length, sends half of body and
// drops the connection, as a registry or proxy dying mid-stream does.
func cutBody(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body[:len(body)/2])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

type hookFunc = func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool

// onBlob runs f for GETs of blob d only.
func onBlob(d v1.Hash, f func(w http.ResponseWriter, body []byte)) hookFunc {
	return func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool {
		if digest != d.String() || r.Method != http.MethodGet {
			return false
		}
		f(w, body)
		return true
	}
}

// TestPullOddResponses: a registry answering wrong in each way a pull can
// meet fails the pull with an error naming the image and the digest at
// fault, leaves nothing in the store, and a later good pull of the same
// name works.
func TestPullOddResponses(t *testing.T) {
	const repo, tag = "odd/app", "1"
	good := craftImage(t, nil, nil, "layer zero", "layer one, the one that goes wrong")
	other := craftImage(t, nil, nil, "something else entirely")
	for _, tc := range []struct {
		name string
		// serve puts what the registry answers; want are the parts of
		// the error besides the image's name (digests from the image).
		serve func(t *testing.T, cr *craftedRegistry) []string
		// viaDigest pulls repo@<manifest digest> instead of the tag.
		viaDigest bool
	}{
		{name: "layer content does not match its digest", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(onBlob(good.layerD[1], func(w http.ResponseWriter, body []byte) {
				b := bytes.Clone(body)
				b[len(b)/2] ^= 0xff
				w.Write(b)
			}))
			return []string{"fetch blob " + good.layerD[1].String(), "error verifying sha256 checksum"}
		}},
		{name: "layer longer than the manifest says", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, nil, func(m *v1.Manifest) { m.Layers[1].Size -= 7 }, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"blob " + a.layerD[1].String() + ": size mismatch: the manifest says " + strconv.FormatInt(int64(len(a.layers[1]))-7, 10) + " bytes, more arrived"}
		}},
		{name: "layer shorter than the manifest says", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, nil, func(m *v1.Manifest) { m.Layers[1].Size += 7 }, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"blob " + a.layerD[1].String() + ": size mismatch: the manifest says " + strconv.FormatInt(int64(len(a.layers[1]))+7, 10) + " bytes, got " + strconv.Itoa(len(a.layers[1]))}
		}},
		{name: "Content-Length above the body", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(onBlob(good.layerD[1], func(w http.ResponseWriter, body []byte) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)+100))
				w.Write(body)
			}))
			return []string{"fetch blob " + good.layerD[1].String(), "unexpected EOF"}
		}},
		{name: "Content-Length below the body", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(onBlob(good.layerD[1], func(w http.ResponseWriter, body []byte) {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)-100))
				w.Write(body[:len(body)-100])
			}))
			return []string{"fetch blob " + good.layerD[1].String(), "error verifying sha256 checksum"}
		}},
		{name: "body cut mid-stream", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(onBlob(good.layerD[1], func(w http.ResponseWriter, body []byte) { cutBody(w, body) }))
			return []string{"fetch blob " + good.layerD[1].String(), "unexpected EOF"}
		}},
		{name: "500 on every try", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(onBlob(good.layerD[1], func(w http.ResponseWriter, body []byte) {
				http.Error(w, "upstream went away", http.StatusInternalServerError)
			}))
			return []string{"fetch blob " + good.layerD[1].String(), "unexpected status code 500 Internal Server Error: upstream went away"}
		}},
		{name: "config content does not match the manifest's config digest", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			b := bytes.Clone(good.config)
			b[len(b)-2] ^= 1
			cr.putBlob(good.configD, b)
			return []string{"config " + good.configD.String(), "error verifying sha256 checksum"}
		}},
		{name: "config of another size than the manifest says", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.putBlob(good.configD, other.config)
			return []string{"config " + good.configD.String(), "Content-Length header " + strconv.Itoa(len(other.config)) +
				" does not match expected size " + strconv.Itoa(len(good.config))}
		}},
		{name: "manifest names a config digest the registry lacks", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, nil, func(m *v1.Manifest) { m.Config.Digest = other.configD }, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"config " + other.configD.String(), "BLOB_UNKNOWN"}
		}},
		{name: "config diff id does not match the layer", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, func(c *v1.ConfigFile) { c.RootFS.DiffIDs[1] = other.layerD[0] }, nil, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"layer " + a.layerD[1].String() + ": diffID mismatch: config says " + other.layerD[0].String()}
		}},
		{name: "config with fewer diff ids than layers", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, func(c *v1.ConfigFile) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] }, nil, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"manifest " + a.manD.String() + " has 2 layers but config " + a.configD.String() + " has 1 diff ids"}
		}},
		{name: "manifest with a non-sha256 layer digest", serve: func(t *testing.T, cr *craftedRegistry) []string {
			a := craftImage(t, nil, func(m *v1.Manifest) {
				m.Layers[1].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("ab", 64)}
			}, "layer zero", "layer one, the one that goes wrong")
			cr.putImage(repo, tag, a)
			return []string{"manifest " + a.manD.String() + ": layer: digest \"sha512:", "only sha256 digests are supported"}
		}},
		{name: "manifest by digest answered with another manifest", viaDigest: true, serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, tag, good)
			cr.setHook(func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool {
				if digest != "manifest:"+good.manD.String() {
					return false
				}
				w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
				w.Write(other.manifest)
				return true
			})
			return []string{"does not match requested digest", good.manD.String()}
		}},
		{name: "index pointing nowhere", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, "", good)
			missing := other.manD
			idx := must[[]byte](t)(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
				MediaType: types.OCIManifestSchema1, Digest: missing, Size: int64(len(other.manifest)),
				Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}}}))
			cr.putManifest(repo, tag, idx, types.OCIImageIndex)
			return []string{"manifest " + missing.String() + " of index " + must[v1.Hash](t)(sha256Of(idx)).String(), "MANIFEST_UNKNOWN"}
		}},
		{name: "index without the node's platform", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putImage(repo, "", good)
			idx := must[[]byte](t)(json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
				MediaType: types.OCIManifestSchema1, Digest: good.manD, Size: int64(len(good.manifest)),
				Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}}}))
			cr.putManifest(repo, tag, idx, types.OCIImageIndex)
			return []string{"index " + must[v1.Hash](t)(sha256Of(idx)).String() + " has no image for platform linux/amd64 (it has linux/s390x)"}
		}},
		{name: "manifest that is not JSON", serve: func(t *testing.T, cr *craftedRegistry) []string {
			cr.putManifest(repo, tag, []byte("<html>proxy error</html>"), types.OCIManifestSchema1)
			d := must[v1.Hash](t)(sha256Of([]byte("<html>proxy error</html>")))
			return []string{"manifest " + d.String()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, cr := oddEnv(t)
			want := tc.serve(t, cr)
			ref := cr.host + "/" + repo + ":" + tag
			if tc.viaDigest {
				ref = cr.host + "/" + repo + "@" + good.manD.String()
			}
			_, err := e.svc.Pull(ctxT(t), ref, nil)
			if err == nil {
				t.Fatal("pull succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range append([]string{"pull " + ref + ": "}, want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q", w)
				}
			}
			assertStoreEmpty(t, e, "the failed pull")

			cr.reset()
			cr.putImage(repo, tag, good)
			img, err := e.svc.Pull(ctxT(t), ref, nil)
			if err != nil {
				t.Fatalf("good pull after the failed one: %v", err)
			}
			if img.ID != good.configD.String() || len(img.ChainIDs) != 2 {
				t.Errorf("pulled %+v", img)
			}
			for _, c := range img.ChainIDs {
				if _, err := os.Stat(filepath.Join(e.root, "snapshots", hexOf(c), "fs")); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestPullRetries500: a registry answering 500 to the first GET of a layer
// (and an error once mid-way through the manifest) is retried by the
// registry client and the pull succeeds, fetching the layer twice.
func TestPullRetries500(t *testing.T) {
	e, cr := oddEnv(t)
	a := craftImage(t, nil, nil, "layer zero", "layer one")
	cr.putImage("retry/app", "1", a)
	var mu sync.Mutex
	failed := map[string]bool{}
	cr.setHook(func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodGet || failed[digest] || (digest != a.layerD[1].String() && digest != "manifest:1") {
			return false
		}
		failed[digest] = true
		registryError(w, http.StatusInternalServerError, "UNKNOWN")
		return true
	})
	img, err := e.svc.Pull(ctxT(t), cr.host+"/retry/app:1", nil)
	if err != nil {
		t.Fatalf("pull with one 500 per request: %v", err)
	}
	if img.ID != a.configD.String() {
		t.Errorf("ID = %s", img.ID)
	}
	if n := cr.blobGets(a.layerD[1]); n != 2 {
		t.Errorf("layer fetched %d times, want 2 (one 500, one retry)", n)
	}
}

// TestFailedPullSparesOthers: the clean-up of a failed pull removes only
// what nothing else uses: a pull in flight sharing its first layer keeps
// it and completes, and an image already in the store keeps its blobs.
func TestFailedPullSparesOthers(t *testing.T) {
	e, cr := oddEnv(t)
	kept := craftImage(t, nil, nil, "kept's base", "kept's own top")
	inFlight := craftImage(t, nil, nil, "shared base", "in flight's own top")
	bad := craftImage(t, nil, nil, "shared base", "bad's own top")
	cr.putImage("kept/app", "1", kept)
	cr.putImage("inflight/app", "1", inFlight)
	cr.putImage("bad/app", "1", bad)
	e.pull(cr.host + "/kept/app:1")

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	cr.setHook(func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool {
		switch digest {
		case inFlight.layerD[1].String(): // hold the in-flight pull mid-download
			once.Do(func() { close(held) })
			<-release
		case bad.layerD[1].String():
			cutBody(w, body)
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.Pull(ctxT(t), cr.host+"/inflight/app:1", nil)
		done <- err
	}()
	<-held
	shared := filepath.Join(e.root, "blobs/sha256", bad.layerD[0].Hex)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(shared); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the in-flight pull never stored the shared base: %v", err)
		}
	}
	if _, err := e.svc.Pull(ctxT(t), cr.host+"/bad/app:1", nil); err == nil {
		t.Fatal("pull of the cut layer succeeded")
	}
	if _, err := os.Stat(shared); err != nil {
		t.Errorf("shared base blob (leased by the pull in flight) gone after the failed pull: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("pull in flight during the failed one: %v", err)
	}
	if n := len(e.svc.List()); n != 2 {
		t.Errorf("%d images, want kept and in-flight", n)
	}
	// kept and in-flight: a manifest, a config and 2 layers each.
	if n := dirNames(t, filepath.Join(e.root, "blobs/sha256")); len(n) != 8 {
		t.Errorf("blobs = %d, want 8 (nothing of bad's own)", len(n))
	}
	if n := dirNames(t, filepath.Join(e.root, "snapshots")); len(n) != 4 {
		t.Errorf("snapshots = %d, want 4", len(n))
	}
	e.reopen()
	if n := len(e.svc.List()); n != 2 {
		t.Errorf("%d images after reopen", n)
	}
}
