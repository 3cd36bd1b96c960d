package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"peapod/store"
)

// BucketHolders holds one holderRecord per container that uses an image's
// snapshots (see Acquire).
const BucketHolders = "image-holders"

// ErrNotFound is returned when no image matches a reference.
var ErrNotFound = errors.New("image not found")

// Options configures a Service.
type Options struct {
	Root         string              // blobs/, snapshots/, tmp/ live here
	Store        *store.Store        // image records (store.BucketImages) and holders (BucketHolders)
	Mirrors      map[string][]string // upstream host -> endpoints ("http://127.0.0.1:5000"); no fallback to the host
	Insecure     []string            // hosts reached over plain http; loopback always is
	StallTimeout time.Duration       // default 1m
	Platform     *v1.Platform        // default linux/runtime.GOARCH
	Registerer   prometheus.Registerer
	// Transport for registry traffic; nil means go-containerregistry's
	// default. Tests use it to prove no request leaves the box.
	Transport http.RoundTripper
}

// Image is one image as the CRI sees it.
type Image struct {
	ID          string   // "sha256:<config digest hex>"
	RepoTags    []string // "docker.io/library/busybox:latest"
	RepoDigests []string // "docker.io/library/busybox@sha256:<manifest digest>"
	Size        uint64   // compressed layers + config, like containerd
	Config      *v1.ConfigFile
	ChainIDs    []string // bottom layer first, "sha256:<hex>"
	Pinned      bool
}

// FsUsage is what the image store occupies on disk.
type FsUsage struct {
	Mountpoint string
	UsedBytes  uint64
	InodesUsed uint64
}

type layerRecord struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diffID"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
}

// record is the durable form of an image (store.BucketImages, key = ID).
type record struct {
	ID                string        `json:"id"`
	RepoTags          []string      `json:"repoTags,omitempty"`
	RepoDigests       []string      `json:"repoDigests,omitempty"`
	Size              uint64        `json:"size"`
	Manifest          string        `json:"manifest"` // digest of the platform manifest blob
	ManifestMediaType string        `json:"manifestMediaType"`
	Layers            []layerRecord `json:"layers"`
	ChainIDs          []string      `json:"chainIDs"`
	Pinned            bool          `json:"pinned,omitempty"`
	Updated           time.Time     `json:"updated"`

	config *v1.ConfigFile
}

func (r *record) configDigest() string { return r.ID }

func (r *record) image() *Image {
	return &Image{
		ID:          r.ID,
		RepoTags:    slices.Clone(r.RepoTags),
		RepoDigests: slices.Clone(r.RepoDigests),
		Size:        r.Size,
		Config:      r.config,
		ChainIDs:    slices.Clone(r.ChainIDs),
		Pinned:      r.Pinned,
	}
}

type holderRecord struct {
	Holder   string   `json:"holder"`
	ImageID  string   `json:"imageID"`
	ChainIDs []string `json:"chainIDs"`
}

// Service is the image store of one node.
type Service struct {
	o                          Options
	blobsDir, snapsDir, tmpDir string

	mu      sync.RWMutex
	images  map[string]*record       // by ID
	holders map[string]*holderRecord // by holder
	leases  map[string]int           // "blob:<hex>" / "snap:<hex>" -> count

	pulls, blobs, snaps flight

	// volMu serialises image volume mounts and unmounts (volume.go); it
	// is taken before mu, never under it.
	volMu sync.Mutex

	subMu sync.Mutex
	subs  map[string]map[*progress]struct{} // blob hex -> pulls waiting for it

	m *metrics

	usageMu sync.Mutex
	usage   FsUsage
	usageAt time.Time
}

