package eviction

import (
	"strings"
	"testing"
	"time"
)

func TestParseThresholds(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		hard, soft, grace, minReclaim map[string]string
		allocatable                   bool
		// want is the thresholds' String()s, with " min=" and the min
		// reclaim when set.
		want []string
		// err, when set, is a substring of the error.
		err string
	}{{
		name: "the kubelet's defaults",
		hard: DefaultHard(),
		want: []string{"memory.available<100Mi", "nodefs.available<10%", "nodefs.inodesFree<5%", "imagefs.available<15%", "imagefs.inodesFree<5%"},
	}, {
		name:  "soft thresholds with their grace periods, after the hard ones",
		hard:  map[string]string{"memory.available": "200Mi"},
		soft:  map[string]string{"memory.available": "1Gi", "pid.available": "10%"},
		grace: map[string]string{"memory.available": "1m30s", "pid.available": "10s"},
		want:  []string{"memory.available<200Mi", "memory.available<1Gi for 1m30s", "pid.available<10% for 10s"},
	}, {
		name:       "minimum reclaim applies to the signal's hard and soft thresholds",
		hard:       map[string]string{"nodefs.available": "1Gi"},
		soft:       map[string]string{"nodefs.available": "2Gi"},
		grace:      map[string]string{"nodefs.available": "1m"},
		minReclaim: map[string]string{"nodefs.available": "500Mi", "imagefs.available": "2%"},
		want:       []string{"nodefs.available<1Gi min=500Mi", "nodefs.available<2Gi for 1m0s min=500Mi"},
	}, {
		name: "0%, 100% and a zero quantity configure no threshold",
		hard: map[string]string{"memory.available": "0", "nodefs.available": "0%", "imagefs.available": "100%", "pid.available": "12.5%"},
		want: []string{"pid.available<12.5%"},
	}, {
		name:  "a soft threshold turned off keeps its grace period valid",
		soft:  map[string]string{"memory.available": "0%"},
		grace: map[string]string{"memory.available": "30s"},
	}, {
		name:        "enforcing the pods' allocatable derives allocatableMemory.available",
		hard:        map[string]string{"memory.available": "100Mi"},
		minReclaim:  map[string]string{"memory.available": "50Mi"},
		allocatable: true,
		want:        []string{"memory.available<100Mi min=50Mi", "allocatableMemory.available<100Mi min=50Mi"},
	}, {
		name:        "no hard memory threshold, no allocatable one",
		soft:        map[string]string{"memory.available": "1Gi"},
		grace:       map[string]string{"memory.available": "1m"},
		allocatable: true,
		want:        []string{"memory.available<1Gi for 1m0s"},
	}, {
		name: "nothing configured",
	}, {
		name: "unknown hard signal",
		hard: map[string]string{"foo": "1"},
		err:  `eviction_hard: unknown signal "foo"`,
	}, {
		name: "allocatableMemory.available is derived, not configured",
		hard: map[string]string{"allocatableMemory.available": "1Gi"},
		err:  `eviction_hard: unknown signal "allocatableMemory.available"`,
	}, {
		name:  "unknown soft signal",
		soft:  map[string]string{"memory.free": "1Gi"},
		grace: map[string]string{"memory.free": "1m"},
		err:   `eviction_soft: unknown signal "memory.free"`,
	}, {
		name:  "unknown grace period signal",
		grace: map[string]string{"bar": "1m"},
		err:   `eviction_soft_grace_period: unknown signal "bar"`,
	}, {
		name:       "unknown minimum reclaim signal",
		minReclaim: map[string]string{"baz": "1Gi"},
		err:        `eviction_minimum_reclaim: unknown signal "baz"`,
	}, {
		name: "negative quantity",
		hard: map[string]string{"memory.available": "-1Mi"},
		err:  "eviction_hard: memory.available: must not be negative",
	}, {
		name: "over 100%",
		hard: map[string]string{"nodefs.available": "101%"},
		err:  "eviction_hard: nodefs.available: a percentage must be within 0% and 100%",
	}, {
		name:  "negative percentage",
		soft:  map[string]string{"nodefs.available": "-5%"},
		grace: map[string]string{"nodefs.available": "1m"},
		err:   "eviction_soft: nodefs.available: a percentage must be within",
	}, {
		name: "not a quantity",
		hard: map[string]string{"memory.available": "lots"},
		err:  `eviction_hard: memory.available: "lots" is neither a quantity nor a percentage`,
	}, {
		name: "not a percentage",
		hard: map[string]string{"memory.available": "x%"},
		err:  `eviction_hard: memory.available: bad percentage "x%"`,
	}, {
		name: "soft threshold without a grace period",
		soft: map[string]string{"memory.available": "1Gi"},
		err:  "eviction_soft: memory.available: a soft threshold needs a grace period (eviction_soft_grace_period.memory.available)",
	}, {
		name:  "grace period without a soft threshold",
		hard:  map[string]string{"memory.available": "1Gi"},
		grace: map[string]string{"memory.available": "1m"},
		err:   "eviction_soft_grace_period: memory.available: a grace period without a soft threshold",
	}, {
		name:  "bad grace period",
		soft:  map[string]string{"memory.available": "1Gi"},
		grace: map[string]string{"memory.available": "soon"},
		err:   "eviction_soft_grace_period: memory.available: time: invalid duration",
	}, {
		name:  "zero grace period",
		soft:  map[string]string{"memory.available": "1Gi"},
		grace: map[string]string{"memory.available": "0s"},
		err:   "eviction_soft_grace_period: memory.available: must be positive",
	}, {
		name:       "negative minimum reclaim",
		minReclaim: map[string]string{"memory.available": "-1"},
		err:        "eviction_minimum_reclaim: memory.available: must not be negative",
	}, {
		name:       "zero minimum reclaim percentage",
		minReclaim: map[string]string{"memory.available": "0%"},
		err:        "eviction_minimum_reclaim: memory.available: a percentage must be positive",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseThresholds(tc.hard, tc.soft, tc.grace, tc.minReclaim, tc.allocatable)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, th := range got {
				str := th.String()
				if th.MinReclaim != nil {
					str += " min=" + th.MinReclaim.String()
				}
				s = append(s, str)
			}
			if strings.Join(s, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("thresholds\n got %q\nwant %q", s, tc.want)
			}
		})
	}
}

