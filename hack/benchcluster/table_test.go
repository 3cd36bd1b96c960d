package main

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func setupOf(t *testing.T, key string) setup {
	t.Helper()
	i := slices.IndexFunc(setups, func(s setup) bool { return s.key == key })
	if i < 0 {
		t.Fatalf("no setup %q", key)
	}
	return setups[i]
}

// fullResult is a node whose every phase ran, with the figures its node
// agent can have: the kubelet's SLI and CRI timings, or peapod-agent's pod
// start.
func fullResult(t *testing.T, key string) *result {
	r := newResult(setupOf(t, key))
	r.up, r.wall, r.ready = 1, 2, [2]float64{1, 1}
	h := histogram{bounds: []float64{1, inf}, counts: []float64{3, 3}, count: 3, sum: 1.5}
	for p := range nPhases {
		if r.agent() {
			r.agentStart[p] = h
		} else {
			r.sli[p] = h
		}
		r.sliRan[p] = true
	}
	r.gone, r.sandboxesStopped, r.sandboxesGone = 1, 1, 1
	r.idle.ran, r.idle.secs, r.idle.criCalls = true, 1, 6
	r.idle.cpu = [nGroups]float64{gDaemon: 0.1, gHelpers: 0.2, gPauses: 0.1, gNode: 0.6}
	r.idle.mem = [nGroups]mem{gDaemon: {rss: 40 << 20, pss: 30 << 20}, gNode: {rss: 60 << 20, pss: 50 << 20}}
	r.ops = map[string]float64{"run_podsandbox": 6}
	r.opMean = map[string]float64{}
	if !r.agent() {
		r.opMean["run_podsandbox"] = 0.05
	}
	return r
}

func TestRenderMissing(t *testing.T) {
	o := options{first: 3, pods: 6, idle: time.Second}
	full := func(key string) *result { return fullResult(t, key) }
	noSamples := full("containerd")
	noSamples.sli[phaseAll] = histogram{}
	agentNoSamples := full("peapod-agent")
	agentNoSamples.agentStart[phaseAll] = histogram{}
	failed := newResult(setupOf(t, "containerd-debian"))
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
		{"peapod-agent: the kubelet's SLI and CRI timings n/a by design, not missing", []*result{full("peapod"), full("peapod-agent"), full("containerd")}, 0},
		{"peapod-agent alone", []*result{full("peapod-agent")}, 0},
		{"peapod-agent's own histogram with no sample: p50, p99, mean", []*result{full("peapod"), agentNoSamples}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, missing := render(o, tc.rs, "0 0 0", "0 0 0")
			if len(missing) != tc.wantMissing {
				t.Errorf("missing %q, want %d\n%s", missing, tc.wantMissing, out)
			}
		})
	}
}

// cells is the row of the table whose label starts with label: its cells
// after the label, split on runs of 2+ spaces.
func cells(t *testing.T, out, label string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, label) {
			var cs []string
			for _, c := range strings.Split(strings.TrimPrefix(l, label), "  ") {
				if c = strings.TrimSpace(c); c != "" {
					cs = append(cs, c)
				}
			}
			return cs
		}
	}
	t.Fatalf("no row %q in\n%s", label, out)
	return nil
}