// New opens the image store at o.Root: it loads the records, drops the
// leftovers of interrupted pulls (tmp/), and removes blobs and snapshots
// nothing refers to.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.Root == "" || o.Store == nil {
		return nil, errors.New("image: Options.Root and Options.Store are required")
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = time.Minute
	}
	if o.Platform == nil {
		o.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	s := &Service{
		o:        o,
		blobsDir: filepath.Join(o.Root, "blobs", "sha256"),
		snapsDir: filepath.Join(o.Root, "snapshots"),
		tmpDir:   filepath.Join(o.Root, "tmp"),
		images:   map[string]*record{},
		holders:  map[string]*holderRecord{},
		leases:   map[string]int{},
		subs:     map[string]map[*progress]struct{}{},
	}
	var err error
	if s.m, err = newMetrics(o.Registerer); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("image: clean %s: %w", s.tmpDir, err)
	}
	for _, d := range []string{s.blobsDir, s.snapsDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	victims := s.gcLocked()
	s.mu.Unlock()
	removeAll(victims)
	klog.InfoS("Image store ready", "root", o.Root, "images", len(s.images), "holders", len(s.holders))
	return s, nil
}

// load reads every record; a record whose config blob or snapshots are
// missing (the disk lost them) is dropped rather than served half.
func (s *Service) load() error {
	var broken []string
	err := store.List[record](s.o.Store, store.BucketImages, func(key string, r *record) error {
		raw, err := os.ReadFile(s.blobPath(r.configDigest()))
		if err == nil {
			r.config, err = v1.ParseConfigFile(bytes.NewReader(raw))
		}
		for _, c := range r.ChainIDs {
			if err == nil {
				_, err = os.Stat(s.snapPath(c))
			}
		}
		if err != nil {
			klog.ErrorS(err, "Dropping broken image record", "image", key)
			broken = append(broken, key)
			return nil
		}
		s.images[r.ID] = r
		return nil
	})
	if err != nil {
		return fmt.Errorf("image: load records: %w", err)
	}
	for _, k := range broken {
		if err := s.o.Store.Delete(store.BucketImages, k); err != nil {
			return fmt.Errorf("image: drop record %s: %w", k, err)
		}
	}
	// A crash between the two Puts of a tag move can leave one tag on two
	// images; the most recently updated image keeps it.
	owner := map[string]*record{}
	recs := s.sortedRecords()
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Updated.After(recs[j].Updated) })
	for _, r := range recs {
		kept := r.RepoTags[:0]
		for _, t := range r.RepoTags {
			if owner[t] == nil {
				owner[t] = r
				kept = append(kept, t)
			}
		}
		r.RepoTags = kept
	}
	err = store.List[holderRecord](s.o.Store, BucketHolders, func(key string, h *holderRecord) error {
		s.holders[key] = h
		return nil
	})
	if err != nil {
		return fmt.Errorf("image: load holders: %w", err)
	}
	return nil
}

func (s *Service) blobPath(digest string) string {
	return filepath.Join(s.blobsDir, strings.TrimPrefix(digest, "sha256:"))
}

func (s *Service) snapPath(chainID string) string {
	return filepath.Join(s.snapsDir, strings.TrimPrefix(chainID, "sha256:"))
}

func (s *Service) sortedRecords() []*record {
	recs := make([]*record, 0, len(s.images))
	for _, r := range s.images {
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].ID < recs[j].ID })
	return recs
}

// List returns every image, ordered by ID.
func (s *Service) List() []*Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*Image
	for _, r := range s.sortedRecords() {
		out = append(out, r.image())
	}
	return out
}

