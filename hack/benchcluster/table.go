package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

func sec(s float64) string { return fmt.Sprintf("%.2f s", s) }
func ms(s float64) string  { return fmt.Sprintf("%.1f ms", s*1000) }
func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }
func num(v float64) string { return fmt.Sprintf("%.0f", v) }
func pct(v float64) string { return fmt.Sprintf("%.1f %%", v) }

type row struct {
	label   string
	section bool // a heading: no values
	vals    []string
	nums    []float64
}

// table collects the rows, the figures missing from a node that ran
// without error (a broken phase, which fails the run) and the notes that
// say why a node cannot have a figure at all.
type table struct {
	rs      []*result
	rows    []row
	missing []string
	notes   []string
}

func (t *table) section(title string) { t.rows = append(t.rows, row{label: title, section: true}) }

// add is a row; NaN is a figure the phase did not produce: "n/a", and
// missing unless optional (a CRI call one runtime never got).
func (t *table) add(label string, optional bool, f func(r *result) float64, format func(float64) string) {
	t.addNA(label, optional, nil, f, format)
}

// addNA is add where na (when not nil) gives, for a node that cannot have
// the figure at all (a kubelet metric, and peapod-agent as node), the
// reason: "n/a [k]", note k under the table, not missing.
func (t *table) addNA(label string, optional bool, na func(r *result) string, f func(r *result) float64, format func(float64) string) {
	rw := row{label: label}
	for _, r := range t.rs {
		if na != nil {
			if why := na(r); why != "" {
				rw.nums = append(rw.nums, math.NaN())
				rw.vals = append(rw.vals, "n/a "+t.note(why))
				continue
			}
		}
		v := f(r)
		rw.nums = append(rw.nums, v)
		switch {
		case math.IsNaN(v) && optional:
			rw.vals = append(rw.vals, "-")
		case math.IsNaN(v):
			rw.vals = append(rw.vals, "n/a")
			if r.err == nil {
				t.missing = append(t.missing, r.name+": "+strings.TrimSpace(label))
			}
		default:
			rw.vals = append(rw.vals, format(v))
		}
	}
	t.rows = append(t.rows, rw)
}

// note is the marker of reason why, numbered in the order first used.
func (t *table) note(why string) string {
	i := slices.Index(t.notes, why)
	if i < 0 {
		t.notes = append(t.notes, why)
		i = len(t.notes) - 1
	}
	return fmt.Sprintf("[%d]", i+1)
}

// Why a node has no figure for a row (notes under the table).
const (
	naKubeletSLI = "kubelet_pod_start_sli_duration_seconds is the kubelet's; peapod-agent has no metric from the same start to the same end: " +
		"its own peapod_pod_start_duration_seconds (the peapod-agent rows) starts at its pod worker, once it saw the pod, not at the pod's creation"
	naAgentStart = "peapod_pod_start_duration_seconds is peapod-agent's own metric; the kubelet has none"
	naCRITiming  = "peapod-agent does not time its CRI calls; peapod times them in its server " +
		"(peapod_cri_request_duration_seconds: no client-side gRPC or transport), which is not the kubelet's figure"
)

// kubeletOnly is the na of a row only a kubelet node has; agentOnly of one
// only peapod-agent has.
func kubeletOnly(why string) func(r *result) string {
	return func(r *result) string {
		if r.agent() {
			return why
		}
		return ""
	}
}

func agentOnly(why string) func(r *result) string {
	return func(r *result) string {
		if !r.agent() {
			return why
		}
		return ""
	}
}

