package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"
)

func TestNormalize(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct{ in, want, err string }{
		{in: "busybox", want: "docker.io/library/busybox:latest"},
		{in: "busybox:1.36", want: "docker.io/library/busybox:1.36"},
		{in: "docker.io/busybox", want: "docker.io/library/busybox:latest"},
		{in: "index.docker.io/library/busybox:1", want: "docker.io/library/busybox:1"},
		{in: "user/app", want: "docker.io/user/app:latest"},
		{in: "registry.k8s.io/pause:3.10", want: "registry.k8s.io/pause:3.10"},
		{in: "127.0.0.1:5000/a/b:c", want: "127.0.0.1:5000/a/b:c"},
		{in: "busybox@" + d, want: "docker.io/library/busybox@" + d},
		{in: "busybox:1@" + d, want: "docker.io/library/busybox@" + d},
		{in: "", err: "empty"},
		{in: "BusyBox", err: "invalid image reference"},
		{in: "a b", err: "invalid image reference"},
		{in: "busybox@sha256:123", err: "invalid image reference"},
	} {
		got, err := Normalize(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Normalize(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func platformImage(t *testing.T, arch string, mt types.MediaType) v1.Image {
	img := must[v1.Image](t)(random.Image(512, 2))
	img = must[v1.Image](t)(mutate.ConfigFile(img, &v1.ConfigFile{Architecture: arch, OS: "linux",
		RootFS: must[*v1.ConfigFile](t)(img.ConfigFile()).RootFS, Config: v1.Config{Cmd: []string{arch}}}))
	if mt == types.OCIManifestSchema1 {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	return img
}

func indexOf(t *testing.T, mt types.MediaType, imgs map[string]v1.Image) v1.ImageIndex {
	var idx v1.ImageIndex = empty.Index
	for _, arch := range []string{"arm64", "amd64", "s390x"} {
		if img := imgs[arch]; img != nil {
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
				Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		}
	}
	return mutate.IndexMediaType(idx, mt)
}

// TestPull pulls by tag, by digest, through a docker manifest list and an
// OCI index, and checks names, id, config and snapshots.
func TestPull(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, e *env) (ref string, want v1.Image, manifestDigest v1.Hash)
		wantTag bool
	}{
		{name: "by tag", wantTag: true, setup: func(t *testing.T, e *env) (string, v1.Image, v1.Hash) {
			img := platformImage(t, "amd64", types.DockerManifestSchema2)
			e.reg.push(t, "library/app:1", img)
			return e.reg.host + "/library/app:1", img, must[v1.Hash](t)(img.Digest())
		}},
		{name: "by digest", setup: func(t *testing.T, e *env) (string, v1.Image, v1.Hash) {
			img := platformImage(t, "amd64", types.DockerManifestSchema2)
			e.reg.push(t, "library/app:1", img)
			d := must[v1.Hash](t)(img.Digest())
			return e.reg.host + "/library/app@" + d.String(), img, d
		}},
		{name: "docker manifest list resolves to amd64", wantTag: true, setup: func(t *testing.T, e *env) (string, v1.Image, v1.Hash) {
			amd := platformImage(t, "amd64", types.DockerManifestSchema2)
			idx := indexOf(t, types.DockerManifestList, map[string]v1.Image{
				"arm64": platformImage(t, "arm64", types.DockerManifestSchema2), "amd64": amd,
				"s390x": platformImage(t, "s390x", types.DockerManifestSchema2)})
			e.reg.push(t, "multi:1", idx)
			return e.reg.host + "/multi:1", amd, must[v1.Hash](t)(idx.Digest())
		}},
		{name: "OCI index resolves to amd64", wantTag: true, setup: func(t *testing.T, e *env) (string, v1.Image, v1.Hash) {
			amd := platformImage(t, "amd64", types.OCIManifestSchema1)
			idx := indexOf(t, types.OCIImageIndex, map[string]v1.Image{
				"arm64": platformImage(t, "arm64", types.OCIManifestSchema1), "amd64": amd})
			e.reg.push(t, "oci/multi:2", idx)
			return e.reg.host + "/oci/multi:2", amd, must[v1.Hash](t)(idx.Digest())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ref, want, md := tc.setup(t, e)
			img := e.pull(ref)
			wantID := must[v1.Hash](t)(want.ConfigName()).String()
			if img.ID != wantID {
				t.Fatalf("ID = %s, want %s", img.ID, wantID)
			}
			named := must[string](t)(Normalize(ref))
			repo, _, _ := splitRef(named)
			if want := []string{repo + "@" + md.String()}; !slices.Equal(img.RepoDigests, want) {
				t.Errorf("RepoDigests = %v, want %v", img.RepoDigests, want)
			}
			if tc.wantTag != (len(img.RepoTags) == 1 && img.RepoTags[0] == named) {
				t.Errorf("RepoTags = %v (want tag %v)", img.RepoTags, tc.wantTag)
			}
			cf := must[*v1.ConfigFile](t)(want.ConfigFile())
			if img.Config == nil || !slices.Equal(img.Config.Config.Cmd, cf.Config.Cmd) {
				t.Errorf("Config.Cmd = %v, want %v", img.Config.Config.Cmd, cf.Config.Cmd)
			}
			m := must[*v1.Manifest](t)(want.Manifest())
			size := uint64(m.Config.Size)
			for _, l := range m.Layers {
				size += uint64(l.Size)
			}
			if img.Size != size {
				t.Errorf("Size = %d, want %d", img.Size, size)
			}
			if len(img.ChainIDs) != 2 || img.ChainIDs[0] != cf.RootFS.DiffIDs[0].String() {
				t.Errorf("ChainIDs = %v, diffIDs %v", img.ChainIDs, cf.RootFS.DiffIDs)
			}
			for _, c := range img.ChainIDs {
				if _, err := os.Stat(filepath.Join(e.root, "snapshots", hexOf(c), "fs")); err != nil {
					t.Errorf("snapshot: %v", err)
				}
			}
			for _, q := range append([]string{img.ID, hexOf(img.ID), hexOf(img.ID)[:12], ref}, img.RepoDigests...) {
				if g, err := e.svc.Get(q); err != nil || g.ID != img.ID {
					t.Errorf("Get(%q) = %v, %v", q, g, err)
				}
			}
			if _, err := e.svc.Get("nothere"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(absent) err = %v, want ErrNotFound", err)
			}
			if l := e.svc.List(); len(l) != 1 {
				t.Errorf("List = %d images", len(l))
			}
		})
	}
}

// TestPullMirror: names of a fake upstream host are served by the mirror,
// in order, never by the host itself; the image keeps its upstream names.
func TestPullMirror(t *testing.T) {
	var e *env
	e = newEnv(t, func(o *Options) {
		o.Mirrors = map[string][]string{"registry.example.invalid": {"http://127.0.0.1:1", "http://PLACEHOLDER"}}
	})
	e.svc.o.Mirrors["registry.example.invalid"][1] = "http://" + e.reg.host
	img := platformImage(t, "amd64", types.DockerManifestSchema2)
	e.reg.push(t, "team/app:v1", img)
	got := e.pull("registry.example.invalid/team/app:v1")
	if !slices.Equal(got.RepoTags, []string{"registry.example.invalid/team/app:v1"}) {
		t.Errorf("RepoTags = %v", got.RepoTags)
	}
	if d := must[v1.Hash](t)(img.Digest()); !slices.Equal(got.RepoDigests, []string{"registry.example.invalid/team/app@" + d.String()}) {
		t.Errorf("RepoDigests = %v", got.RepoDigests)
	}
	if _, err := e.svc.Get("registry.example.invalid/team/app:v1"); err != nil {
		t.Error(err)
	}
	// Fail closed: a name the mirror does not have is an error, and the
	// guard transport proves no request went to registry.example.invalid.
	if _, err := e.svc.Pull(ctxT(t), "registry.example.invalid/team/missing:v1", nil); err == nil {
		t.Error("pull of a name missing on every mirror succeeded")
	}
}

// TestPullAuth: basic auth (user/password and the base64 auth field) and
// the bearer-token flow, with the credentials from the CRI AuthConfig.
func TestPullAuth(t *testing.T) {
	basic := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	bearer := func(host string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
						http.Error(w, "bad credentials", http.StatusUnauthorized)
						return
					}
					json.NewEncoder(w).Encode(map[string]string{"token": "tok-" + r.URL.Query().Get("scope")})
					return
				}
				if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok-repository:") {
					w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, host))
					http.Error(w, "unauthorized", http.StatusUnauthorized)
					return
				}
				next.ServeHTTP(w, r)
			})
		}
	}
	good := &Auth{Username: "alice", Password: "s3cret"}
	for _, tc := range []struct {
		name   string
		bearer bool
		auth   *Auth
		ok     bool
	}{
		{"basic user/password", false, good, true},
		{"basic auth field", false, &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, true},
		{"basic wrong password", false, &Auth{Username: "alice", Password: "nope"}, false},
		{"basic anonymous", false, nil, false},
		{"bearer user/password", true, good, true},
		{"bearer auth field", true, &Auth{Auth: base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))}, true},
		{"bearer wrong password", true, &Auth{Username: "alice", Password: "nope"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			img := platformImage(t, "amd64", types.DockerManifestSchema2)
			e.reg.push(t, "private/app:1", img)
			if tc.bearer {
				e.reg.use(bearer(e.reg.host))
			} else {
				e.reg.use(basic)
			}
			got, err := e.svc.Pull(ctxT(t), e.reg.host+"/private/app:1", tc.auth)
			if tc.ok != (err == nil) {
				t.Fatalf("pull err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && got.ID != must[v1.Hash](t)(img.ConfigName()).String() {
				t.Errorf("ID = %s", got.ID)
			}
		})
	}
}

