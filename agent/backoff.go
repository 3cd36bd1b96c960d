package agent

import (
	"sync"
	"time"
)

// Container restart back-off, as the kubelet's (client-go flowcontrol.Backoff
// with 10s initial and 5m cap): each restart doubles the delay; an entry
// expires once the container ran longer than twice the cap (10 min) since
// its last restart, so a container that crashed after a long healthy run
// restarts at once. Keys include a hash of the container spec: a changed
// spec starts from scratch.
const (
	backOffInitial = 10 * time.Second
	backOffMax     = 300 * time.Second
)

type backOff struct {
	mu      sync.Mutex
	clock   clock
	initial time.Duration
	max     time.Duration
	entries map[string]*backOffEntry
}

type backOffEntry struct {
	delay      time.Duration
	lastUpdate time.Time
}

func newBackOff(c clock, initial, max time.Duration) *backOff {
	return &backOff{clock: c, initial: initial, max: max, entries: map[string]*backOffEntry{}}
}

func (b *backOff) expired(eventTime time.Time, e *backOffEntry) bool {
	return eventTime.Sub(e.lastUpdate) > 2*b.max
}

// Get tells, for a container that finished at finishedAt, until when its
// restart must wait and the current delay. ok is false when the key has no
// live entry (restart now).
func (b *backOff) Get(key string, finishedAt time.Time) (until time.Time, delay time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	if e == nil || b.expired(finishedAt, e) {
		return time.Time{}, 0, false
	}
	return finishedAt.Add(e.delay), e.delay, true
}

// Next records a restart of key whose previous run finished at eventTime.
func (b *backOff) Next(key string, eventTime time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.entries[key]
	if e == nil || b.expired(eventTime, e) {
		e = &backOffEntry{delay: b.initial}
		b.entries[key] = e
	} else {
		e.delay = min(2*e.delay, b.max)
	}
	e.lastUpdate = b.clock.Now()
}

// Reset forgets key.
func (b *backOff) Reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, key)
}

// GC drops the entries that have expired by now.
func (b *backOff) GC() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	for k, e := range b.entries {
		if b.expired(now, e) {
			delete(b.entries, k)
		}
	}
}
