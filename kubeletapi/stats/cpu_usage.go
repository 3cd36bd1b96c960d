package stats

import (
	"sync"
	"time"
)

// CRI runtimes report cumulative CPU time (usageCoreNanoSeconds) but rarely
// an instantaneous rate, so usageNanoCores is computed here from the last
// sample, per container, pod and the node, as the kubelet's CRI stats
// provider does (cri_stats_provider.go, getAndUpdateContainerUsageNanoCores).
//
// One entry per key, by the samples it has seen:
//
//	(none) --sample--> SAMPLED (no rate yet) --newer sample--> RATED (rate over the last interval)
//	                      ^                                       |  same sample again: same rate
//	                      +------ counter went down (restart) ----+
//	entries whose last sample is older than cpuCacheMaxAge are dropped.
//
// Every caller updates the cache, so the interval is the time between two
// calls that saw different samples (a runtime that caches its figures for a
// second returns the same sample to calls closer than that).

// cpuCacheMaxAge is the kubelet's defaultCachePeriod.
const cpuCacheMaxAge = 10 * time.Minute

type cpuSample struct {
	ts        int64  // unix nanoseconds of the sample
	usage     uint64 // cumulative core-nanoseconds
	nanoCores *uint64
}

type cpuCache struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

func newCPUCache() *cpuCache { return &cpuCache{last: map[string]cpuSample{}} }

// update records the sample (ts, usage) for key and returns the CPU usage
// in nanocores over the interval since the previous different sample, or
// nil when there is none yet.
func (c *cpuCache) update(key string, ts int64, usage uint64) *uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev, ok := c.last[key]
	switch {
	case !ok || usage < prev.usage:
		c.last[key] = cpuSample{ts: ts, usage: usage}
		return nil
	case ts == prev.ts:
		return copyPtr(prev.nanoCores)
	case ts < prev.ts:
		return nil // an older sample than the one cached: no interval to use
	}
	nc := usageNanoCores(prev.usage, usage, ts-prev.ts)
	c.last[key] = cpuSample{ts: ts, usage: usage, nanoCores: &nc}
	return copyPtr(&nc)
}

// usageNanoCores is the rate of a cumulative core-nanosecond counter over an
// interval of intervalNanos: cores busy, in billionths.
func usageNanoCores(prev, cur uint64, intervalNanos int64) uint64 {
	return uint64(float64(cur-prev) / float64(intervalNanos) * float64(time.Second))
}

// prune drops entries whose last sample is older than cpuCacheMaxAge.
func (c *cpuCache) prune(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.last {
		if now.Sub(time.Unix(0, v.ts)) > cpuCacheMaxAge {
			delete(c.last, k)
		}
	}
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
