package imagegc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

const mib = 1 << 20

// testEnv is a runtime whose image filesystem holds other bytes plus the
// sizes of the images present, on a filesystem of capacity bytes.
type testEnv struct {
	t        *testing.T
	is       *critest.FakeImageService
	rec      *recordingImages
	rs       *critest.FakeRuntimeService
	now      time.Time
	capacity uint64
	other    uint64
	m        *Manager
}

type testImage struct {
	id     string
	size   uint64
	pinned bool
	digest string
}

func newTestEnv(t *testing.T, o Options, capacity, other uint64, images ...testImage) *testEnv {
	t.Helper()
	e := &testEnv{
		t: t, is: critest.NewFakeImageService(), rs: critest.NewFakeRuntimeService(),
		now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), capacity: capacity, other: other,
	}
	for _, img := range images {
		e.is.Images[img.id] = &runtimeapi.Image{Id: img.id, Size: img.size, Pinned: img.pinned, RepoTags: []string{img.id + ":latest"}}
		if img.digest != "" {
			e.is.Images[img.id].RepoDigests = []string{img.digest}
		}
	}
	e.is.SetFakeFilesystemUsage([]*runtimeapi.FilesystemUsage{{FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: "/var/lib/peapod/images"}}})
	e.rec = &recordingImages{FakeImageService: e.is}
	o.Images, o.Runtime = e.rec, e.rs
	o.Clock = func() time.Time { return e.now }
	o.statfs = e.statfs
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func (e *testEnv) statfs(path string) (fsSize, error) {
	if path != "/var/lib/peapod/images" {
		return fsSize{}, errors.New("statfs of the wrong path " + path)
	}
	used := e.other
	e.is.Lock()
	for _, img := range e.is.Images {
		used += img.Size
	}
	e.is.Unlock()
	return fsSize{Capacity: e.capacity, Available: e.capacity - min(used, e.capacity)}, nil
}

// use makes containers refer to the given image refs (by image id, as
// containerd's image_ref), replacing the previous ones.
func (e *testEnv) use(refs ...string) {
	var cs []*critest.FakeContainer
	for i, ref := range refs {
		cs = append(cs, &critest.FakeContainer{ContainerStatus: runtimeapi.ContainerStatus{
			Id: "c" + string(rune('0'+i)), State: runtimeapi.ContainerState_CONTAINER_EXITED,
			Image: &runtimeapi.ImageSpec{Image: ref}, ImageRef: ref,
		}})
	}
	e.rs.SetFakeContainers(cs)
}

func (e *testEnv) images() []string {
	e.is.Lock()
	defer e.is.Unlock()
	var out []string
	for id := range e.is.Images {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (e *testEnv) collect() error {
	e.t.Helper()
	return e.m.GarbageCollect(context.Background())
}

func (e *testEnv) step(d time.Duration) { e.now = e.now.Add(d) }

var defaults = Options{HighThresholdPercent: 85, LowThresholdPercent: 80}

func TestNewValidates(t *testing.T) {
	is, rs := critest.NewFakeImageService(), critest.NewFakeRuntimeService()
	for _, tc := range []struct {
		name string
		o    Options
		want string // "" = valid
	}{
		{"kubelet defaults", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, MinAge: 2 * time.Minute}, ""},
		{"high 100 turns usage off, any low", Options{HighThresholdPercent: 100, LowThresholdPercent: 100}, ""},
		{"max age above min age", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, MinAge: time.Minute, MaxAge: time.Hour}, ""},
		{"high above 100", Options{HighThresholdPercent: 101, LowThresholdPercent: 80}, "agent.image_gc_high_threshold_percent"},
		{"negative high", Options{HighThresholdPercent: -1}, "agent.image_gc_high_threshold_percent"},
		{"negative low", Options{HighThresholdPercent: 85, LowThresholdPercent: -1}, "agent.image_gc_low_threshold_percent"},
		{"low equal to high", Options{HighThresholdPercent: 80, LowThresholdPercent: 80}, "must be below agent.image_gc_high_threshold_percent"},
		{"low above high", Options{HighThresholdPercent: 80, LowThresholdPercent: 90}, "must be below"},
		{"zero options", Options{}, "must be below"},
		{"negative min age", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, MinAge: -time.Second}, "agent.image_minimum_gc_age"},
		{"negative max age", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, MaxAge: -time.Second}, "agent.image_maximum_gc_age"},
		{"max age below min age", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, MinAge: time.Hour, MaxAge: time.Minute}, "agent.image_maximum_gc_age (1m0s) must not be below"},
		{"negative period", Options{HighThresholdPercent: 85, LowThresholdPercent: 80, Period: -time.Second}, "agent.image_gc_period"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Images, tc.o.Runtime = is, rs
			m, err := New(tc.o)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want == "":
				if m.o.Period != DefaultPeriod || m.o.Clock == nil {
					t.Errorf("defaults not applied: period %s", m.o.Period)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("New: error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Options{HighThresholdPercent: 85, LowThresholdPercent: 80}); err == nil {
		t.Error("New without Images and Runtime succeeded")
	}
}

func TestUsageThresholds(t *testing.T) {
	imgs := []testImage{{id: "a", size: 10 * mib}, {id: "b", size: 10 * mib}, {id: "c", size: 10 * mib}}
	for _, tc := range []struct {
		name      string
		o         Options
		other     uint64 // besides the 30 MiB of images, on 100 MiB
		wantLeft  []string
		wantError string
	}{
		{"below high: nothing", defaults, 54 * mib, []string{"a", "b", "c"}, ""},
		// 85% used is at the high threshold (the kubelet's >=): free 5 MiB,
		// which takes one image.
		{"at high: down to low", defaults, 55 * mib, []string{"b", "c"}, ""},
		{"far over: two images", defaults, 65 * mib, []string{"c"}, ""},
		{"high 100: usage collection off", Options{HighThresholdPercent: 100, LowThresholdPercent: 10}, 70 * mib, []string{"a", "b", "c"}, ""},
		{"low 0: everything unused", Options{HighThresholdPercent: 50, LowThresholdPercent: 0}, 20 * mib, nil, "failed to garbage collect required amount of images"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.o, 100*mib, tc.other, imgs...)
			err := e.collect()
			if tc.wantError == "" && err != nil {
				t.Fatalf("GarbageCollect: %v", err)
			}
			if tc.wantError != "" && (err == nil || !strings.Contains(err.Error(), tc.wantError)) {
				t.Fatalf("GarbageCollect: error %v, want one containing %q", err, tc.wantError)
			}
			if got := e.images(); !slices.Equal(got, tc.wantLeft) {
				t.Errorf("images left %v, want %v", got, tc.wantLeft)
			}
		})
	}
}

