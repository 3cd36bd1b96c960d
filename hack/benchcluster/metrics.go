package main

import (
	"fmt"
	"io"
	"math"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The kubelet's metrics this bench reads (pkg/kubelet/metrics, v1.37).
const (
	sliMetric    = "kubelet_pod_start_sli_duration_seconds"
	opsMetric    = "kubelet_runtime_operations_total"
	opsDurMetric = "kubelet_runtime_operations_duration_seconds"
	opLabel      = "operation_type"
)

// agentStartMetric is peapod-agent's own pod start histogram (agent/
// metrics.go): from its pod worker's start, once it saw the pod bound, to
// all of the pod's containers running. Not the kubelet's SLI, which starts
// at the pod's creation and ends when a watch shows the containers started.
const agentStartMetric = "peapod_pod_start_duration_seconds"

// histogram is one Prometheus histogram: cumulative bucket counts by upper
// bound (ascending, the last one +Inf), the number of observations and
// their sum.
type histogram struct {
	bounds []float64
	counts []float64 // cumulative, as exposed
	count  float64
	sum    float64
}

// snapshot is what one scrape of the node agent's /metrics holds of
// interest (for peapod-agent, with the CRI calls read from peapod's).
type snapshot struct {
	sli        histogram // the kubelet's pod start SLI
	agentStart histogram // peapod-agent's pod start
	// ops is kubelet_runtime_operations_total by operation_type; opSum and
	// opCount the sum and count of kubelet_runtime_operations_duration_seconds.
	// For peapod-agent, parseRuntimeCRI fills them from peapod's metrics.
	ops     map[string]float64
	opSum   map[string]float64
	opCount map[string]float64
}

// parseMetrics reads the Prometheus text format and keeps the pod start
// histograms (the kubelet's SLI, peapod-agent's own) and the kubelet's CRI
// operation counters. A family that is missing reads as empty (a kubelet
// that started no pod yet exposes no SLI buckets; peapod-agent has none of
// the kubelet's families, the kubelet none of peapod-agent's).
func parseMetrics(r io.Reader) (snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return snapshot{}, fmt.Errorf("parse metrics: %w", err)
	}
	s := snapshot{ops: map[string]float64{}, opSum: map[string]float64{}, opCount: map[string]float64{}}
	if s.sli, err = oneHistogram(fams[sliMetric]); err != nil {
		return s, fmt.Errorf("%s: %w", sliMetric, err)
	}
	if s.agentStart, err = oneHistogram(fams[agentStartMetric]); err != nil {
		return s, fmt.Errorf("%s: %w", agentStartMetric, err)
	}
	if f := fams[opsMetric]; f != nil {
		for _, m := range f.GetMetric() {
			s.ops[label(m, opLabel)] += m.GetCounter().GetValue()
		}
	}
	if f := fams[opsDurMetric]; f != nil {
		for _, m := range f.GetMetric() {
			op := label(m, opLabel)
			s.opSum[op] += m.GetHistogram().GetSampleSum()
			s.opCount[op] += histCount(m.GetHistogram())
		}
	}
	return s, nil
}