func TestRenderAgentColumn(t *testing.T) {
	o := options{first: 3, pods: 6, idle: time.Second}
	rs := []*result{fullResult(t, "peapod"), fullResult(t, "peapod-agent"), fullResult(t, "containerd")}
	rs[2].name = "containerd-2.4.2"
	// containerd + kubelet: 2 CPU-s, 200 MiB RSS, 100 MiB PSS; the agent half of each.
	rs[2].idle.cpu = [nGroups]float64{gDaemon: 0.4, gHelpers: 0.4, gPauses: 0.2, gNode: 1}
	rs[2].idle.mem = [nGroups]mem{gDaemon: {rss: 80 << 20, pss: 40 << 20}, gNode: {rss: 120 << 20, pss: 60 << 20}}
	out, missing := render(o, rs, "0 0 0", "0 0 0")
	if len(missing) > 0 {
		t.Fatalf("missing %q\n%s", missing, out)
	}
	header := "peapod  peapod-agent  containerd-2.4.2  peapod/containerd-2.4.2  peapod-agent/containerd-2.4.2"
	if !strings.Contains(out, header) {
		t.Errorf("header %q not in\n%s", header, out)
	}
	for _, tc := range []struct {
		label string
		want  []string // peapod, peapod-agent, containerd, the two ratios
	}{
		{"  CPU: total  ", []string{"1.00 s", "1.00 s", "2.00 s", "0.50", "0.50"}},
		{"  CPU: total, % of one core", []string{"100.0 %", "100.0 %", "200.0 %", "0.50", "0.50"}},
		{"  RSS: total", []string{"100.0 MiB", "100.0 MiB", "200.0 MiB", "0.50", "0.50"}},
		{"  PSS: total", []string{"80.0 MiB", "80.0 MiB", "100.0 MiB", "0.80", "0.80"}},
		{"  CPU: node agent (kubelet | peapod-agent)", []string{"0.60 s", "0.60 s", "1.00 s", "0.60", "0.60"}},
		{"  kubelet pod start SLI mean (sum/count, exact), 0→3→6 (all 6 pods)", []string{"0.50 s", "n/a [1]", "0.50 s", "1.00", "-"}},
		{"  peapod-agent pod start mean (sum/count, exact), 0→3→6 (all 6 pods)", []string{"n/a [2]", "0.50 s", "n/a [2]", "-", "-"}},
		{"  CRI calls by the node agent, per minute", []string{"360", "360", "360", "1.00", "1.00"}},
		{"  run_podsandbox  ", []string{"6", "6", "6", "1.00", "1.00"}}, // the count, then the mean duration
	} {
		if got := cells(t, out, tc.label); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.label, got, tc.want)
		}
	}
	// The mean duration section: the kubelet's timing, n/a for the agent.
	sec := out[strings.Index(out, "CRI call mean duration"):]
	if got, want := cells(t, sec, "  run_podsandbox"), []string{"50.0 ms", "n/a [3]", "50.0 ms", "1.00", "-"}; !slices.Equal(got, want) {
		t.Errorf("run_podsandbox mean: %q, want %q", got, want)
	}
	for i, why := range []string{naKubeletSLI, naAgentStart, naCRITiming} {
		if note := "[" + string(rune('1'+i)) + "] " + why; !strings.Contains(out, note) {
			t.Errorf("note %q not under the table", note)
		}
	}
}

func TestRatioColumns(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []string
		want []string
	}{
		{"all four", []string{"peapod", "peapod-agent", "containerd", "containerd-debian"},
			[]string{"peapod/containerd", "peapod/containerd-debian", "peapod-agent/containerd"}},
		{"kubelet nodes only, as before", []string{"peapod", "containerd", "containerd-debian"},
			[]string{"peapod/containerd", "peapod/containerd-debian"}},
		{"peapod-agent against containerd", []string{"peapod-agent", "containerd"}, []string{"peapod-agent/containerd"}},
		{"peapod-agent against containerd 1.6 only: none", []string{"peapod-agent", "containerd-debian"}, nil},
		{"peapod alone", []string{"peapod"}, nil},
		{"order of the run does not matter", []string{"containerd", "peapod"}, []string{"peapod/containerd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := &table{}
			for _, k := range tc.keys {
				tb.rs = append(tb.rs, newResult(setupOf(t, k)))
			}
			var got []string
			for _, nd := range tb.ratioColumns() {
				got = append(got, tb.rs[nd[0]].key+"/"+tb.rs[nd[1]].key)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ratios %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotes(t *testing.T) {
	tb := &table{}
	for _, tc := range []struct{ why, want string }{
		{"a", "[1]"}, {"b", "[2]"}, {"a", "[1]"}, {"c", "[3]"},
	} {
		if got := tb.note(tc.why); got != tc.want {
			t.Errorf("note(%q) = %s, want %s", tc.why, got, tc.want)
		}
	}
	if !slices.Equal(tb.notes, []string{"a", "b", "c"}) {
		t.Errorf("notes %q", tb.notes)
	}
}
