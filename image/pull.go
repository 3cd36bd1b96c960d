package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"
)

// Auth mirrors runtimeapi.AuthConfig.
type Auth struct {
	Username, Password, Auth, ServerAddress, IdentityToken, RegistryToken string
}

// progressEvery is how often a pull logs its byte count.
var progressEvery = 5 * time.Second

// downloadJobs is how many layer blobs one pull fetches at once.
const downloadJobs = 3

type progress struct {
	done, total atomic.Int64
}

func authenticator(a *Auth) authn.Authenticator {
	if a == nil || *a == (Auth{}) {
		return authn.Anonymous
	}
	cfg := authn.AuthConfig{
		Username: a.Username, Password: a.Password, Auth: a.Auth,
		IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken,
	}
	// The bearer-token flow needs username/password; decode "auth" for it.
	if cfg.Username == "" && cfg.Auth != "" {
		if raw, err := base64.StdEncoding.DecodeString(cfg.Auth); err == nil {
			if u, p, ok := strings.Cut(string(raw), ":"); ok {
				cfg.Username, cfg.Password = u, p
			}
		}
	}
	return authn.FromConfig(cfg)
}

// Pull fetches ref (resolved to the node platform) from its registry or
// the registry's mirrors and makes it visible under its upstream names.
// Concurrent pulls of the same ref with the same credentials share one
// download.
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth) (*Image, error) {
	named, err := Normalize(ref)
	if err != nil {
		return nil, err
	}
	key := named
	if auth != nil {
		h := sha256.Sum256(fmt.Appendf(nil, "%#v", *auth))
		key += "|" + hex.EncodeToString(h[:8])
	}
	v, err := s.pulls.Do(ctx, key, func(ctx context.Context) (any, error) {
		return s.pull(ctx, named, auth)
	})
	if err != nil {
		return nil, err
	}
	img := *v.(*Image)
	return &img, nil
}

func (s *Service) pull(ctx context.Context, named string, auth *Auth) (_ *Image, err error) {
	start := time.Now()
	s.m.inFlight.Inc()
	defer s.m.inFlight.Dec()
	logger := klog.FromContext(ctx).WithValues("ref", named)
	defer func() {
		if err != nil {
			s.m.failures.Inc()
			logger.Error(err, "Image pull failed")
		} else {
			s.m.duration.Observe(time.Since(start).Seconds())
		}
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	prog := &progress{}
	stopWatch := s.watch(ctx, cancel, named, prog)
	defer stopWatch()
	// A stall cancels ctx; report the stall, not "context canceled".
	defer func() {
		if err != nil && context.Cause(ctx) != nil && errors.Is(context.Cause(ctx), errStalled) {
			err = context.Cause(ctx)
		}
	}()

	eps, err := s.endpoints(named)
	if err != nil {
		return nil, err
	}
	opts := []remote.Option{
		remote.WithAuth(authenticator(auth)),
		remote.WithPlatform(*s.o.Platform),
		remote.WithUserAgent("peapod"),
		remote.WithRetryBackoff(registryRetry),
	}
	if s.o.Transport != nil {
		opts = append(opts, remote.WithTransport(s.o.Transport))
	}
	var (
		desc  *remote.Descriptor
		ep    endpoint
		tried []error
	)
	for _, ep = range eps {
		desc, err = remote.Get(ep.ref, slices.Concat(opts, []remote.Option{remote.WithContext(ctx)})...)
		if err == nil {
			break
		}
		logger.Info("Image endpoint failed", "endpoint", ep.host, "err", err)
		tried = append(tried, fmt.Errorf("%s: %w", ep.host, err))
		if ctx.Err() != nil {
			break
		}
	}
	if desc == nil {
		return nil, fmt.Errorf("pull %s: %w", named, errors.Join(tried...))
	}
	img, err := s.platformImage(desc, ep, slices.Concat(opts, []remote.Option{remote.WithContext(ctx)}))
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", named, err)
	}
	repo, suffix, _ := splitRef(named)
	rec := &record{RepoDigests: []string{repo + "@" + desc.Digest.String()}}
	if strings.HasPrefix(suffix, ":") {
		rec.RepoTags = []string{named}
	}
	fetch := func(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
		l, err := remote.Layer(ep.ref.Context().Digest(d.String()), slices.Concat(opts, []remote.Option{remote.WithContext(ctx)})...)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	out, err := s.ingest(ctx, named, img, rec, fetch, prog, stopWatch)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", named, err)
	}
	logger.Info("Pulled image", "image", out.ID, "endpoint", ep.host, "bytes", prog.done.Load(), "duration", time.Since(start))
	return out, nil
}

