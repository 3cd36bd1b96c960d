package main

import (
	"errors"
	"testing"
	"time"
)

func TestRenderMissing(t *testing.T) {
	o := options{first: 3, pods: 6, idle: time.Second}
	full := func(key string) *result {
		r := newResult(key)
		r.up, r.wall, r.ready = 1, 2, [2]float64{1, 1}
		h := histogram{bounds: []float64{1, inf}, counts: []float64{3, 3}, count: 3, sum: 1.5}
		for p := range nPhases {
			r.sli[p], r.sliRan[p] = h, true
		}
		r.gone, r.sandboxesStopped, r.sandboxesGone = 1, 1, 1
		r.idle.ran, r.idle.secs = true, 1
		r.ops = map[string]float64{"run_podsandbox": 6}
		r.opMean = map[string]float64{"run_podsandbox": 0.05}
		return r
	}
	noSamples := full("containerd")
	noSamples.sli[phaseAll] = histogram{}
	failed := newResult("containerd-debian")
	failed.err = errors.New("cluster up: boom")
	neverCalled := full("containerd")
	neverCalled.ops["pull_image"] = 0
	for _, tc := range []struct {
		name        string
		rs          []*result
		wantMissing int
	}{
		{"every figure there", []*result{full("peapod"), full("containerd")}, 0},
		{"histogram with no sample: p50, p99, mean", []*result{full("peapod"), noSamples}, 3},
		{"a failed runtime fails by its error, not by n/a", []*result{full("peapod"), failed}, 0},
		{"an operation one runtime never called: a count of 0, its mean optional", []*result{full("peapod"), neverCalled}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, missing := render(o, tc.rs, "0 0 0", "0 0 0")
			if len(missing) != tc.wantMissing {
				t.Errorf("missing %q, want %d\n%s", missing, tc.wantMissing, out)
			}
		})
	}
}