// TestSharedLayersAndConcurrentPulls: concurrent pulls of one ref share one
// download; images sharing a layer store and unpack it once.
func TestSharedLayersAndConcurrentPulls(t *testing.T) {
	e := newEnv(t)
	base := must[v1.Layer](t)(random.Layer(4096, types.DockerLayer))
	a := imageOf(t, base, must[v1.Layer](t)(random.Layer(1024, types.DockerLayer)))
	b := imageOf(t, base, must[v1.Layer](t)(random.Layer(1024, types.DockerLayer)))
	e.reg.push(t, "a:1", a)
	e.reg.push(t, "b:1", b)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := e.reg.host + "/a:1"
			if i%2 == 1 {
				ref = e.reg.host + "/b:1"
			}
			if _, err := e.svc.Pull(ctxT(t), ref, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, l := range append(must[[]v1.Layer](t)(a.Layers()), must[[]v1.Layer](t)(b.Layers())...) {
		d := must[v1.Hash](t)(l.Digest())
		if n := e.reg.gets(d); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", d, n)
		}
	}
	if n := len(dirNames(t, filepath.Join(e.root, "snapshots"))); n != 3 {
		t.Errorf("%d snapshots, want 3 (shared base stored once)", n)
	}
	if n := len(dirNames(t, filepath.Join(e.root, "blobs", "sha256"))); n != 3+2+2 {
		t.Errorf("%d blobs, want 7 (3 layers, 2 configs, 2 manifests)", n)
	}
	if n := len(e.svc.List()); n != 2 {
		t.Errorf("%d images, want 2", n)
	}
	reg := e.opts.Registerer.(*prometheus.Registry)
	fams := gather(t, reg)
	for _, n := range []string{"peapod_image_pull_bytes_total", "peapod_image_pull_duration_seconds",
		"peapod_image_pull_failures_total", "peapod_image_pulls_in_flight"} {
		if _, ok := fams[n]; !ok {
			t.Errorf("metric %s not registered", n)
		}
	}
	if v := fams["peapod_image_pull_bytes_total"]; v < 4096+2048 {
		t.Errorf("pull bytes = %v", v)
	}
}

