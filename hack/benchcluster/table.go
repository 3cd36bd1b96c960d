package main

import (
	"fmt"
	"math"
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

// table collects the rows and the figures missing from a runtime that ran
// without error (a broken phase, which fails the run).
type table struct {
	rs      []*result
	rows    []row
	missing []string
}

func (t *table) section(title string) { t.rows = append(t.rows, row{label: title, section: true}) }

// add is a row; NaN is a figure the phase did not produce: "n/a", and
// missing unless optional (a CRI call one runtime never got).
func (t *table) add(label string, optional bool, f func(r *result) float64, format func(float64) string) {
	rw := row{label: label}
	for _, r := range t.rs {
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

// render returns the table and the figures missing from runtimes that ran
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
	t.add("whole run of this runtime (up → workload → down)", false, func(r *result) float64 { return r.wall }, sec)

	t.section("pod start")
	for i, n := range []string{phaseNames[phaseFirst], phaseNames[phaseRest]} {
		t.add(fmt.Sprintf("  scale %s: every replica Ready (Deployment status)", strings.Fields(n)[0]), false,
			func(r *result) float64 { return r.ready[i] }, sec)
	}
	for p := range nPhases {
		for _, q := range []float64{0.5, 0.99} {
			t.add(fmt.Sprintf("  kubelet pod start SLI p%g, %s", q*100, phaseNames[p]), false, func(r *result) float64 {
				if !r.sliRan[p] {
					return nan
				}
				return r.sli[p].quantile(q)
			}, sec)
		}
	}
	t.add("  kubelet pod start SLI mean (sum/count, exact), "+phaseNames[phaseAll], false, func(r *result) float64 {
		if !r.sliRan[phaseAll] {
			return nan
		}
		return r.sli[phaseAll].mean()
	}, sec)
	t.add(fmt.Sprintf("  kubelet pod start SLI samples, %s (want %d)", phaseNames[phaseAll], o.pods), false, func(r *result) float64 {
		if !r.sliRan[phaseAll] {
			return nan
		}
		return r.sli[phaseAll].count
	}, num)

	t.section("delete the Deployment")
	t.add("  → every sandbox of its pods stopped (CRI ListPodSandbox: none ready)", false, func(r *result) float64 { return r.sandboxesStopped }, sec)
	t.add("  → every pod gone from the API server", false, func(r *result) float64 { return r.gone }, sec)
	t.add("  → every sandbox of those pods removed (at the kubelet's container GC, every 60 s)", false, func(r *result) float64 { return r.sandboxesGone }, sec)

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
	t.add("  CRI calls by the kubelet, per minute", false, idle(func(r *result) float64 { return r.idle.criCalls / r.idle.secs * 60 }), num)
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
	t.section("CRI calls the kubelet made, from before the first scale-up until the deleted pods' sandboxes are removed (idle included)")
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
		t.add("  "+op, true, opsOf(func(r *result) float64 {
			if v, ok := r.opMean[op]; ok {
				return v
			}
			return nan
		}), ms)
	}

	var b strings.Builder
	var heads []string
	for _, r := range rs {
		heads = append(heads, r.name)
	}
	fmt.Fprintf(&b, "\nkubelet v1.37.2 on %s — %s, load avg before %s, after %s\n", strings.Join(heads, " vs "),
		time.Now().UTC().Format(time.RFC3339), loadBefore, loadAfter)
	fmt.Fprintf(&b, "Deployment of busybox httpd (readiness httpGet every 1 s), replicas 0→%d→%d, idle %s, deleted; one node at a time\n", o.first, o.pods, o.idle)
	if o.gates != "" {
		fmt.Fprintf(&b, "kubelet feature gates: %s\n", o.gates)
	}
	fmt.Fprintf(&b, "pod start SLI: kubelet_pod_start_sli_duration_seconds, the histogram's delta over each scale-up (the warm-up pod before it excluded),\n")
	fmt.Fprintf(&b, "  quantiles as PromQL histogram_quantile: linear within the bucket (bounds 0.5 1 2 3 4 5 6 8 10 20 30 … s)\n\n")
	b.WriteString(t.format())
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

// format lays the rows out in columns, with peapod's ratio to each other
// runtime when peapod ran first.
func (t *table) format() string {
	var against []int
	if len(t.rs) > 0 && t.rs[0].key == "peapod" {
		for i := 1; i < len(t.rs); i++ {
			against = append(against, i)
		}
	}
	header := []string{"metric"}
	for _, r := range t.rs {
		header = append(header, r.name)
	}
	for _, i := range against {
		header = append(header, "peapod/"+t.rs[i].name)
	}
	lines := [][]string{header}
	for _, rw := range t.rows {
		if rw.section {
			lines = append(lines, []string{rw.label})
			continue
		}
		l := append([]string{rw.label}, rw.vals...)
		for _, i := range against {
			if p, c := rw.nums[0], rw.nums[i]; c > 0 && p >= 0 && !math.IsNaN(p) {
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
