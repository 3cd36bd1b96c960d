package stats

import (
	"testing"
	"time"
)

func TestUsageNanoCores(t *testing.T) {
	for _, tc := range []struct {
		name      string
		prev, cur uint64
		interval  time.Duration
		want      uint64
	}{
		{name: "one core busy", prev: 0, cur: uint64(10 * time.Second), interval: 10 * time.Second, want: 1_000_000_000},
		{name: "quarter core", prev: 5e9, cur: 5e9 + 2.5e9, interval: 10 * time.Second, want: 250_000_000},
		{name: "idle", prev: 7, cur: 7, interval: time.Second, want: 0},
		{name: "two cores over 500ms", prev: 1e9, cur: 2e9, interval: 500 * time.Millisecond, want: 2_000_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := usageNanoCores(tc.prev, tc.cur, int64(tc.interval)); got != tc.want {
				t.Errorf("usageNanoCores = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCPUCacheUpdate(t *testing.T) {
	type sample struct {
		ts    int64 // seconds
		usage uint64
		want  int64 // nanocores, -1 for nil
	}
	for _, tc := range []struct {
		name    string
		samples []sample
	}{{
		name:    "first sample has no rate",
		samples: []sample{{ts: 100, usage: 5e9, want: -1}},
	}, {
		name: "rate over the last interval",
		samples: []sample{
			{ts: 100, usage: 5e9, want: -1},
			{ts: 110, usage: 10e9, want: 500_000_000},
			{ts: 120, usage: 30e9, want: 2_000_000_000},
		},
	}, {
		name: "the same sample again keeps its rate",
		samples: []sample{
			{ts: 100, usage: 0, want: -1},
			{ts: 104, usage: 1e9, want: 250_000_000},
			{ts: 104, usage: 1e9, want: 250_000_000},
			{ts: 108, usage: 1e9, want: 0},
		},
	}, {
		name: "a counter that went down (container restarted) starts over",
		samples: []sample{
			{ts: 100, usage: 50e9, want: -1},
			{ts: 110, usage: 60e9, want: 1_000_000_000},
			{ts: 120, usage: 1e9, want: -1},
			{ts: 130, usage: 6e9, want: 500_000_000},
		},
	}, {
		name: "an older sample than the cached one gives nothing and changes nothing",
		samples: []sample{
			{ts: 100, usage: 0, want: -1},
			{ts: 110, usage: 10e9, want: 1_000_000_000},
			{ts: 105, usage: 10e9, want: -1},
			{ts: 120, usage: 20e9, want: 1_000_000_000},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCPUCache()
			for i, s := range tc.samples {
				got := c.update("k", s.ts*int64(time.Second), s.usage)
				switch {
				case s.want < 0 && got != nil:
					t.Errorf("sample %d: got %d, want nil", i, *got)
				case s.want >= 0 && got == nil:
					t.Errorf("sample %d: got nil, want %d", i, s.want)
				case s.want >= 0 && *got != uint64(s.want):
					t.Errorf("sample %d: got %d, want %d", i, *got, s.want)
				}
			}
		})
	}
}

func TestCPUCacheKeysAndPrune(t *testing.T) {
	c := newCPUCache()
	t0 := time.Unix(1000, 0)
	c.update("a", t0.UnixNano(), 0)
	c.update("b", t0.Add(9*time.Minute).UnixNano(), 0)
	if got := c.update("a", t0.Add(time.Second).UnixNano(), 1e9); got == nil || *got != 1e9 {
		t.Fatalf("a: got %v, want 1e9 (keys must not share samples)", got)
	}
	// a's last sample is 10 min 1 s old at t0+11m; b's is 2 min old.
	c.prune(t0.Add(11*time.Minute + 2*time.Second))
	if _, ok := c.last["a"]; ok {
		t.Error("a not pruned")
	}
	if _, ok := c.last["b"]; !ok {
		t.Error("b pruned")
	}
	// The returned value is a copy: the caller may keep it.
	got := c.update("b", t0.Add(10*time.Minute).UnixNano(), 60e9)
	*got = 7
	if again := c.update("b", t0.Add(10*time.Minute).UnixNano(), 60e9); *again != 1e9 {
		t.Errorf("cached rate changed through a returned pointer: %d", *again)
	}
}