// TestPullStall: a registry trickling blob bytes below the progress rule
// fails the pull with a stall error; nothing becomes visible.
func TestPullStall(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StallTimeout = 300 * time.Millisecond })
	img := imageOf(t, must[v1.Layer](t)(random.Layer(64<<10, types.DockerLayer)))
	e.reg.push(t, "slow:1", img)
	e.reg.use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, "uploads") {
				next.ServeHTTP(w, r)
				return
			}
			// Config blobs pass; layer blobs trickle 16 bytes / 50 ms.
			rec := &bufferWriter{header: http.Header{}}
			next.ServeHTTP(rec, r)
			if len(rec.body) < 8<<10 {
				w.Write(rec.body)
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(rec.body)))
			w.WriteHeader(http.StatusOK)
			for i := 0; i < len(rec.body); i += 16 {
				if _, err := w.Write(rec.body[i:min(i+16, len(rec.body))]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	})
	start := time.Now()
	_, err := e.svc.Pull(ctxT(t), e.reg.host+"/slow:1", nil)
	if err == nil || !strings.Contains(err.Error(), "pull of "+e.reg.host+"/slow:1 stalled: no progress for 300ms") {
		t.Fatalf("err = %v, want stall error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stall detected after %s", d)
	}
	if len(e.svc.List()) != 0 {
		t.Error("stalled pull left an image")
	}
	if v := gather(t, e.opts.Registerer.(*prometheus.Registry))["peapod_image_pull_failures_total"]; v != 1 {
		t.Errorf("failures = %v", v)
	}
}

