package eviction

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Signal names a resource the node can run short of, with the kubelet's
// names (pkg/kubelet/eviction/api/types.go).
type Signal string

const (
	// SignalMemoryAvailable is the node's memory capacity − working set.
	SignalMemoryAvailable Signal = "memory.available"
	// SignalAllocatableMemoryAvailable is the pods cgroup's limit − its
	// working set. It is not configured by hand: ParseThresholds derives it
	// from memory.available when the pods' allocatable is enforced.
	SignalAllocatableMemoryAvailable Signal = "allocatableMemory.available"
	// SignalNodeFsAvailable is the free bytes of the node's filesystem
	// (volumes, logs, and the runtime's data when there is no imagefs).
	SignalNodeFsAvailable Signal = "nodefs.available"
	// SignalNodeFsInodesFree is the free inodes of the node's filesystem.
	SignalNodeFsInodesFree Signal = "nodefs.inodesFree"
	// SignalImageFsAvailable is the free bytes of the runtime's image
	// filesystem (images and writable layers).
	SignalImageFsAvailable Signal = "imagefs.available"
	// SignalImageFsInodesFree is the free inodes of the image filesystem.
	SignalImageFsInodesFree Signal = "imagefs.inodesFree"
	// SignalPIDAvailable is the node's pid limit − the tasks alive.
	SignalPIDAvailable Signal = "pid.available"
)

// configurable are the signals a configuration may name, in the order
// parsed thresholds are returned.
var configurable = []Signal{
	SignalMemoryAvailable,
	SignalNodeFsAvailable,
	SignalNodeFsInodesFree,
	SignalImageFsAvailable,
	SignalImageFsInodesFree,
	SignalPIDAvailable,
}

// The configuration keys named in errors (the TOML keys under [agent]).
const (
	keyHard       = "eviction_hard"
	keySoft       = "eviction_soft"
	keySoftGrace  = "eviction_soft_grace_period"
	keyMinReclaim = "eviction_minimum_reclaim"
)

// Value is an amount of a signal: Quantity when set, else Percentage (a
// fraction in (0, 1]) of the signal's capacity.
type Value struct {
	Quantity   *resource.Quantity
	Percentage float64
}

// amount is v in the signal's unit, for a signal of the given capacity.
func (v Value) amount(capacity int64) int64 {
	if v.Quantity != nil {
		return v.Quantity.Value()
	}
	return int64(float64(capacity) * v.Percentage)
}

func (v Value) String() string {
	if v.Quantity != nil {
		return v.Quantity.String()
	}
	return strconv.FormatFloat(v.Percentage*100, 'f', -1, 64) + "%"
}

// Threshold is one eviction threshold: the signal is met when its available
// amount falls below Value.
type Threshold struct {
	Signal Signal
	Value  Value
	// GracePeriod is how long a soft threshold must be met before pods are
	// evicted for it; 0 makes a hard threshold, acted on at once.
	GracePeriod time.Duration
	// MinReclaim, when set, is how far above Value the signal must come
	// back before the pressure counts as resolved.
	MinReclaim *Value
}

// Hard reports whether t is acted on as soon as it is met.
func (t Threshold) Hard() bool { return t.GracePeriod == 0 }

func (t Threshold) String() string {
	s := string(t.Signal) + "<" + t.Value.String()
	if !t.Hard() {
		s += " for " + t.GracePeriod.String()
	}
	return s
}

// DefaultHard is the kubelet's default evictionHard on Linux.
func DefaultHard() map[string]string {
	return map[string]string{
		string(SignalMemoryAvailable):   "100Mi",
		string(SignalNodeFsAvailable):   "10%",
		string(SignalNodeFsInodesFree):  "5%",
		string(SignalImageFsAvailable):  "15%",
		string(SignalImageFsInodesFree): "5%",
	}
}