func TestThresholdAmounts(t *testing.T) {
	th, err := ParseThresholds(map[string]string{"memory.available": "100Mi", "nodefs.available": "10%"}, nil, nil,
		map[string]string{"nodefs.available": "5%"}, false)
	if err != nil {
		t.Fatal(err)
	}
	mem, fs := th[0], th[1]
	for _, tc := range []struct {
		name           string
		th             Threshold
		o              Observation
		met, withMinRe bool
	}{
		{"quantity: just below", mem, Observation{Available: 100<<20 - 1, Capacity: 1 << 30}, true, false},
		{"quantity: at the threshold is not met", mem, Observation{Available: 100 << 20, Capacity: 1 << 30}, false, false},
		{"percentage of capacity", fs, Observation{Available: 99, Capacity: 1000}, true, false},
		{"percentage: at 10% not met", fs, Observation{Available: 100, Capacity: 1000}, false, false},
		{"min reclaim raises the bar", fs, Observation{Available: 149, Capacity: 1000}, true, true},
		{"min reclaim satisfied", fs, Observation{Available: 150, Capacity: 1000}, false, true},
	} {
		if got := met(tc.th, tc.o, tc.withMinRe); got != tc.met {
			t.Errorf("%s: met = %v, want %v", tc.name, got, tc.met)
		}
	}
	if !mem.Hard() || (Threshold{GracePeriod: time.Second}).Hard() {
		t.Error("Hard() is GracePeriod == 0")
	}
}