// render returns the table and the figures missing from nodes that ran
// without error.
func render(o options, rs []*result, loadBefore, loadAfter string) (string, []string) {
	t := &table{rs: rs}
	nan := math.NaN()
	phaseNames := [nPhases]string{
		phaseFirst: fmt.Sprintf("0→%d (%d pods)", o.first, o.first),
		phaseRest:  fmt.Sprintf("%d→%d (%d pods)", o.first, o.pods, o.pods-o.first),
		phaseAll:   fmt.Sprintf("0→%d→%d (all %d pods)", o.first, o.pods, o.pods),
	}
	t.add("cluster up (images pushed, control plane, runtime, node Ready)", false, func(r *result) float64 { return r.up }, sec)
	t.add("whole run of this node (up → workload → down)", false, func(r *result) float64 { return r.wall }, sec)

	t.section("pod start")
	for i, n := range []string{phaseNames[phaseFirst], phaseNames[phaseRest]} {
		t.add(fmt.Sprintf("  scale %s: every replica Ready (Deployment status)", strings.Fields(n)[0]), false,
			func(r *result) float64 { return r.ready[i] }, sec)
	}
	// sliRow is a figure f of a pod start histogram h over phase p.
	sliRow := func(label string, h func(r *result) histogram, na func(r *result) string, p int, f func(histogram) float64, format func(float64) string) {
		t.addNA(label, false, na, func(r *result) float64 {
			if !r.sliRan[p] {
				return nan
			}
			return f(h(r))
		}, format)
	}
	kubeletSLI, agentStart := kubeletOnly(naKubeletSLI), agentOnly(naAgentStart)
	for p := range nPhases {
		for _, q := range []float64{0.5, 0.99} {
			sliRow(fmt.Sprintf("  kubelet pod start SLI p%g, %s", q*100, phaseNames[p]), func(r *result) histogram { return r.sli[p] },
				kubeletSLI, p, func(h histogram) float64 { return h.quantile(q) }, sec)
		}
	}
	sliRow("  kubelet pod start SLI mean (sum/count, exact), "+phaseNames[phaseAll], func(r *result) histogram { return r.sli[phaseAll] },
		kubeletSLI, phaseAll, histogram.mean, sec)
	sliRow(fmt.Sprintf("  kubelet pod start SLI samples, %s (want %d)", phaseNames[phaseAll], o.pods), func(r *result) histogram { return r.sli[phaseAll] },
		kubeletSLI, phaseAll, func(h histogram) float64 { return h.count }, num)
	agentAll := func(r *result) histogram { return r.agentStart[phaseAll] }
	for _, q := range []float64{0.5, 0.99} {
		sliRow(fmt.Sprintf("  peapod-agent pod start (worker start → containers running) p%g, %s", q*100, phaseNames[phaseAll]), agentAll,
			agentStart, phaseAll, func(h histogram) float64 { return h.quantile(q) }, sec)
	}
	sliRow("  peapod-agent pod start mean (sum/count, exact), "+phaseNames[phaseAll], agentAll, agentStart, phaseAll, histogram.mean, sec)
	sliRow(fmt.Sprintf("  peapod-agent pod start samples, %s (want %d)", phaseNames[phaseAll], o.pods), agentAll,
		agentStart, phaseAll, func(h histogram) float64 { return h.count }, num)

	t.section("delete the Deployment")
	t.add("  → every sandbox of its pods stopped (CRI ListPodSandbox: none ready)", false, func(r *result) float64 { return r.sandboxesStopped }, sec)
	t.add("  → every pod gone from the API server", false, func(r *result) float64 { return r.gone }, sec)
	t.add("  → every sandbox of those pods removed (the kubelet: at its container GC, every 60 s)", false, func(r *result) float64 { return r.sandboxesGone }, sec)

	t.section(fmt.Sprintf("idle %s with %d pods Ready: CPU over the window, memory at its end", o.idle, o.pods))
	idle := func(f func(r *result) float64) func(r *result) float64 {
		return func(r *result) float64 {
			if !r.idle.ran {
				return nan
			}
			return f(r)
		}
	}
	for g := range nGroups {
		t.add("  CPU: "+groupNames[g], false, idle(func(r *result) float64 { return r.idle.cpu[g] }), sec)
	}
	cpuTotal := func(r *result) float64 {
		s := 0.0
		for _, v := range r.idle.cpu {
			s += v
		}
		return s
	}
	t.add("  CPU: total", false, idle(cpuTotal), sec)
	t.add("  CPU: total, % of one core", false, idle(func(r *result) float64 { return 100 * cpuTotal(r) / r.idle.secs }), pct)
	for _, kind := range []string{"RSS", "PSS"} {
		get := func(m mem) float64 {
			if kind == "RSS" {
				return float64(m.rss)
			}
			return float64(m.pss)
		}
		for g := range nGroups {
			t.add(fmt.Sprintf("  %s: %s", kind, groupNames[g]), false, idle(func(r *result) float64 { return get(r.idle.mem[g]) }), mib)
		}
		t.add(fmt.Sprintf("  %s: total", kind), false, idle(func(r *result) float64 {
			s := 0.0
			for _, m := range r.idle.mem {
				s += get(m)
			}
			return s
		}), mib)
	}
	t.add("  PSS per pod: (helpers + pauses) / pods", false, idle(func(r *result) float64 {
		return float64(r.idle.mem[gHelpers].pss+r.idle.mem[gPauses].pss) / float64(o.pods)
	}), mib)
	t.add("  CRI calls by the node agent, per minute", false, idle(func(r *result) float64 { return r.idle.criCalls / r.idle.secs * 60 }), num)
	t.add("  processes: helpers (conmon | shim)", false, idle(func(r *result) float64 { return float64(r.idle.n[gHelpers]) }), num)
	t.add("  processes: pauses", false, idle(func(r *result) float64 { return float64(r.idle.n[gPauses]) }), num)
	t.add("  processes: the containers' own (not counted above)", false, idle(func(r *result) float64 { return float64(r.idle.workload) }), num)

	ops := map[string]bool{}
	for _, r := range rs {
		for op := range r.ops {
			ops[op] = true
		}
	}
	var names []string
	for op := range ops {
		names = append(names, op)
	}
	sort.Strings(names)
	opsOf := func(f func(r *result) float64) func(r *result) float64 {
		return func(r *result) float64 {
			if r.ops == nil {
				return nan
			}
			return f(r)
		}
	}
	t.section("CRI calls the node agent made, from before the first scale-up until the deleted pods' sandboxes are removed (idle included)")
	for _, op := range names {
		t.add("  "+op, false, opsOf(func(r *result) float64 { return r.ops[op] }), num)
	}
	t.add("  total", false, opsOf(func(r *result) float64 {
		s := 0.0
		for _, v := range r.ops {
			s += v
		}
		return s
	}), num)
	t.section("CRI call mean duration as the kubelet timed it, same window")
	for _, op := range names {
		t.addNA("  "+op, true, kubeletOnly(naCRITiming), opsOf(func(r *result) float64 {
			if v, ok := r.opMean[op]; ok {
				return v
			}
			return nan
		}), ms)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\none node at a time, a column each — %s, load avg before %s, after %s\n",
		time.Now().UTC().Format(time.RFC3339), loadBefore, loadAfter)
	width := 0
	for _, r := range rs {
		width = max(width, len(r.name))
	}
	agent := false
	for _, r := range rs {
		fmt.Fprintf(&b, "  %-*s = %s\n", width, r.name, describe(r))
		agent = agent || r.agent()
	}
	fmt.Fprintf(&b, "Deployment of busybox httpd (readiness httpGet every 1 s), replicas 0→%d→%d, idle %s, deleted\n", o.first, o.pods, o.idle)
	if o.gates != "" {
		fmt.Fprintf(&b, "kubelet feature gates: %s (the kubelet nodes)\n", o.gates)
	}
	fmt.Fprintf(&b, "pod start SLI: kubelet_pod_start_sli_duration_seconds, the histogram's delta over each scale-up (the warm-up pod before it excluded),\n")
	fmt.Fprintf(&b, "  quantiles as PromQL histogram_quantile: linear within the bucket (bounds 0.5 1 2 3 4 5 6 8 10 20 30 … s)\n")
	if agent {
		fmt.Fprintf(&b, "peapod-agent pod start: its peapod_pod_start_duration_seconds, the same way (bounds 0.1 0.25 0.5 1 2 3 … s)\n")
		fmt.Fprintf(&b, "CRI calls of peapod-agent: counted by peapod (%s, by method, named as the kubelet's operation_type),\n", runtimeCRIMetric)
		fmt.Fprintf(&b, "  the agent being its only CRI client then; the bench's own ListPodSandbox polls during the delete subtracted\n")
	}
	fmt.Fprintf(&b, "total = the node: runtime daemon + helpers + pauses + node agent\n\n")
	b.WriteString(t.format())
	for i, n := range t.notes {
		fmt.Fprintf(&b, "[%d] %s\n", i+1, n)
	}
	for _, r := range rs {
		fmt.Fprintf(&b, "\n%s: %s", r.name, sec(r.wall))
		if r.logs != "" {
			fmt.Fprintf(&b, ", logs and raw metrics in %s", r.logs)
		}
		if r.err != nil {
			fmt.Fprintf(&b, "\n  FAILED: %v", r.err)
		}
	}
	b.WriteString("\n")
	return b.String(), t.missing
}