// TestPullStallMidLayerRetry: a registry that stops sending in the middle
// of a layer (connection open, no bytes) fails the pull after the stall
// timeout, leaving nothing stored; a retry once the registry is well
// restarts the download cleanly and gets the whole image.
func TestPullStallMidLayerRetry(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StallTimeout = 300 * time.Millisecond })
	small := must[v1.Layer](t)(random.Layer(16<<10, types.DockerLayer))
	big := must[v1.Layer](t)(random.Layer(256<<10, types.DockerLayer))
	img := imageOf(t, small, big)
	e.reg.push(t, "stall:1", img)
	bigD := must[v1.Hash](t)(big.Digest())
	stalled := make(chan struct{}, 1)
	e.reg.use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+bigD.String()) {
				next.ServeHTTP(w, r)
				return
			}
			rec := &bufferWriter{header: http.Header{}}
			next.ServeHTTP(rec, r)
			w.Header().Set("Content-Length", fmt.Sprint(len(rec.body)))
			w.WriteHeader(http.StatusOK)
			w.Write(rec.body[:len(rec.body)/2])
			w.(http.Flusher).Flush()
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-r.Context().Done() // the rest never comes
		})
	})
	start := time.Now()
	_, err := e.svc.Pull(ctxT(t), e.reg.host+"/stall:1", nil)
	if err == nil || !strings.Contains(err.Error(), "pull of "+e.reg.host+"/stall:1 stalled: no progress for 300ms") {
		t.Fatalf("err = %v, want stall error", err)
	}
	select {
	case <-stalled:
	default:
		t.Fatal("the pull never reached the stalling layer")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stall detected after %s", d)
	}
	// What the failed pull stored (the small layer, the config, half of
	// the big one) is collected at once: no partial blob is kept for a
	// retry to trust.
	assertStoreEmpty(t, e, "a stalled pull")

	e.reg.use(func(h http.Handler) http.Handler { return h })
	got := e.pull(e.reg.host + "/stall:1")
	if got.ID != must[v1.Hash](t)(img.ConfigName()).String() {
		t.Errorf("ID = %s", got.ID)
	}
	if n := e.reg.gets(bigD); n != 2 {
		t.Errorf("big layer fetched %d times, want 2 (the stalled try and the retry)", n)
	}
	if n := dirNames(t, filepath.Join(e.root, "tmp")); len(n) != 0 {
		t.Errorf("tmp after the retry: %v", n)
	}
}

type bufferWriter struct {
	header http.Header
	body   []byte
	code   int
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) Write(p []byte) (int, error) {
	b.body = append(b.body, p...)
	return len(p), nil
}
func (b *bufferWriter) WriteHeader(c int) { b.code = c }

// TestInterruptedPull: a pull cancelled mid-download leaves nothing
// visible; leftovers of a crash are cleaned by New and the next pull works.
func TestInterruptedPull(t *testing.T) {
	e := newEnv(t)
	img := imageOf(t, must[v1.Layer](t)(random.Layer(32<<10, types.DockerLayer)), must[v1.Layer](t)(random.Layer(32<<10, types.DockerLayer)))
	e.reg.push(t, "big:1", img)
	ctx, cancel := context.WithCancel(context.Background())
	hit := make(chan struct{}, 10)
	e.reg.use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				rec := &bufferWriter{header: http.Header{}}
				next.ServeHTTP(rec, r)
				if len(rec.body) > 8<<10 { // a layer: send half, then hang
					w.Header().Set("Content-Length", fmt.Sprint(len(rec.body)))
					w.Write(rec.body[:len(rec.body)/2])
					w.(http.Flusher).Flush()
					hit <- struct{}{}
					<-r.Context().Done()
					return
				}
				w.Write(rec.body)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	go func() { <-hit; cancel() }()
	if _, err := e.svc.Pull(ctx, e.reg.host+"/big:1", nil); err == nil {
		t.Fatal("cancelled pull succeeded")
	}
	if len(e.svc.List()) != 0 {
		t.Fatal("cancelled pull left an image")
	}
	// Simulate kill -9 in the middle of unpacking and downloading.
	for _, p := range []string{"tmp/snap-123/fs/etc", "tmp/blob-9"} {
		os.MkdirAll(filepath.Join(e.root, p), 0o755)
	}
	os.MkdirAll(filepath.Join(e.root, "snapshots", strings.Repeat("c", 64), "fs"), 0o755) // unreferenced
	e.reg.use(func(h http.Handler) http.Handler { return h })
	e.reopen()
	if n := dirNames(t, filepath.Join(e.root, "tmp")); len(n) != 0 {
		t.Errorf("tmp after New: %v", n)
	}
	if n := dirNames(t, filepath.Join(e.root, "snapshots")); len(n) != 0 {
		t.Errorf("snapshots after New: %v", n)
	}
	got := e.pull(e.reg.host + "/big:1")
	if got.ID != must[v1.Hash](t)(img.ConfigName()).String() {
		t.Errorf("ID = %s", got.ID)
	}
}

// gather returns each metric family's first value (counter, gauge, or
// histogram sample count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			out[mf.GetName()] = m.Counter.GetValue()
		case m.Gauge != nil:
			out[mf.GetName()] = m.Gauge.GetValue()
		case m.Histogram != nil:
			out[mf.GetName()] = float64(m.Histogram.GetSampleCount())
		}
	}
	return out
}
