package eviction

import (
	"maps"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func TestObserve(t *testing.T) {
	t1 := t0.Add(-5 * time.Second)
	for _, tc := range []struct {
		name string
		s    *statsapi.Summary
		want Observations
	}{{
		name: "all figures, dedicated imagefs",
		s: nodeFigures{
			memAvail: 3 * gi, memWS: 1 * gi, podsAvail: 2 * gi, podsWS: 512 * mi,
			fsAvail: 40 * gi, fsCap: 100 * gi, inodesFree: 900, inodes: 1000,
			imgAvail: 10 * gi, imgCap: 200 * gi, imgInodesFree: 50, imgInodes: 100,
			maxPID: 4096, procs: 96,
		}.summary(t1),
		want: Observations{
			SignalMemoryAvailable:            {Available: 3 * gi, Capacity: 4 * gi, Time: t1},
			SignalAllocatableMemoryAvailable: {Available: 2 * gi, Capacity: 2*gi + 512*mi, Time: t1},
			SignalNodeFsAvailable:            {Available: 40 * gi, Capacity: 100 * gi, Time: t1},
			SignalNodeFsInodesFree:           {Available: 900, Capacity: 1000, Time: t1},
			SignalImageFsAvailable:           {Available: 10 * gi, Capacity: 200 * gi, Time: t1},
			SignalImageFsInodesFree:          {Available: 50, Capacity: 100, Time: t1},
			SignalPIDAvailable:               {Available: 4000, Capacity: 4096, Time: t1},
		},
	}, {
		name: "no imagefs: imagefs is nodefs; no pods container: no allocatable signal",
		s:    nodeFigures{memAvail: 1, memWS: 2, fsAvail: 5, fsCap: 10, inodesFree: 7, inodes: 8}.summary(t0),
		want: Observations{
			SignalMemoryAvailable:   {Available: 1, Capacity: 3, Time: t0},
			SignalNodeFsAvailable:   {Available: 5, Capacity: 10, Time: t0},
			SignalNodeFsInodesFree:  {Available: 7, Capacity: 8, Time: t0},
			SignalImageFsAvailable:  {Available: 5, Capacity: 10, Time: t0},
			SignalImageFsInodesFree: {Available: 7, Capacity: 8, Time: t0},
		},
	}, {
		name: "figures missing: no observation",
		s: &statsapi.Summary{Node: statsapi.NodeStats{
			Memory: &statsapi.MemoryStats{WorkingSetBytes: u64(1)}, // no availableBytes
			Fs:     &statsapi.FsStats{AvailableBytes: u64(1)},      // no capacity
			Rlimit: &statsapi.RlimitStats{MaxPID: i64(10)},         // no process count
		}},
		want: Observations{},
	}, {
		name: "no summary",
		want: Observations{},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Observe(tc.s)
			if !maps.EqualFunc(got, tc.want, func(a, b Observation) bool {
				return a.Available == b.Available && a.Capacity == b.Capacity && a.Time.Equal(b.Time)
			}) {
				t.Errorf("Observe\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDedicatedImageFs(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    nodeFigures
		want bool
	}{
		{"no imagefs", nodeFigures{fsCap: 100, fsAvail: 1}, false},
		{"imagefs of nodefs's size", nodeFigures{fsCap: 100, fsAvail: 1, inodes: 10, imgCap: 100, imgAvail: 1, imgInodes: 10}, false},
		{"imagefs of another size", nodeFigures{fsCap: 100, fsAvail: 1, inodes: 10, imgCap: 200, imgAvail: 1, imgInodes: 10}, true},
		{"imagefs with other inodes", nodeFigures{fsCap: 100, fsAvail: 1, inodes: 10, imgCap: 100, imgAvail: 1, imgInodes: 20}, true},
	} {
		if got := dedicatedImageFs(tc.n.summary(t0)); got != tc.want {
			t.Errorf("%s: dedicated = %v, want %v", tc.name, got, tc.want)
		}
	}
}
