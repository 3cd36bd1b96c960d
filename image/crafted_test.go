package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// craftedImage is a small image built by hand (uncompressed layers, OCI
// media types), so a test can serve or archive any part of it wrong.
type craftedImage struct {
	layers           [][]byte
	layerD           []v1.Hash
	config, manifest []byte
	configD, manD    v1.Hash
}

// craftImage builds an image of one layer per body (a file "hello" holding
// it); editConfig and editManifest, when set, change the config and the
// manifest before they are serialised (and digested).
func craftImage(t testing.TB, editConfig func(*v1.ConfigFile), editManifest func(*v1.Manifest), bodies ...string) *craftedImage {
	t.Helper()
	a := &craftedImage{}
	cf := v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Cmd: []string{"/hello"}}}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for i, b := range bodies {
		l := tarBytes(t, []tent{{hdr: tarHeader(fmt.Sprintf("hello%d", i)), body: b}})
		d := must[v1.Hash](t)(sha256Of(l))
		a.layers, a.layerD = append(a.layers, l), append(a.layerD, d)
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, d)
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCIUncompressedLayer, Digest: d, Size: int64(len(l))})
	}
	if editConfig != nil {
		editConfig(&cf)
	}
	a.config = must[[]byte](t)(json.Marshal(cf))
	a.configD = must[v1.Hash](t)(sha256Of(a.config))
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: a.configD, Size: int64(len(a.config))}
	if editManifest != nil {
		editManifest(&m)
	}
	a.manifest = must[[]byte](t)(json.Marshal(m))
	a.manD = must[v1.Hash](t)(sha256Of(a.manifest))
	return a
}

func sha256Of(b []byte) (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h, err
}

// craftedRegistry is an HTTP server on 127.0.0.1 that speaks just enough of
// the distribution API (GET/HEAD of manifests and blobs) to serve what a
// test puts in it, as it is, however wrong; a hook can answer any request
// itself.
type craftedRegistry struct {
	srv  *httptest.Server
	host string

	mu        sync.Mutex
	manifests map[string]craftedManifest // "repo:tag" or "repo@digest"
	blobs     map[string][]byte          // digest -> content, any repo
	gets      map[string]int             // blob digest -> GETs
	hook      func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool
}

type craftedManifest struct {
	body      []byte
	mediaType types.MediaType
}

func newCraftedRegistry(t testing.TB) *craftedRegistry {
	t.Helper()
	cr := &craftedRegistry{}
	cr.reset()
	cr.srv = httptest.NewServer(http.HandlerFunc(cr.serve))
	t.Cleanup(cr.srv.Close)
	u, _ := url.Parse(cr.srv.URL)
	cr.host = u.Host
	return cr
}

// reset forgets every manifest, blob and hook.
func (cr *craftedRegistry) reset() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.manifests, cr.blobs, cr.gets, cr.hook = map[string]craftedManifest{}, map[string][]byte{}, map[string]int{}, nil
}

func (cr *craftedRegistry) setHook(h func(w http.ResponseWriter, r *http.Request, digest string, body []byte) bool) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.hook = h
}

func (cr *craftedRegistry) blobGets(d v1.Hash) int {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.gets[d.String()]
}

// putManifest serves body as repo:tag (and as repo@its digest).
func (cr *craftedRegistry) putManifest(repo, tag string, body []byte, mt types.MediaType) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	d, _, _ := v1.SHA256(bytes.NewReader(body))
	m := craftedManifest{body: body, mediaType: mt}
	if tag != "" {
		cr.manifests[repo+":"+tag] = m
	}
	cr.manifests[repo+"@"+d.String()] = m
}

func (cr *craftedRegistry) putBlob(d v1.Hash, body []byte) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.blobs[d.String()] = body
}

// putImage serves a as repo:tag: its manifest, config and layers.
func (cr *craftedRegistry) putImage(repo, tag string, a *craftedImage) {
	cr.putManifest(repo, tag, a.manifest, types.OCIManifestSchema1)
	cr.putBlob(a.configD, a.config)
	for i, l := range a.layers {
		cr.putBlob(a.layerD[i], l)
	}
}

func registryError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"crafted registry"}]}`, code)
}

func (cr *craftedRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		registryError(w, http.StatusNotFound, "UNSUPPORTED")
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		repo, ref := rest[:i], rest[i+len("/manifests/"):]
		key := repo + ":" + ref
		if strings.HasPrefix(ref, "sha256:") {
			key = repo + "@" + ref
		}
		cr.mu.Lock()
		m, found := cr.manifests[key]
		hook := cr.hook
		cr.mu.Unlock()
		if hook != nil && hook(w, r, "manifest:"+ref, m.body) {
			return
		}
		if !found {
			registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN")
			return
		}
		d, _, _ := v1.SHA256(bytes.NewReader(m.body))
		w.Header().Set("Content-Type", string(m.mediaType))
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(m.body)))
		if r.Method == http.MethodGet {
			w.Write(m.body)
		}
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		digest := rest[i+len("/blobs/"):]
		cr.mu.Lock()
		body, found := cr.blobs[digest]
		hook := cr.hook
		if r.Method == http.MethodGet {
			cr.gets[digest]++
		}
		cr.mu.Unlock()
		if hook != nil && hook(w, r, digest, body) {
			return
		}
		if !found {
			registryError(w, http.StatusNotFound, "BLOB_UNKNOWN")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Header().Set("Docker-Content-Digest", digest)
		if r.Method == http.MethodGet {
			io.Copy(w, bytes.NewReader(body))
		}
		return
	}
	registryError(w, http.StatusNotFound, "NAME_UNKNOWN")
}
