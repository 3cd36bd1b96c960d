// Package imagegc removes unused container images through the CRI, as the
// kubelet's image garbage collector (pkg/kubelet/images) does: any image
// unused for the maximum age goes; when the image filesystem is fuller than
// the high threshold, unused images go, least recently used first, until it
// is back at the low threshold. It speaks only CRI (ImageManagerService and
// RuntimeService), so it works against any runtime.
//
// What it knows of each image id lives in memory, as in the kubelet: after
// a restart every image counts as first detected then, so the minimum and
// maximum ages start over rather than removing images at once.
//
//	ListImages ─► detected (firstDetected = now)
//	                 │
//	    a container (any state) refers to it ─► in use (lastUsed = now): kept
//	    pinned, or detected less than MinAge ago                          ─► kept
//	    otherwise                                 ─► removable, LRU first
//	                 │
//	    gone from ListImages ─► forgotten
package imagegc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// DefaultPeriod is how often Run collects when Options.Period is 0: the
// kubelet's ImageGCPeriod.
const DefaultPeriod = 5 * time.Minute

// Options configure a Manager. Images and Runtime are required.
type Options struct {
	Images  criapi.ImageManagerService
	Runtime criapi.RuntimeService
	// HighThresholdPercent of the image filesystem used starts a
	// collection (agent.image_gc_high_threshold_percent); 100 turns the
	// usage-based collection off, as in the kubelet.
	HighThresholdPercent int
	// LowThresholdPercent is the usage a collection frees down to
	// (agent.image_gc_low_threshold_percent).
	LowThresholdPercent int
	// MinAge: an image detected less than this ago is never removed: it
	// may just have been pulled for a container about to start
	// (agent.image_minimum_gc_age).
	MinAge time.Duration
	// MaxAge: an unused image not used for this long is removed whatever
	// the disk usage; 0 turns this off (agent.image_maximum_gc_age).
	MaxAge time.Duration
	// Period is how often Run collects (default DefaultPeriod).
	Period time.Duration
	// Clock is the time source (default time.Now).
	Clock func() time.Time

	// statfs reads the image filesystem's size; tests fake it.
	statfs func(path string) (fsSize, error)
}

// fsSize is what statfs tells of a filesystem, in bytes.
type fsSize struct {
	Capacity, Available uint64
}

// record is what the manager knows of one image id.
type record struct {
	firstDetected time.Time
	// lastUsed is when a container last referred to the image; zero when
	// none has since it was detected.
	lastUsed time.Time
	inUse    bool
	pinned   bool
	size     uint64
	tags     []string
}

// Manager collects images; its methods are safe for concurrent use (one
// pass at a time).
type Manager struct {
	o Options

	mu      sync.Mutex
	records map[string]*record // by image id
}