// registryRetry is how often and how far apart the registry client tries
// a request again after a network error or a 408, 429, 500, 502, 503 or 504
// answer: go-containerregistry's default, three tries 1 s and 3 s apart.
// (A body cut mid-stream is not retried here: the pull fails, cleans up,
// and the caller's next pull starts that blob again.) Tests shorten it.
var registryRetry = remote.Backoff{Duration: time.Second, Factor: 3, Jitter: 0.1, Steps: 3}

// platformImage is the image desc names: itself, or the manifest of an
// index for the node's platform, fetched by digest from the same endpoint.
// Resolved here rather than by desc.Image() so that an error names the
// index and the manifest digest at fault.
func (s *Service) platformImage(desc *remote.Descriptor, ep endpoint, opts []remote.Option) (v1.Image, error) {
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		return img, nil
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
	}
	child, err := selectPlatform(im, desc.Digest, *s.o.Platform)
	if err != nil {
		return nil, err
	}
	if child.MediaType != "" && !child.MediaType.IsImage() {
		return nil, fmt.Errorf("index %s: the entry for platform %s is a %q, not an image manifest", desc.Digest, s.o.Platform, child.MediaType)
	}
	img, err := remote.Image(ep.ref.Context().Digest(child.Digest.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("manifest %s of index %s: %w", child.Digest, desc.Digest, err)
	}
	return img, nil
}

var errStalled = errors.New("stalled")

type stallError struct {
	ref     string
	timeout time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("pull of %s stalled: no progress for %s", e.ref, e.timeout)
}
func (e *stallError) Is(target error) bool { return target == errStalled }

// watch logs the progress of a pull and cancels it when it stalls (see the
// package doc for the rule). The returned stop ends both; call it when the
// download phase is over.
func (s *Service) watch(ctx context.Context, cancel context.CancelCauseFunc, ref string, p *progress) func() {
	window := s.o.StallTimeout
	minBytes := max(int64(1024), int64(1024*window.Seconds()))
	tick := min(window/4, time.Second)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		markBytes, markTime, lastLog := p.done.Load(), time.Now(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				n := p.done.Load()
				if n-markBytes >= minBytes {
					markBytes, markTime = n, now
				} else if now.Sub(markTime) >= window {
					cancel(&stallError{ref: ref, timeout: window})
					return
				}
				if now.Sub(lastLog) >= progressEvery {
					lastLog = now
					klog.InfoS("Pulling image", "ref", ref, "bytesDone", n, "bytesTotal", p.total.Load())
				}
			}
		}
	}()
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			close(done)
		}
	}
}

