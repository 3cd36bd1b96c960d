package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/prometheus/client_golang/prometheus"
	"log"

	"peapod/store"
)

// testRegistry is go-containerregistry's in-process registry on 127.0.0.1
// with hooks: it counts blob GETs and can put a middleware in front.
type testRegistry struct {
	srv  *httptest.Server
	host string

	mu       sync.Mutex
	blobGets map[string]int // digest -> GETs
	mw       atomic.Pointer[func(http.Handler) http.Handler]
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{blobGets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			tr.mu.Lock()
			tr.blobGets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
			tr.mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	})
	tr.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h http.Handler = inner
		if mw := tr.mw.Load(); mw != nil {
			h = (*mw)(inner)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(tr.srv.Close)
	u, _ := url.Parse(tr.srv.URL)
	tr.host = u.Host
	return tr
}

func (tr *testRegistry) use(mw func(http.Handler) http.Handler) { tr.mw.Store(&mw) }

func (tr *testRegistry) gets(d v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.blobGets[d.String()]
}

// push writes img (or an index) to repo:tag on the registry, bypassing any
// middleware.
func (tr *testRegistry) push(t *testing.T, ref string, x any) {
	t.Helper()
	mw := tr.mw.Swap(nil)
	defer tr.mw.Store(mw)
	r, err := name.ParseReference(tr.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	switch v := x.(type) {
	case v1.Image:
		err = remote.Write(r, v)
	case v1.ImageIndex:
		err = remote.WriteIndex(r, v)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// guardTransport fails the test on any request to a host but allowed.
type guardTransport struct {
	t       *testing.T
	allowed func(host string) bool
	inner   http.RoundTripper
}

func (g guardTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !g.allowed(r.URL.Host) {
		g.t.Errorf("request to %s left the test server", r.URL)
		return nil, &url.Error{Op: "guard", URL: r.URL.String(), Err: os.ErrPermission}
	}
	return g.inner.RoundTrip(r)
}

type env struct {
	t    *testing.T
	reg  *testRegistry
	root string
	db   string
	st   *store.Store
	svc  *Service
	opts Options
}

func newEnv(t *testing.T, mod ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, reg: newTestRegistry(t)}
	dir := t.TempDir()
	e.root = filepath.Join(dir, "images")
	e.db = filepath.Join(dir, "peapod.db")
	e.opts = Options{
		Root:       e.root,
		Platform:   &v1.Platform{OS: "linux", Architecture: "amd64"},
		Registerer: prometheus.NewRegistry(),
		Transport: guardTransport{t: t, inner: remote.DefaultTransport, allowed: func(h string) bool {
			return h == e.reg.host || h == "127.0.0.1:1" // :1 = a closed port used as a dead mirror
		}},
	}
	for _, m := range mod {
		m(&e.opts)
	}
	e.open()
	t.Cleanup(func() { e.st.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	o := e.opts
	o.Store = st
	svc, err := New(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.svc = svc
}

func (e *env) reopen() {
	e.t.Helper()
	e.st.Close()
	e.open()
}

func (e *env) pull(ref string) *Image {
	e.t.Helper()
	img, err := e.svc.Pull(ctxT(e.t), ref, nil)
	if err != nil {
		e.t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// tarLayer builds a layer from tar entries (a nil body for non-files).
type tent struct {
	hdr  tar.Header
	body string
}

func tarBytes(t testing.TB, ents []tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func tarLayer(t *testing.T, ents []tent) v1.Layer {
	t.Helper()
	data := tarBytes(t, ents)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"A=1"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}
