package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

func ms(s float64) string  { return fmt.Sprintf("%.1f ms", s*1000) }
func sec(s float64) string { return fmt.Sprintf("%.2f s", s) }
func mib(b uint64) string  { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

type row struct {
	label string
	vals  []string
	nums  []float64
}

// perPod is the memory a pod costs beyond its workload: helpers and pause
// (PSS) plus the daemon's growth from idle.
func perPod(r *result) float64 {
	if r.density.pods == 0 {
		return 0
	}
	growth := float64(r.density.daemonLoaded.rss) - float64(r.density.daemonIdle.rss)
	if growth < 0 {
		growth = 0
	}
	return (float64(r.density.helpers.pss+r.density.pauses.pss) + growth) / float64(r.density.pods)
}

func startP50(r *result) float64 {
	var totals []float64
	for i := range r.phases["runp"] {
		totals = append(totals, r.phases["runp"][i]+r.phases["create"][i]+r.phases["start"][i])
	}
	return quantile(totals, 0.5)
}

// critestP50 is NaN (n/a in the table) when critest wrote no sample of op.
func critestP50(r *result, op string) float64 {
	if r.critest == nil || len(r.critest.ops[op]) == 0 {
		return math.NaN()
	}
	return quantile(r.critest.ops[op], 0.5)
}

// critestNotes says, under the table, what the critest rows are and, for a
// runtime where critest failed, why their n/a.
func critestNotes(o options, rs []*result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\ncritest -benchmark rows: critest v1.34.0's own gRPC client, %d sequential samples per benchmark\n", o.critestN)
	for _, r := range rs {
		cr := r.critest
		switch {
		case cr == nil:
			fmt.Fprintf(&b, "  %s: not run\n", r.name)
		case cr.err != nil:
			fmt.Fprintf(&b, "  %s: FAILED after %s: %v\n    log %s\n", r.name, sec(cr.wall), cr.err, cr.log)
		default:
			fmt.Fprintf(&b, "  %s: %s (log %s)\n", r.name, sec(cr.wall), cr.log)
		}
	}
	return b.String()
}

// grpcStart is a quantile of RunPodSandbox+CreateContainer+StartContainer
// over gRPC.
func grpcStart(r *result, q float64) float64 { return quantile(r.grpc["total"], q) }

// render returns the table and the rows with no figure for a runtime whose
// phase ran (a broken phase, which fails the run).
func render(o options, rs []*result, loadBefore, loadAfter string) (string, []string) {
	var rows []row
	var missing []string
	add := func(label string, f func(r *result) float64, format func(float64) string) {
		rw := row{label: label}
		for _, r := range rs {
			v := f(r)
			rw.nums = append(rw.nums, v)
			if math.IsNaN(v) {
				rw.vals = append(rw.vals, "n/a")
				// Only peapod serves /metrics and has an agent.
				// lxcfs: a peapod-only row, and none without /usr/bin/lxcfs.
				if !((strings.HasPrefix(label, "/metrics") || strings.HasPrefix(label, "peapod-agent")) && r.key != "peapod") && !strings.Contains(label, "lxcfs on") {
					missing = append(missing, fmt.Sprintf("%s: %s", r.name, label))
				}
				continue
			}
			rw.vals = append(rw.vals, format(v))
		}
		rows = append(rows, rw)
	}
	add("crictl version (crictl's own cost) p50", func(r *result) float64 { return quantile(r.crictl, 0.5) }, ms)
	for _, p := range phaseOrder {
		p := p
		name := p
		if p == "total" {
			name = "end to end (sum)"
		}
		add(fmt.Sprintf("lifecycle: %s p50", name), func(r *result) float64 { return quantile(r.phases[p], 0.5) }, ms)
		add(fmt.Sprintf("lifecycle: %s p90", name), func(r *result) float64 { return quantile(r.phases[p], 0.9) }, ms)
	}
	add("pod+container start (runp+create+start) p50", startP50, ms)
	for _, p := range grpcOrder[:3] {
		p := p
		add(fmt.Sprintf("gRPC lifecycle: %s p50", p), func(r *result) float64 { return quantile(r.grpc[p], 0.5) }, ms)
	}
	add("pod+container start over gRPC (Run+Create+Start) p50", func(r *result) float64 { return grpcStart(r, 0.5) }, ms)
	add("pod+container start over gRPC (Run+Create+Start) p90", func(r *result) float64 { return grpcStart(r, 0.9) }, ms)
	if o.lxcfs {
		for _, v := range []struct {
			what string
			xs   func(r *result) []float64
		}{{"with lxcfs", func(r *result) []float64 { return r.lxcfsWith }}, {"pod opted out", func(r *result) []float64 { return r.lxcfsWithout }}} {
			for _, q := range []float64{0.5, 0.9} {
				v, q := v, q
				add(fmt.Sprintf("pod+container start over gRPC, lxcfs on, %s (peapod) p%.0f", v.what, q*100), func(r *result) float64 {
					if r.key != "peapod" || len(v.xs(r)) == 0 {
						return math.NaN()
					}
					return quantile(v.xs(r), q)
				}, ms)
			}
		}
	}
	add(fmt.Sprintf("%d pods in parallel: all running", o.parallel), func(r *result) float64 { return r.par }, sec)
	add(fmt.Sprintf("density %d pods (%d at a time): all running", o.density, o.batch), func(r *result) float64 { return r.density.wall }, sec)
	add("density: pod start p50", func(r *result) float64 { return quantile(r.density.starts, 0.5) }, ms)
	add("density: pod start p99", func(r *result) float64 { return quantile(r.density.starts, 0.99) }, ms)
	add("density: remove all (crictl rmp -af)", func(r *result) float64 { return r.density.remove }, sec)
	add("daemon RSS idle (CRI runtime only)", func(r *result) float64 { return float64(r.density.daemonIdle.rss) }, func(v float64) string { return mib(uint64(v)) })
	add("daemon RssAnon idle", func(r *result) float64 { return float64(r.density.daemonIdleSplit.anon) }, func(v float64) string { return mib(uint64(v)) })
	add("daemon RssFile idle", func(r *result) float64 { return float64(r.density.daemonIdleSplit.file) }, func(v float64) string { return mib(uint64(v)) })
	add("RSS idle, default config (peapod: serve + peapod-agent)", func(r *result) float64 { return float64(r.density.idleDefaultRSS.rss) }, func(v float64) string { return mib(uint64(v)) })
	add("daemon RssAnon idle, default config (peapod: serve)", func(r *result) float64 { return float64(r.density.idleDefault.anon) }, func(v float64) string { return mib(uint64(v)) })
	add("peapod-agent RSS idle (its own process)", func(r *result) float64 {
		if r.key != "peapod" {
			return math.NaN()
		}
		return float64(r.density.idleAgent.rss)
	}, func(v float64) string { return mib(uint64(v)) })
	add("daemon RSS with the density pods", func(r *result) float64 { return float64(r.density.daemonLoaded.rss) }, func(v float64) string { return mib(uint64(v)) })
	add("helpers (conmon | shim): count", func(r *result) float64 { return float64(r.density.nHelpers) }, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	add("helpers: RSS sum", func(r *result) float64 { return float64(r.density.helpers.rss) }, func(v float64) string { return mib(uint64(v)) })
	add("helpers: PSS sum", func(r *result) float64 { return float64(r.density.helpers.pss) }, func(v float64) string { return mib(uint64(v)) })
	add("helper RSS each (avg)", func(r *result) float64 {
		if r.density.nHelpers == 0 {
			return 0
		}
		return float64(r.density.helpers.rss) / float64(r.density.nHelpers)
	}, func(v float64) string { return mib(uint64(v)) })
	add("pause processes: count", func(r *result) float64 { return float64(r.density.nPause) }, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	add("pause processes: PSS sum", func(r *result) float64 { return float64(r.density.pauses.pss) }, func(v float64) string { return mib(uint64(v)) })
	add("per-pod overhead (helpers+pause PSS + daemon growth)/pods", perPod, func(v float64) string { return mib(uint64(v)) })
	add("ListContainerStats (gRPC, cold cache), density pods", func(r *result) float64 { return r.density.statsCrictl }, ms)
	add("ListPodSandboxStats (gRPC, cold cache), density pods", func(r *result) float64 { return r.density.statspCrictl }, ms)
	add("/metrics scrape (cold cache), density pods, p50", func(r *result) float64 {
		if r.key != "peapod" {
			return math.NaN()
		}
		return quantile(r.density.scrape, 0.5)
	}, ms)
	add("ExecSync `true` (gRPC) p50", func(r *result) float64 { return quantile(r.execs, 0.5) }, ms)
	add("ExecSync `true` (gRPC) p90", func(r *result) float64 { return quantile(r.execs, 0.9) }, ms)
	if o.clients > 0 {
		cl := func(f func(c *clientsResult) float64) func(r *result) float64 {
			return func(r *result) float64 {
				if r.clients == nil {
					return math.NaN()
				}
				return f(r.clients)
			}
		}
		for _, rpc := range clientCalls {
			for _, q := range []float64{0.5, 0.99} {
				rpc, q := rpc, q
				add(fmt.Sprintf("%d clients, %d pods churning: %s (gRPC) p%.0f", o.clients, o.churn, rpc, q*100), cl(func(c *clientsResult) float64 { return quantile(c.lat[rpc], q) }), ms)
			}
		}
		add(fmt.Sprintf("%d clients: calls answered per second", o.clients), cl(func(c *clientsResult) float64 { return float64(c.calls()) / c.churn }), func(v float64) string { return fmt.Sprintf("%.0f", v) })
		add(fmt.Sprintf("%d clients: failed calls", o.clients), cl(func(c *clientsResult) float64 { return float64(c.errors()) }), func(v float64) string { return fmt.Sprintf("%.0f", v) })
		add(fmt.Sprintf("%d clients: %d pods started then removed", o.clients, o.churn), cl(func(c *clientsResult) float64 { return c.churn }), sec)
	}
	add("image pull busybox (crictl) p50", func(r *result) float64 { return quantile(r.pull, 0.5) }, ms)
	if o.critestN > 0 {
		for _, c := range critestOps {
			op := c.op
			add(fmt.Sprintf("critest -benchmark: %s p50", op), func(r *result) float64 { return critestP50(r, op) }, ms)
		}
	}

	var b strings.Builder
	var names []string
	for _, r := range rs {
		names = append(names, r.name)
	}
	fmt.Fprintf(&b, "\n%s — %s, load avg before %s, after %s\n", strings.Join(names, " vs "), time.Now().UTC().Format(time.RFC3339), loadBefore, loadAfter)
	fmt.Fprintf(&b, "%d sequential lifecycles, %d parallel, %d density pods; durations are whole crictl invocations unless marked gRPC or critest\n\n", o.n, o.parallel, o.density)
	// A ratio column for peapod against each containerd in the run.
	var against []int
	if len(rs) > 0 && rs[0].key == "peapod" {
		for i := 1; i < len(rs); i++ {
			against = append(against, i)
		}
	}
	header := append([]string{"metric"}, names...)
	for _, i := range against {
		header = append(header, "peapod/"+rs[i].name)
	}
	lines := [][]string{header}
	for _, rw := range rows {
		l := append([]string{rw.label}, rw.vals...)
		for _, i := range against {
			if p, c := rw.nums[0], rw.nums[i]; c > 0 && p > 0 {
				l = append(l, fmt.Sprintf("%.2f", p/c))
			} else {
				l = append(l, "-")
			}
		}
		lines = append(lines, l)
	}
	w := make([]int, len(header))
	for _, l := range lines {
		for i, c := range l {
			if len(c) > w[i] {
				w[i] = len(c)
			}
		}
	}
	total := 0
	for _, x := range w {
		total += x + 2
	}
	for i, l := range lines {
		for j, c := range l {
			if j == 0 {
				fmt.Fprintf(&b, "%-*s", w[j]+2, c)
			} else {
				fmt.Fprintf(&b, "%*s  ", w[j], c)
			}
		}
		b.WriteString("\n")
		if i == 0 {
			b.WriteString(strings.Repeat("-", total) + "\n")
		}
	}
	if o.critestN > 0 {
		b.WriteString(critestNotes(o, rs))
	}
	// The targets judge peapod against the current containerd; Debian's
	// 1.6 stays in the table as history.
	var p, c *result
	for _, r := range rs {
		switch r.key {
		case "peapod":
			p = r
		case "containerd":
			c = r
		}
	}
	if p != nil && c != nil {
		fmt.Fprintf(&b, "\ntargets (against %s)\n", c.name)
		target := func(name string, ok bool, detail string) {
			mark := "MET    "
			if !ok {
				mark = "NOT MET"
			}
			fmt.Fprintf(&b, "  %s  %s: %s\n", mark, name, detail)
		}
		ratio := func(a, b float64) float64 {
			if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
				return math.NaN()
			}
			return a / b
		}
		gr := ratio(grpcStart(p, 0.5), grpcStart(c, 0.5))
		target("pod+container start p50 over gRPC (Run+Create+Start) <= 1/2 containerd's", gr <= 0.5, fmt.Sprintf("ratio %.2f", gr))
		sr := ratio(startP50(p), startP50(c))
		target("pod+container start p50 through crictl <= 1/2 containerd's", sr <= 0.5, fmt.Sprintf("ratio %.2f (informational: three crictl processes in it)", sr))
		ir := ratio(float64(p.density.daemonIdle.rss), float64(c.density.daemonIdle.rss))
		target("daemon idle RSS <= 1/2 containerd's (CRI runtime only, as containerd)", ir <= 0.5, fmt.Sprintf("ratio %.2f", ir))
		dr := ratio(float64(p.density.idleDefaultRSS.rss), float64(c.density.idleDefaultRSS.rss))
		target("idle RSS of peapod serve + peapod-agent <= 1/2 containerd's", dr <= 0.5, fmt.Sprintf("ratio %.2f (informational: containerd here has no kubelet beside it; make bench-cluster compares runtime + kubelet)", dr))
		pr := ratio(perPod(p), perPod(c))
		target("per-pod memory overhead <= 1/2 containerd's", pr <= 0.5, fmt.Sprintf("ratio %.2f", pr))
		p99 := quantile(p.density.starts, 0.99)
		target(fmt.Sprintf("%d pods all running, p99 start < 5 s", p.density.pods), p99 < 5, fmt.Sprintf("p99 %s, all running in %s", ms(p99), sec(p.density.wall)))
		// No CRI call slower than containerd's without a measured reason:
		// name every timed call where peapod is slower, and what explains
		// it where the bench measures that too.
		ci := slices.IndexFunc(rs, func(r *result) bool { return r == c })
		var slower, explained []string
		for _, rw := range rows {
			if !strings.Contains(rw.label, "gRPC") && !strings.HasPrefix(rw.label, "critest") && !strings.HasPrefix(rw.label, "image pull") {
				continue
			}
			if rw.nums[0] > rw.nums[ci]*1.1 && !strings.Contains(rw.label, "p90") && !strings.Contains(rw.label, "p99") {
				d := fmt.Sprintf("%s (%.2f)", rw.label, rw.nums[0]/rw.nums[ci])
				if why := slowerReason(rw.label, p, c); why != "" {
					explained = append(explained, d+": "+why)
					continue
				}
				slower = append(slower, d)
			}
		}
		if p.clients != nil {
			worst, worstRPC := 0.0, ""
			for _, rpc := range clientCalls {
				if v := quantile(p.clients.lat[rpc], 0.99); v > worst {
					worst, worstRPC = v, rpc
				}
			}
			var errs []string
			for k, v := range p.clients.errs {
				errs = append(errs, fmt.Sprintf("%s ×%d", k, v))
			}
			sort.Strings(errs)
			detail := fmt.Sprintf("worst p99 %s (%s), %d calls, %d failed", ms(worst), worstRPC, p.clients.calls(), p.clients.errors())
			if len(errs) > 0 {
				detail += ": " + strings.Join(errs, ", ")
			}
			target(fmt.Sprintf("%d clients on List/Status while %d pods start and stop: no error, every p99 < 100 ms", o.clients, o.churn), worst < 0.1 && p.clients.errors() == 0, detail)
		}
		target("no CRI call >10% slower than containerd's without a measured reason", len(slower) == 0, strings.Join(slower, "; "))
		for _, e := range explained {
			fmt.Fprintf(&b, "           slower, measured reason: %s\n", e)
		}
	}
	for _, r := range rs {
		for _, prof := range r.profiles {
			fmt.Fprintf(&b, "profile: %s (go tool pprof -top bin/peapod %s)\n", prof, prof)
		}
	}
	return b.String(), missing
}

// slowerReason explains a call where peapod is slower with figures of the
// same run, or says nothing.
func slowerReason(label string, p, c *result) string {
	switch label {
	case "gRPC lifecycle: CreateContainer p50":
		// peapod runs `runc create` (under conmon) in CreateContainer, as
		// CRI-O does; containerd creates the runc container in
		// StartContainer. What a pod start costs is the sum.
		pc, cc := quantile(p.grpc["CreateContainer"], 0.5), quantile(c.grpc["CreateContainer"], 0.5)
		ps, cs := quantile(p.grpc["StartContainer"], 0.5), quantile(c.grpc["StartContainer"], 0.5)
		if pc+ps < cc+cs {
			return fmt.Sprintf("runc create runs in CreateContainer here, in StartContainer in containerd; Create+Start p50 %s vs %s (%.2f)", ms(pc+ps), ms(cc+cs), (pc+ps)/(cc+cs))
		}
	}
	return ""
}
