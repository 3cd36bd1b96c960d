package agent

import (
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBackOffSequence(t *testing.T) {
	c := newFakeClock()
	b := newBackOff(c, backOffInitial, backOffMax)
	const key = "ns_pod_uid_c_hash"

	// First crash: no entry, restart at once.
	if _, _, ok := b.Get(key, c.Now()); ok {
		t.Fatal("first crash is in back-off")
	}
	b.Next(key, c.Now())

	want := []time.Duration{10, 20, 40, 80, 160, 300, 300, 300}
	for i, w := range want {
		w *= time.Second
		c.Step(time.Second) // the container runs 1s then crashes
		finished := c.Now()
		until, delay, ok := b.Get(key, finished)
		if !ok || delay != w || !until.Equal(finished.Add(w)) {
			t.Fatalf("crash %d: until=%v delay=%v ok=%v, want delay %v", i+2, until.Sub(finished), delay, ok, w)
		}
		c.Step(w - time.Millisecond)
		if c.Now().After(until) || c.Now().Equal(until) {
			t.Fatalf("crash %d: back-off ended early", i+2)
		}
		c.Step(time.Millisecond)
		b.Next(key, finished)
	}

	// A run longer than 10 minutes resets the back-off.
	c.Step(10*time.Minute + time.Second)
	if _, _, ok := b.Get(key, c.Now()); ok {
		t.Fatal("still in back-off after a 10 min run")
	}
	b.Next(key, c.Now())
	c.Step(time.Second)
	if _, delay, ok := b.Get(key, c.Now()); !ok || delay != 10*time.Second {
		t.Fatalf("after reset: delay %v ok %v, want 10s", delay, ok)
	}

	// Another key (changed spec hash) is independent.
	if _, _, ok := b.Get(key+"x", c.Now()); ok {
		t.Fatal("new spec hash in back-off")
	}

	c.Step(30 * time.Minute)
	b.GC()
	if len(b.entries) != 0 {
		t.Fatalf("GC left %d entries", len(b.entries))
	}
}