// oneHistogram is the histogram of family f, its series added up (the pod
// start histograms have one series, no labels); empty when f is nil.
func oneHistogram(f *dto.MetricFamily) (histogram, error) {
	var sum histogram
	if f == nil {
		return sum, nil
	}
	if f.GetType() != dto.MetricType_HISTOGRAM {
		return sum, fmt.Errorf("type %s, want histogram", f.GetType())
	}
	for _, m := range f.GetMetric() {
		h, err := fromDTO(m.GetHistogram())
		if err != nil {
			return sum, err
		}
		if sum.bounds == nil {
			sum = h
			continue
		}
		if sum, err = sum.plus(h); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func histCount(h *dto.Histogram) float64 {
	if f := h.GetSampleCountFloat(); f != 0 {
		return f
	}
	return float64(h.GetSampleCount())
}

// fromDTO turns the parser's histogram into ours, with the +Inf bucket
// there (its count is the sample count).
func fromDTO(d *dto.Histogram) (histogram, error) {
	h := histogram{count: histCount(d), sum: d.GetSampleSum()}
	for _, b := range d.GetBucket() {
		c := b.GetCumulativeCountFloat()
		if c == 0 {
			c = float64(b.GetCumulativeCount())
		}
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, c)
	}
	if !sort.Float64sAreSorted(h.bounds) {
		return h, fmt.Errorf("bucket bounds not ascending: %v", h.bounds)
	}
	if n := len(h.bounds); n == 0 || !math.IsInf(h.bounds[n-1], 1) {
		h.bounds = append(h.bounds, math.Inf(1))
		h.counts = append(h.counts, h.count)
	}
	return h, nil
}

// minus is the histogram of the observations made between o and h (o
// scraped first): bucket by bucket, which needs the same bounds. A count
// that went down means the process exposing it restarted in between.
func (h histogram) minus(o histogram) (histogram, error) {
	if o.bounds == nil { // nothing observed before h's first pod
		return h, nil
	}
	if h.bounds == nil {
		return histogram{}, fmt.Errorf("histogram gone (restarted?)")
	}
	return h.combine(o, -1)
}

func (h histogram) plus(o histogram) (histogram, error) { return h.combine(o, 1) }

func (h histogram) combine(o histogram, sign float64) (histogram, error) {
	if len(h.bounds) != len(o.bounds) {
		return histogram{}, fmt.Errorf("bucket bounds differ: %v vs %v", h.bounds, o.bounds)
	}
	r := histogram{count: h.count + sign*o.count, sum: h.sum + sign*o.sum}
	for i := range h.bounds {
		if h.bounds[i] != o.bounds[i] {
			return histogram{}, fmt.Errorf("bucket bounds differ: %v vs %v", h.bounds, o.bounds)
		}
		c := h.counts[i] + sign*o.counts[i]
		if c < 0 {
			return histogram{}, fmt.Errorf("bucket le=%g went down (restarted?)", h.bounds[i])
		}
		r.bounds = append(r.bounds, h.bounds[i])
		r.counts = append(r.counts, c)
	}
	if r.count < 0 {
		return histogram{}, fmt.Errorf("sample count went down (restarted?)")
	}
	return r, nil
}

// quantile is PromQL's histogram_quantile(q, h): find the bucket the rank
// q·count falls in and interpolate linearly between its lower and upper
// bound (the lowest bucket's lower bound is 0); a rank in the +Inf bucket
// gives the highest finite bound. NaN when there is no observation.
func (h histogram) quantile(q float64) float64 {
	n := len(h.bounds)
	if n < 2 || !math.IsInf(h.bounds[n-1], 1) || h.counts[n-1] == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	rank := q * h.counts[n-1]
	b := sort.Search(n-1, func(i int) bool { return h.counts[i] >= rank })
	if b == n-1 {
		return h.bounds[n-2]
	}
	if b == 0 && h.bounds[0] <= 0 {
		return h.bounds[0]
	}
	start, end, count := 0.0, h.bounds[b], h.counts[b]
	if b > 0 {
		start = h.bounds[b-1]
		count -= h.counts[b-1]
		rank -= h.counts[b-1]
	}
	return start + (end-start)*(rank/count)
}

// mean is sum/count: exact, unlike the quantiles, which are only as fine as
// the buckets.
func (h histogram) mean() float64 {
	if h.count == 0 {
		return math.NaN()
	}
	return h.sum / h.count
}

// counterDelta is b-a per key, for every key in either (a key only in a is
// a counter that went away: reported as an error).
func counterDelta(a, b map[string]float64) (map[string]float64, error) {
	out := map[string]float64{}
	for k, v := range b {
		d := v - a[k]
		if d < 0 {
			return nil, fmt.Errorf("counter %s went down from %g to %g (restarted?)", k, a[k], v)
		}
		out[k] = d
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return nil, fmt.Errorf("counter %s gone (restarted?)", k)
		}
	}
	return out, nil
}

// delta is what the node agent did between two scrapes.
type delta struct {
	sli, agentStart histogram
	ops             map[string]float64 // CRI calls by operation_type
	// opMean is the mean duration of each operation that ran (seconds).
	opMean map[string]float64
}

// since is the delta from the earlier scrape a to s.
func (s snapshot) since(a snapshot) (delta, error) {
	var d delta
	var err error
	if d.sli, err = s.sli.minus(a.sli); err != nil {
		return d, fmt.Errorf("%s: %w", sliMetric, err)
	}
	if d.agentStart, err = s.agentStart.minus(a.agentStart); err != nil {
		return d, fmt.Errorf("%s: %w", agentStartMetric, err)
	}
	if d.ops, err = counterDelta(a.ops, s.ops); err != nil {
		return d, fmt.Errorf("CRI calls: %w", err)
	}
	sum, err := counterDelta(a.opSum, s.opSum)
	if err != nil {
		return d, fmt.Errorf("CRI call durations: %w", err)
	}
	count, err := counterDelta(a.opCount, s.opCount)
	if err != nil {
		return d, fmt.Errorf("CRI call durations: %w", err)
	}
	d.opMean = map[string]float64{}
	for op, n := range count {
		if n > 0 {
			d.opMean[op] = sum[op] / n
		}
	}
	return d, nil
}