// ParseThresholds reads the kubelet's evictionHard, evictionSoft,
// evictionSoftGracePeriod and evictionMinimumReclaim maps (signal → value)
// into thresholds: hard ones first, then soft ones, each in the order of
// the signals above. A value is a quantity ("100Mi", "1000") or a
// percentage of the signal's capacity ("10%"); "0%", "100%" and a zero
// quantity configure no threshold for the signal, as the kubelet's "0%"
// and "100%" do. Every soft threshold needs a grace period and every grace
// period a soft threshold. With enforcePodsAllocatable (enforceNodeAllocatable
// holds "pods"), the hard memory.available threshold is also applied to the
// pods cgroup, as the kubelet's allocatableMemory.available.
func ParseThresholds(hard, soft, softGracePeriod, minimumReclaim map[string]string, enforcePodsAllocatable bool) ([]Threshold, error) {
	hardValues, err := parseValues(keyHard, hard)
	if err != nil {
		return nil, err
	}
	softValues, err := parseValues(keySoft, soft)
	if err != nil {
		return nil, err
	}
	grace := map[Signal]time.Duration{}
	for _, k := range sortedKeys(softGracePeriod) {
		sig, err := signal(keySoftGrace, k)
		if err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(strings.TrimSpace(softGracePeriod[k]))
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", keySoftGrace, k, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("%s: %s: must be positive, got %q", keySoftGrace, k, softGracePeriod[k])
		}
		if _, ok := soft[k]; !ok {
			return nil, fmt.Errorf("%s: %s: a grace period without a soft threshold (%s.%s)", keySoftGrace, k, keySoft, k)
		}
		grace[sig] = d
	}
	// Checked against the raw map: a soft "0%" configures no threshold but
	// still needs its grace period, so a setting stays valid when its value
	// is turned off.
	for _, k := range sortedKeys(soft) {
		if _, ok := softGracePeriod[k]; !ok {
			return nil, fmt.Errorf("%s: %s: a soft threshold needs a grace period (%s.%s)", keySoft, k, keySoftGrace, k)
		}
	}
	reclaim := map[Signal]Value{}
	for _, k := range sortedKeys(minimumReclaim) {
		sig, err := signal(keyMinReclaim, k)
		if err != nil {
			return nil, err
		}
		v, err := parseMinReclaim(minimumReclaim[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", keyMinReclaim, k, err)
		}
		reclaim[sig] = v
	}

	var out []Threshold
	add := func(values map[Signal]Value, soft bool) {
		for _, sig := range configurable {
			v, ok := values[sig]
			if !ok {
				continue
			}
			t := Threshold{Signal: sig, Value: v}
			if soft {
				t.GracePeriod = grace[sig]
			}
			if r, ok := reclaim[sig]; ok {
				t.MinReclaim = &r
			}
			out = append(out, t)
		}
	}
	add(hardValues, false)
	add(softValues, true)
	if enforcePodsAllocatable {
		if v, ok := hardValues[SignalMemoryAvailable]; ok {
			t := Threshold{Signal: SignalAllocatableMemoryAvailable, Value: v}
			if r, ok := reclaim[SignalMemoryAvailable]; ok {
				t.MinReclaim = &r
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// parseValues reads one map of thresholds; signals configured off are left
// out.
func parseValues(key string, m map[string]string) (map[Signal]Value, error) {
	out := map[Signal]Value{}
	for _, k := range sortedKeys(m) {
		sig, err := signal(key, k)
		if err != nil {
			return nil, err
		}
		v, on, err := parseThreshold(m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", key, k, err)
		}
		if on {
			out[sig] = v
		}
	}
	return out, nil
}

func signal(key, name string) (Signal, error) {
	if slices.Contains(configurable, Signal(name)) {
		return Signal(name), nil
	}
	return "", fmt.Errorf("%s: unknown signal %q (want one of %s)", key, name, signalList())
}

func signalList() string {
	s := make([]string, len(configurable))
	for i, sig := range configurable {
		s[i] = string(sig)
	}
	return strings.Join(s, ", ")
}

// parseThreshold reads a threshold value; on is false for a value that
// configures no threshold.
func parseThreshold(s string) (v Value, on bool, err error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "%") {
		p, err := parsePercentage(s)
		if err != nil {
			return Value{}, false, err
		}
		if p == 0 || p == 1 {
			return Value{}, false, nil
		}
		return Value{Percentage: p}, true, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return Value{}, false, fmt.Errorf("%q is neither a quantity nor a percentage: %w", s, err)
	}
	if q.Sign() < 0 {
		return Value{}, false, fmt.Errorf("must not be negative, got %q", s)
	}
	if q.IsZero() {
		return Value{}, false, nil
	}
	return Value{Quantity: &q}, true, nil
}

// parseMinReclaim reads a minimum reclaim: as a threshold, but 0 is a
// valid amount (reclaim nothing beyond the threshold) except as a
// percentage, which the kubelet rejects.
func parseMinReclaim(s string) (Value, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "%") {
		p, err := parsePercentage(s)
		if err != nil {
			return Value{}, err
		}
		if p == 0 {
			return Value{}, fmt.Errorf("a percentage must be positive, got %q", s)
		}
		return Value{Percentage: p}, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return Value{}, fmt.Errorf("%q is neither a quantity nor a percentage: %w", s, err)
	}
	if q.Sign() < 0 {
		return Value{}, fmt.Errorf("must not be negative, got %q", s)
	}
	return Value{Quantity: &q}, nil
}

// parsePercentage reads "N%" as a fraction in [0, 1].
func parsePercentage(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("bad percentage %q", s)
	}
	if f < 0 || f > 100 {
		return 0, fmt.Errorf("a percentage must be within 0%% and 100%%, got %q", s)
	}
	return f / 100, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