// New checks o, fills in defaults and returns a Manager; Run starts it.
func New(o Options) (*Manager, error) {
	if o.Images == nil || o.Runtime == nil {
		return nil, errors.New("imagegc: Options.Images and Options.Runtime are required")
	}
	hi, lo := o.HighThresholdPercent, o.LowThresholdPercent
	if hi < 0 || hi > 100 {
		return nil, fmt.Errorf("imagegc: agent.image_gc_high_threshold_percent must be 0 to 100, got %d", hi)
	}
	if lo < 0 || lo > 100 {
		return nil, fmt.Errorf("imagegc: agent.image_gc_low_threshold_percent must be 0 to 100, got %d", lo)
	}
	// At 100 the usage-based collection is off and the low threshold
	// unused, as config.Validate has it.
	if lo >= hi && hi != 100 {
		return nil, fmt.Errorf("imagegc: agent.image_gc_low_threshold_percent (%d) must be below agent.image_gc_high_threshold_percent (%d)", lo, hi)
	}
	if o.MinAge < 0 {
		return nil, fmt.Errorf("imagegc: agent.image_minimum_gc_age must not be negative, got %s", o.MinAge)
	}
	if o.MaxAge < 0 {
		return nil, fmt.Errorf("imagegc: agent.image_maximum_gc_age must not be negative, got %s", o.MaxAge)
	}
	if o.MaxAge > 0 && o.MaxAge < o.MinAge {
		return nil, fmt.Errorf("imagegc: agent.image_maximum_gc_age (%s) must not be below agent.image_minimum_gc_age (%s)", o.MaxAge, o.MinAge)
	}
	if o.Period < 0 {
		return nil, fmt.Errorf("imagegc: agent.image_gc_period must be positive, got %s", o.Period)
	}
	if o.Period == 0 {
		o.Period = DefaultPeriod
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.statfs == nil {
		o.statfs = statfs
	}
	return &Manager{o: o, records: map[string]*record{}}, nil
}

// Run collects at once, then every Period, until ctx ends. A failed pass
// is logged; the next one tries again.
func (m *Manager) Run(ctx context.Context) {
	klog.InfoS("Image garbage collection running", "period", m.o.Period, "highThresholdPercent", m.o.HighThresholdPercent,
		"lowThresholdPercent", m.o.LowThresholdPercent, "minAge", m.o.MinAge, "maxAge", m.o.MaxAge)
	t := time.NewTicker(m.o.Period)
	defer t.Stop()
	for {
		if err := m.GarbageCollect(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Image garbage collection failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// GarbageCollect is one pass: unused images past MaxAge go; then, if the
// image filesystem is at or above the high threshold (the kubelet's >=),
// unused images go, least recently used first, until the low threshold is
// reached. It fails when it could not free that much.
func (m *Manager) GarbageCollect(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.o.Clock()
	if err := m.detect(ctx, now); err != nil {
		return err
	}
	var errs []error
	if m.o.MaxAge > 0 {
		_, err := m.freeOld(ctx, now)
		errs = append(errs, err)
	}
	if m.o.HighThresholdPercent < 100 {
		errs = append(errs, m.freeToLow(ctx, now))
	}
	return errors.Join(errs...)
}

// DeleteUnusedImages removes every unused, unpinned image whatever its
// age (the eviction manager's reclaim under disk pressure: unlike the
// kubelet's, it does not spare images younger than MinAge) and returns the
// bytes freed, as the images' sizes tell.
func (m *Manager) DeleteUnusedImages(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.o.Clock()
	if err := m.detect(ctx, now); err != nil {
		return 0, err
	}
	freed, _, err := m.free(ctx, m.evictable(now, 0), math.MaxUint64, "eviction")
	return freed, err
}

// detect refreshes the records from the runtime's images and containers.
func (m *Manager) detect(ctx context.Context, now time.Time) error {
	images, err := m.o.Images.ListImages(ctx, nil)
	if err != nil {
		return fmt.Errorf("imagegc: list images: %w", err)
	}
	// Every container in any state holds its image, as in the kubelet (an
	// exited container may restart, and its layers are its rootfs).
	ctrs, err := m.o.Runtime.ListContainers(ctx, nil)
	if err != nil {
		return fmt.Errorf("imagegc: list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range ctrs {
		for _, ref := range []string{c.ImageRef, c.ImageId, c.GetImage().GetImage()} {
			if ref != "" {
				used[ref] = true
			}
		}
	}
	seen := make(map[string]bool, len(images))
	for _, img := range images {
		id := img.GetId()
		if id == "" {
			continue
		}
		seen[id] = true
		r := m.records[id]
		if r == nil {
			r = &record{firstDetected: now}
			m.records[id] = r
		}
		r.size, r.pinned, r.tags = img.Size, img.Pinned, img.RepoTags
		r.inUse = isUsed(img, used)
		if r.inUse {
			r.lastUsed = now
		}
	}
	for id := range m.records {
		if !seen[id] {
			delete(m.records, id)
		}
	}
	return nil
}

// isUsed tells whether a container refers to img by id, tag or digest: a
// container's image_ref is a repo digest with some runtimes (peapod's),
// the image id with others (containerd's).
func isUsed(img *runtimeapi.Image, used map[string]bool) bool {
	if used[img.Id] {
		return true
	}
	for _, refs := range [][]string{img.RepoDigests, img.RepoTags} {
		for _, r := range refs {
			if used[r] {
				return true
			}
		}
	}
	return false
}

// candidate is a removable image.
type candidate struct {
	id string
	record
}

// evictable are the images that may go, least recently used first (never
// used counts as least; ties: first detected first): not in use, not
// pinned, detected at least minAge ago.
func (m *Manager) evictable(now time.Time, minAge time.Duration) []candidate {
	var out []candidate
	for id, r := range m.records {
		if r.inUse || r.pinned || now.Sub(r.firstDetected) < minAge {
			continue
		}
		out = append(out, candidate{id: id, record: *r})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.lastUsed.Equal(b.lastUsed) {
			return a.lastUsed.Before(b.lastUsed)
		}
		if !a.firstDetected.Equal(b.firstDetected) {
			return a.firstDetected.Before(b.firstDetected)
		}
		return a.id < b.id // a stable order for equal times
	})
	return out
}

// freeOld removes the unused images not used for MaxAge. An image never
// used since it was detected counts from its detection: after a restart
// nothing is old before MaxAge has passed.
func (m *Manager) freeOld(ctx context.Context, now time.Time) (uint64, error) {
	var old []candidate
	for _, c := range m.evictable(now, m.o.MinAge) {
		last := c.lastUsed
		if last.Before(c.firstDetected) {
			last = c.firstDetected
		}
		if now.Sub(last) > m.o.MaxAge {
			old = append(old, c)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	freed, n, err := m.free(ctx, old, math.MaxUint64, "age")
	klog.InfoS("Removed images unused for longer than the maximum age", "maxAge", m.o.MaxAge, "images", n, "freedBytes", freed)
	return freed, err
}

// freeToLow frees the image filesystem down to the low threshold when it
// is at or above the high one.
func (m *Manager) freeToLow(ctx context.Context, now time.Time) error {
	mp, err := m.imageFsMountpoint(ctx)
	if err != nil {
		return err
	}
	fs, err := m.o.statfs(mp)
	if err != nil {
		return fmt.Errorf("imagegc: image filesystem %s: %w", mp, err)
	}
	if fs.Capacity == 0 {
		return fmt.Errorf("imagegc: image filesystem %s: invalid capacity 0", mp)
	}
	avail := min(fs.Available, fs.Capacity)
	used := fs.Capacity - avail
	// Whole percent, rounded up, as the kubelet's 100 - available*100/capacity.
	usagePercent := 100 - int(avail*100/fs.Capacity)
	if usagePercent < m.o.HighThresholdPercent {
		klog.V(4).InfoS("Image filesystem below the high threshold", "mountpoint", mp, "usagePercent", usagePercent, "highThresholdPercent", m.o.HighThresholdPercent)
		return nil
	}
	// used - low% of capacity, in the kubelet's integer arithmetic.
	target := fs.Capacity * uint64(m.o.LowThresholdPercent) / 100
	if used <= target {
		return nil
	}
	want := used - target
	klog.InfoS("Image filesystem over the high threshold: removing unused images", "mountpoint", mp, "usagePercent", usagePercent,
		"highThresholdPercent", m.o.HighThresholdPercent, "lowThresholdPercent", m.o.LowThresholdPercent, "bytesToFree", want)
	freed, n, err := m.free(ctx, m.evictable(now, m.o.MinAge), want, "usage")
	klog.InfoS("Image garbage collection done", "mountpoint", mp, "images", n, "freedBytes", freed, "wantedBytes", want)
	if err != nil {
		return err
	}
	if freed < want {
		return fmt.Errorf("imagegc: failed to garbage collect required amount of images: wanted to free %d bytes, freed %d", want, freed)
	}
	return nil
}

// imageFsMountpoint is the mount point of the runtime's (first) image
// filesystem: the CRI gives only the bytes used, so its capacity comes
// from statfs, as the kubelet gets it from cAdvisor for that mount.
func (m *Manager) imageFsMountpoint(ctx context.Context) (string, error) {
	resp, err := m.o.Images.ImageFsInfo(ctx)
	if err != nil {
		return "", fmt.Errorf("imagegc: image filesystem info: %w", err)
	}
	fss := resp.GetImageFilesystems()
	if len(fss) == 0 {
		return "", errors.New("imagegc: the runtime reports no image filesystem")
	}
	mp := fss[0].GetFsId().GetMountpoint()
	if mp == "" {
		return "", errors.New("imagegc: the runtime's image filesystem has no mount point")
	}
	return mp, nil
}

// free removes images of cands in order until want bytes are freed; it
// goes on past a failed removal. It returns the bytes freed and the number
// of images removed.
func (m *Manager) free(ctx context.Context, cands []candidate, want uint64, reason string) (uint64, int, error) {
	var freed uint64
	var n int
	var errs []error
	for _, c := range cands {
		if freed >= want {
			break
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		lastUsed := "never"
		if !c.lastUsed.IsZero() {
			lastUsed = c.lastUsed.Format(time.RFC3339)
		}
		klog.InfoS("Removing image", "image", c.id, "tags", c.tags, "size", c.size, "lastUsed", lastUsed, "reason", reason)
		if err := m.o.Images.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: c.id}); err != nil {
			errs = append(errs, fmt.Errorf("remove image %s: %w", c.id, err))
			continue
		}
		delete(m.records, c.id)
		freed += c.size
		n++
	}
	if len(errs) > 0 {
		return freed, n, fmt.Errorf("imagegc: freed %d bytes, with errors: %w", freed, errors.Join(errs...))
	}
	return freed, n, nil
}