func TestLeastRecentlyUsedFirst(t *testing.T) {
	imgs := []testImage{
		{id: "never", size: 4 * mib}, {id: "old", size: 4 * mib}, {id: "recent", size: 4 * mib},
		{id: "running", size: 4 * mib}, {id: "pinned", size: 4 * mib, pinned: true},
	}
	e := newTestEnv(t, defaults, 100*mib, 0, imgs...)
	// t0: old in use; t1: recent in use; t2: running in use, and stays.
	e.use("old")
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	e.step(time.Minute)
	e.use("recent")
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	e.step(time.Minute)
	e.use("running")
	// Fill the disk: 20 MiB of images + 70 MiB = 90%: free 10 MiB → three
	// images of 4 MiB, least recently used first: never, old, recent.
	e.other = 70 * mib
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.images(), []string{"pinned", "running"}; !slices.Equal(got, want) {
		t.Errorf("images left %v, want %v", got, want)
	}
	if got, want := removedOrder(e), []string{"never", "old", "recent"}; !slices.Equal(got, want) {
		t.Errorf("removal order %v, want %v", got, want)
	}

	// Now only the in-use and the pinned image are left: the shortfall is
	// an error saying how much was wanted and freed.
	e.other = 82 * mib // 90% used
	err := e.collect()
	if err == nil || !strings.Contains(err.Error(), "failed to garbage collect required amount of images: wanted to free 10485760 bytes, freed 0") {
		t.Fatalf("GarbageCollect with nothing removable: %v", err)
	}
	if got, want := e.images(), []string{"pinned", "running"}; !slices.Equal(got, want) {
		t.Errorf("images left %v, want %v", got, want)
	}
}

// removedOrder are the images RemoveImage was asked for, in order: the
// fake keeps only call names, so a wrapper records them.
func removedOrder(e *testEnv) []string {
	e.is.Lock()
	defer e.is.Unlock()
	return slices.Clone(e.rec.removed)
}

type recordingImages struct {
	*critest.FakeImageService
	removed []string
}

func (r *recordingImages) RemoveImage(ctx context.Context, spec *runtimeapi.ImageSpec) error {
	r.Lock()
	r.removed = append(r.removed, spec.Image)
	r.Unlock()
	return r.FakeImageService.RemoveImage(ctx, spec)
}