// describe is what a column is: node agent on runtime.
func describe(r *result) string {
	if r.agent() {
		return "peapod-agent on peapod (no kubelet)"
	}
	return "kubelet v1.37.2 on " + r.name
}

// ratios are the ratio columns, by setup key: numerator over denominator,
// each shown when both ran.
var ratios = [][2]string{
	{"peapod", "containerd"},
	{"peapod", "containerd-debian"},
	{"peapod-agent", "containerd"},
}

// ratioColumns is the (numerator, denominator) column index of each ratio
// whose both nodes ran.
func (t *table) ratioColumns() [][2]int {
	index := func(key string) int {
		return slices.IndexFunc(t.rs, func(r *result) bool { return r.key == key })
	}
	var out [][2]int
	for _, rt := range ratios {
		if n, d := index(rt[0]), index(rt[1]); n >= 0 && d >= 0 {
			out = append(out, [2]int{n, d})
		}
	}
	return out
}

// format lays the rows out in columns, with the ratio columns after.
func (t *table) format() string {
	against := t.ratioColumns()
	header := []string{"metric"}
	for _, r := range t.rs {
		header = append(header, r.name)
	}
	for _, nd := range against {
		header = append(header, t.rs[nd[0]].name+"/"+t.rs[nd[1]].name)
	}
	lines := [][]string{header}
	for _, rw := range t.rows {
		if rw.section {
			lines = append(lines, []string{rw.label})
			continue
		}
		l := append([]string{rw.label}, rw.vals...)
		for _, nd := range against {
			if p, c := rw.nums[nd[0]], rw.nums[nd[1]]; c > 0 && p >= 0 && !math.IsNaN(p) {
				l = append(l, fmt.Sprintf("%.2f", p/c))
			} else {
				l = append(l, "-")
			}
		}
		lines = append(lines, l)
	}
	w := make([]int, len(header))
	for _, l := range lines {
		if len(l) == 1 {
			continue // a section heading runs across
		}
		for i, c := range l {
			w[i] = max(w[i], len([]rune(c)))
		}
	}
	total := 0
	for _, x := range w {
		total += x + 2
	}
	var b strings.Builder
	for i, l := range lines {
		for j, c := range l {
			pad := w[j] - len([]rune(c))
			switch {
			case len(l) == 1:
				b.WriteString(c)
			case j == 0:
				b.WriteString(c + strings.Repeat(" ", pad+2))
			default:
				b.WriteString(strings.Repeat(" ", pad) + c + "  ")
			}
		}
		b.WriteString("\n")
		if i == 0 {
			b.WriteString(strings.Repeat("-", total) + "\n")
		}
	}
	return b.String()
}