// ingest stores img's manifest, config and layers and commits rec: the
// download phase (blobs), then stopDownload, then the unpack phase. When it
// fails, what it stored and nothing else refers to (the manifest, the
// config, layers fetched before the failure, their snapshots) is removed
// again, so a failed pull or import leaves the store as it found it.
func (s *Service) ingest(ctx context.Context, named string, img v1.Image, rec *record,
	fetch func(context.Context, v1.Hash) (io.ReadCloser, error), prog *progress, stopDownload func()) (_ *Image, err error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := parseManifest(rawManifest)
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", m.digest, err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	if err := m.setConfig(rawConfig); err != nil {
		return nil, err
	}
	m.fill(rec)
	rec.ManifestMediaType = string(mt)
	leases := []string{"blob:" + m.digest.Hex, "blob:" + m.Config.Digest.Hex}
	for i, l := range m.Layers {
		leases = append(leases, "blob:"+l.Digest.Hex, "snap:"+hexOf(rec.ChainIDs[i]))
		prog.total.Add(l.Size)
	}
	release := s.lease(leases)
	defer func() {
		release()
		if err != nil {
			s.collect()
		}
	}()

	// DOWNLOAD
	if err := s.writeBlob(m.digest, rawManifest); err != nil {
		return nil, err
	}
	if err := s.writeBlob(m.Config.Digest, rawConfig); err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(downloadJobs)
	for _, l := range m.Layers {
		g.Go(func() error { return s.fetchBlob(gctx, l.Digest, l.Size, fetch, prog) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	stopDownload()

	// UNPACK: no network, no stall timer.
	for i, l := range rec.Layers {
		if err := s.ensureSnapshot(ctx, rec.ChainIDs[i], l); err != nil {
			return nil, err
		}
	}
	return s.commit(rec)
}

// collect removes the blobs and snapshots nothing refers to (after a failed
// ingest: what it stored for itself alone). Blobs and snapshots of other
// pulls in flight are leased, so they stay.
func (s *Service) collect() {
	s.mu.Lock()
	victims := s.gcLocked()
	s.mu.Unlock()
	removeAll(victims)
}

// writeBlob stores small in-memory blobs (manifests, configs).
func (s *Service) writeBlob(d v1.Hash, data []byte) error {
	if got, _, _ := v1.SHA256(bytes.NewReader(data)); got != d {
		return fmt.Errorf("blob %s: digest mismatch (got %s)", d, got)
	}
	path := s.blobPath(d.String())
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	f, err := os.CreateTemp(s.tmpDir, "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return nil
}

// fetchBlob makes sure blob d is in the store, downloading it once even when
// several pulls want it at the same time; every waiting pull sees the bytes
// as its own progress.
func (s *Service) fetchBlob(ctx context.Context, d v1.Hash, size int64, fetch func(context.Context, v1.Hash) (io.ReadCloser, error), prog *progress) error {
	if _, err := os.Stat(s.blobPath(d.String())); err == nil {
		prog.done.Add(size)
		return nil
	}
	s.subMu.Lock()
	if s.subs[d.Hex] == nil {
		s.subs[d.Hex] = map[*progress]struct{}{}
	}
	s.subs[d.Hex][prog] = struct{}{}
	s.subMu.Unlock()
	defer func() {
		s.subMu.Lock()
		delete(s.subs[d.Hex], prog)
		if len(s.subs[d.Hex]) == 0 {
			delete(s.subs, d.Hex)
		}
		s.subMu.Unlock()
	}()
	_, err := s.blobs.Do(ctx, d.Hex, func(ctx context.Context) (any, error) {
		return nil, s.download(ctx, d, size, fetch)
	})
	return err
}

type subWriter struct {
	s   *Service
	hex string
}

func (w subWriter) Write(b []byte) (int, error) {
	n := int64(len(b))
	w.s.m.bytes.Add(float64(n))
	w.s.subMu.Lock()
	for p := range w.s.subs[w.hex] {
		p.done.Add(n)
	}
	w.s.subMu.Unlock()
	return len(b), nil
}

func (s *Service) download(ctx context.Context, d v1.Hash, size int64, fetch func(context.Context, v1.Hash) (io.ReadCloser, error)) error {
	path := s.blobPath(d.String())
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	rc, err := fetch(ctx, d)
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", d, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(s.tmpDir, "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	// One byte more than the manifest says is enough to know the blob is
	// wrong: a registry sending an endless body must not fill the disk.
	n, err := io.Copy(io.MultiWriter(f, h, subWriter{s, d.Hex}), io.LimitReader(rc, size+1))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return fmt.Errorf("fetch blob %s: %w", d, err)
	}
	if n > size {
		return fmt.Errorf("blob %s: size mismatch: the manifest says %d bytes, more arrived", d, size)
	}
	if n != size {
		return fmt.Errorf("blob %s: size mismatch: the manifest says %d bytes, got %d", d, size, n)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("blob %s: digest mismatch: got sha256:%s", d, got)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return nil
}