func TestInUseMatchesDigestsAndTags(t *testing.T) {
	imgs := []testImage{
		{id: "sha256:aaa", size: mib, digest: "reg/a@sha256:111"},
		{id: "sha256:bbb", size: mib},
		{id: "sha256:ccc", size: mib},
	}
	e := newTestEnv(t, Options{HighThresholdPercent: 50, LowThresholdPercent: 0}, 4*mib, 0, imgs...)
	// peapod reports a repo digest as image_ref; a tag may be what the
	// container was created with.
	e.use("reg/a@sha256:111", "sha256:bbb:latest")
	err := e.collect()
	if err == nil {
		t.Fatal("freeing everything in use succeeded")
	}
	if got, want := e.images(), []string{"sha256:aaa", "sha256:bbb"}; !slices.Equal(got, want) {
		t.Errorf("images left %v, want %v", got, want)
	}
}

func TestMinAge(t *testing.T) {
	o := defaults
	o.MinAge = 2 * time.Minute
	e := newTestEnv(t, o, 100*mib, 80*mib, testImage{id: "a", size: 10 * mib})
	if err := e.collect(); err == nil {
		t.Error("no error while the only image is too young")
	}
	if got := e.images(); len(got) != 1 {
		t.Fatalf("an image younger than MinAge was removed: left %v", got)
	}
	e.step(2 * time.Minute)
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	if got := e.images(); len(got) != 0 {
		t.Errorf("an image past MinAge was kept: %v", got)
	}
}

func TestMaxAge(t *testing.T) {
	o := defaults
	o.MaxAge = time.Hour
	// Plenty of room: only the age counts.
	e := newTestEnv(t, o, 100*mib, 0,
		testImage{id: "unused", size: mib}, testImage{id: "used-then-not", size: mib},
		testImage{id: "in-use", size: mib}, testImage{id: "pinned", size: mib, pinned: true})
	e.use("in-use")
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	e.step(30 * time.Minute)
	e.use("used-then-not", "in-use")
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	// 61 minutes after detection: the never used image is old, the one
	// last used 31 minutes ago is not.
	e.step(31 * time.Minute)
	e.use("in-use")
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.images(), []string{"in-use", "pinned", "used-then-not"}; !slices.Equal(got, want) {
		t.Errorf("after 61m: left %v, want %v", got, want)
	}
	e.step(30 * time.Minute)
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	if got, want := e.images(), []string{"in-use", "pinned"}; !slices.Equal(got, want) {
		t.Errorf("after 91m: left %v, want %v", got, want)
	}
}

func TestDeleteUnusedImages(t *testing.T) {
	o := defaults
	o.MinAge = time.Hour // not applied: the eviction manager needs space now
	e := newTestEnv(t, o, 100*mib, 0,
		testImage{id: "a", size: 3 * mib}, testImage{id: "b", size: 5 * mib},
		testImage{id: "in-use", size: mib}, testImage{id: "pinned", size: mib, pinned: true})
	e.use("in-use")
	freed, err := e.m.DeleteUnusedImages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if freed != 8*mib {
		t.Errorf("freed %d, want %d", freed, 8*mib)
	}
	if got, want := e.images(), []string{"in-use", "pinned"}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
}

func TestRemovalErrorsGoOn(t *testing.T) {
	// 60% used: free all 6 MiB; the next pass, at 30%, the rest.
	e := newTestEnv(t, Options{HighThresholdPercent: 20, LowThresholdPercent: 0}, 10*mib, 0,
		testImage{id: "a", size: 3 * mib}, testImage{id: "b", size: 3 * mib})
	e.is.InjectError("RemoveImage", errors.New("image is busy"))
	err := e.collect()
	if err == nil || !strings.Contains(err.Error(), "image is busy") || !strings.Contains(err.Error(), "freed 3145728 bytes") {
		t.Fatalf("GarbageCollect: %v", err)
	}
	if got := e.images(); len(got) != 1 {
		t.Errorf("left %v, want the one whose removal failed", got)
	}
	// The next pass takes it.
	if err := e.collect(); err != nil {
		t.Fatal(err)
	}
	if got := e.images(); len(got) != 0 {
		t.Errorf("left %v", got)
	}
}

func TestImageFsErrors(t *testing.T) {
	e := newTestEnv(t, defaults, 100*mib, 0, testImage{id: "a", size: mib})
	e.is.SetFakeFilesystemUsage(nil)
	if err := e.collect(); err == nil || !strings.Contains(err.Error(), "no image filesystem") {
		t.Errorf("no image filesystem: %v", err)
	}
	e.is.InjectError("ListImages", errors.New("runtime down"))
	if err := e.collect(); err == nil || !strings.Contains(err.Error(), "list images: runtime down") {
		t.Errorf("list images failing: %v", err)
	}
}

func TestRunCollectsAtOnceAndStops(t *testing.T) {
	o := Options{HighThresholdPercent: 50, LowThresholdPercent: 0, Period: 10 * time.Millisecond}
	e := newTestEnv(t, o, 10*mib, 0, testImage{id: "a", size: 8 * mib})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.m.Run(ctx)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(e.images()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not collect")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