// Get finds an image by full id ("sha256:<hex>"), bare hex id, unique id
// prefix (12+ hex digits), tag, digest reference or short name.
func (s *Service) Get(ref string) (*Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := s.resolveLocked(ref)
	if err != nil {
		return nil, err
	}
	return r.image(), nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

func (s *Service) resolveLocked(ref string) (*record, error) {
	id := strings.TrimPrefix(ref, "sha256:")
	if len(id) == 64 && isHex(id) {
		if r := s.images["sha256:"+id]; r != nil {
			return r, nil
		}
		if strings.HasPrefix(ref, "sha256:") {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
		}
	}
	if named, err := Normalize(ref); err == nil {
		for _, r := range s.images {
			if slices.Contains(r.RepoTags, named) || slices.Contains(r.RepoDigests, named) {
				return r, nil
			}
		}
	}
	if len(id) >= 12 && isHex(id) {
		var found *record
		for _, r := range s.images {
			if strings.HasPrefix(strings.TrimPrefix(r.ID, "sha256:"), id) {
				if found != nil {
					return nil, fmt.Errorf("image id prefix %s is ambiguous", ref)
				}
				found = r
			}
		}
		if found != nil {
			return found, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
}

// commit makes rec visible: it merges with an existing record of the same
// ID, takes its tags away from other images and drops images left without
// any name. Call only once every blob and snapshot of rec is committed.
func (s *Service) commit(rec *record) (*Image, error) {
	s.mu.Lock()
	rec.Updated = time.Now()
	if old := s.images[rec.ID]; old != nil {
		rec.RepoTags = union(old.RepoTags, rec.RepoTags)
		rec.RepoDigests = union(old.RepoDigests, rec.RepoDigests)
		rec.Pinned = rec.Pinned || old.Pinned
	}
	if err := s.o.Store.Put(store.BucketImages, rec.ID, rec); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("commit image %s: %w", rec.ID, err)
	}
	s.images[rec.ID] = rec
	var err error
	for _, other := range s.sortedRecords() {
		if other.ID == rec.ID {
			continue
		}
		kept := slices.DeleteFunc(slices.Clone(other.RepoTags), func(t string) bool { return slices.Contains(rec.RepoTags, t) })
		if len(kept) == len(other.RepoTags) {
			continue
		}
		other.RepoTags = kept
		if len(kept) == 0 && len(other.RepoDigests) == 0 {
			klog.InfoS("Removing image that lost its last name", "image", other.ID, "to", rec.ID)
			delete(s.images, other.ID)
			err = errors.Join(err, s.o.Store.Delete(store.BucketImages, other.ID))
		} else {
			err = errors.Join(err, s.o.Store.Put(store.BucketImages, other.ID, other))
		}
	}
	victims := s.gcLocked()
	img := rec.image()
	s.mu.Unlock()
	removeAll(victims)
	if err != nil {
		return nil, fmt.Errorf("commit image %s: move tags: %w", rec.ID, err)
	}
	return img, nil
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// Remove removes the image ref resolves to, with all its tags and digests.
// Snapshots held by containers (Acquire) stay until Release. An image a
// container mounts as a volume is not removed: ErrInUse names the
// containers.
func (s *Service) Remove(ctx context.Context, ref string) error {
	s.mu.Lock()
	r, err := s.resolveLocked(ref)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if users := s.volumeUsersLocked(r.ID, ""); len(users) > 0 {
		s.mu.Unlock()
		what := "container " + users[0] + ": remove it first"
		if len(users) > 1 {
			what = "containers " + strings.Join(users, ", ") + ": remove them first"
		}
		return fmt.Errorf("%w: image %s is mounted as an image volume by %s", ErrInUse, r.ID, what)
	}
	if err := s.o.Store.Delete(store.BucketImages, r.ID); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove image %s: %w", r.ID, err)
	}
	delete(s.images, r.ID)
	victims := s.gcLocked()
	s.mu.Unlock()
	removeAll(victims)
	klog.InfoS("Removed image", "ref", ref, "image", r.ID, "tags", r.RepoTags)
	return nil
}

// Acquire records that holder (a container id) uses the snapshots of the
// image ref resolves to, and returns their fs dirs, top layer first, ready
// for overlay's lowerdir=. The snapshots outlive a removal of the image
// until Release(holder). Acquiring again for the same holder replaces the
// previous hold.
//
// The hold is in memory (which is what GC reads) before the lock is let
// go; its record is written to the store after, so ImageStatus and
// ListImages (the kubelet asks before every container create) never wait
// on a store sync. A new hold frees nothing: no GC here.
func (s *Service) Acquire(ctx context.Context, holder, ref string) ([]string, *Image, error) {
	if holder == "" {
		return nil, nil, errors.New("acquire image: empty holder")
	}
	s.mu.Lock()
	r, err := s.resolveLocked(ref)
	if err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	h := &holderRecord{Holder: holder, ImageID: r.ID, ChainIDs: slices.Clone(r.ChainIDs)}
	prev := s.holders[holder]
	s.holders[holder] = h
	img := r.image()
	s.mu.Unlock()
	if err := s.o.Store.Put(BucketHolders, holder, h); err != nil {
		s.mu.Lock()
		if s.holders[holder] == h {
			if prev != nil {
				s.holders[holder] = prev
			} else {
				delete(s.holders, holder)
			}
		}
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("acquire image %s for %s: %w", r.ID, holder, err)
	}
	dirs := make([]string, 0, len(h.ChainIDs))
	for i := len(h.ChainIDs) - 1; i >= 0; i-- {
		dirs = append(dirs, filepath.Join(s.snapPath(h.ChainIDs[i]), "fs"))
	}
	return dirs, img, nil
}

// Release drops holder's hold (idempotent) and removes what nothing uses.
// Only a hold on an image removed meanwhile can leave something unused, so
// only then does it collect. The store write happens outside the lock, as
// in Acquire; if it fails the hold is back, for the caller's retry.
func (s *Service) Release(ctx context.Context, holder string) error {
	s.mu.Lock()
	h, ok := s.holders[holder]
	if ok {
		delete(s.holders, holder)
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.o.Store.Delete(BucketHolders, holder); err != nil {
		s.mu.Lock()
		if _, again := s.holders[holder]; !again {
			s.holders[holder] = h
		}
		s.mu.Unlock()
		return fmt.Errorf("release %s: %w", holder, err)
	}
	s.mu.Lock()
	var victims []string
	if _, imageKept := s.images[h.ImageID]; !imageKept {
		victims = s.gcLocked()
	}
	s.mu.Unlock()
	removeAll(victims)
	return nil
}

func (s *Service) lease(keys []string) func() {
	s.mu.Lock()
	for _, k := range keys {
		s.leases[k]++
	}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		for _, k := range keys {
			if s.leases[k]--; s.leases[k] <= 0 {
				delete(s.leases, k)
			}
		}
		s.mu.Unlock()
	}
}

// gcLocked moves every blob and snapshot that no image, holder or lease
// refers to into tmp/ and returns those paths; the caller deletes them
// after unlocking (a crash in between is handled by New's tmp cleanup).
func (s *Service) gcLocked() []string {
	used := map[string]bool{}
	for k := range s.leases {
		used[k] = true
	}
	for _, r := range s.images {
		used["blob:"+hexOf(r.ID)] = true
		used["blob:"+hexOf(r.Manifest)] = true
		for _, l := range r.Layers {
			used["blob:"+hexOf(l.Digest)] = true
		}
		for _, c := range r.ChainIDs {
			used["snap:"+hexOf(c)] = true
		}
	}
	for _, h := range s.holders {
		for _, c := range h.ChainIDs {
			used["snap:"+hexOf(c)] = true
		}
	}
	var victims []string
	for _, d := range []struct{ kind, dir string }{{"blob:", s.blobsDir}, {"snap:", s.snapsDir}} {
		ents, err := os.ReadDir(d.dir)
		if err != nil {
			klog.ErrorS(err, "Image GC: cannot list", "dir", d.dir)
			continue
		}
		for _, e := range ents {
			if used[d.kind+e.Name()] {
				continue
			}
			dst := filepath.Join(s.tmpDir, fmt.Sprintf("gc-%s-%s-%d", strings.TrimSuffix(d.kind, ":"), e.Name(), time.Now().UnixNano()))
			if err := os.Rename(filepath.Join(d.dir, e.Name()), dst); err != nil {
				klog.ErrorS(err, "Image GC: cannot move", "name", e.Name())
				continue
			}
			klog.V(2).InfoS("Image GC", "kind", d.kind, "name", e.Name())
			victims = append(victims, dst)
		}
	}
	return victims
}

func removeAll(paths []string) {
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			klog.ErrorS(err, "Image GC: remove", "path", p)
		}
	}
}

func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }
