package eviction

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// env is a Manager over fakes: a clock, summaries made from node figures
// and pod figures, recorded kills and reclaims.
type env struct {
	t    *testing.T
	now  time.Time
	node nodeFigures
	pods []*v1.Pod
	figs []podFigures
	// afterReclaim, when set, are the node figures once a reclaimer ran.
	afterReclaim *nodeFigures
	killErr      map[string]error
	killed       []kill
	reclaimed    []string
	summaries    int
	m            *Manager
}

type kill struct {
	pod    string
	status v1.PodStatus
	grace  int64
}

func newEnv(t *testing.T, thresholds []Threshold, opts ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, now: t0, node: defaultNode(), killErr: map[string]error{}}
	o := Options{
		Thresholds: thresholds,
		Summary: func(context.Context) (*statsapi.Summary, error) {
			e.summaries++
			var ps []statsapi.PodStats
			for _, f := range e.figs {
				ps = append(ps, f.stats())
			}
			return e.node.summary(e.now, ps...), nil
		},
		ActivePods: func() []*v1.Pod { return e.pods },
		KillPod: func(_ context.Context, pod *v1.Pod, st v1.PodStatus, g *int64) error {
			if err := e.killErr[pod.Name]; err != nil {
				return err
			}
			e.killed = append(e.killed, kill{pod.Name, st, *g})
			return nil
		},
		ReclaimContainers: e.reclaim("containers"),
		ReclaimImages:     e.reclaim("images"),
		Clock:             func() time.Time { return e.now },
	}
	for _, f := range opts {
		f(&o)
	}
	m, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

func (e *env) reclaim(what string) func(context.Context) error {
	return func(context.Context) error {
		e.reclaimed = append(e.reclaimed, what)
		if e.afterReclaim != nil {
			e.node = *e.afterReclaim
		}
		return nil
	}
}

// sync advances the clock by d and runs one pass; it returns the names
// of the evicted pods.
func (e *env) sync(d time.Duration) []string {
	e.t.Helper()
	e.now = e.now.Add(d)
	return names(e.m.Synchronize(context.Background()))
}

func (e *env) pressure() string {
	mem, disk, pid := e.m.Pressure()
	var out []string
	for _, c := range []struct {
		on   bool
		name string
	}{{mem, "memory"}, {disk, "disk"}, {pid, "pid"}} {
		if c.on {
			out = append(out, c.name)
		}
	}
	return strings.Join(out, ",")
}

func hard(t *testing.T, m map[string]string) []Threshold {
	t.Helper()
	th, err := ParseThresholds(m, nil, nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return th
}

func TestSynchronizeMemoryEvictsOnePod(t *testing.T) {
	e := newEnv(t, hard(t, map[string]string{"memory.available": "100Mi"}))
	e.pods = []*v1.Pod{
		newPod("guaranteed", guaranteed("1", "2Gi")),
		newPod("hog", grace(60)),
		newPod("small"),
	}
	e.figs = []podFigures{usingMemory("guaranteed", 1*gi), usingMemory("hog", 300*mi), usingMemory("small", 10*mi)}

	if got := e.sync(0); len(got) != 0 || e.pressure() != "" {
		t.Fatalf("no pressure: evicted %v, pressure %q", got, e.pressure())
	}

	e.node.memAvail = 50 * mi
	if got := e.sync(10 * time.Second); !slices.Equal(got, []string{"hog"}) {
		t.Fatalf("evicted %v, want [hog] alone", got)
	}
	if e.pressure() != "memory" {
		t.Errorf("pressure %q, want memory", e.pressure())
	}
	if len(e.killed) != 1 {
		t.Fatalf("killed %+v", e.killed)
	}
	k := e.killed[0]
	const msg = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. " +
		"Container c was using 300Mi, request is 0, has larger consumption of memory. "
	if k.grace != 0 {
		t.Errorf("grace period %d, want 0 for a hard threshold", k.grace)
	}
	if k.status.Phase != v1.PodFailed || k.status.Reason != "Evicted" || k.status.Message != msg {
		t.Errorf("status %s/%s %q\nwant message %q", k.status.Phase, k.status.Reason, k.status.Message, msg)
	}
	if len(k.status.Conditions) != 1 {
		t.Fatalf("conditions %+v", k.status.Conditions)
	}
	c := k.status.Conditions[0]
	if c.Type != v1.DisruptionTarget || c.Status != v1.ConditionTrue || c.Reason != v1.PodReasonTerminationByKubelet ||
		c.Message != msg || !c.LastTransitionTime.Time.Equal(e.now) {
		t.Errorf("condition %+v", c)
	}
	if e.reclaimed != nil {
		t.Errorf("memory pressure ran node-level reclaim %v", e.reclaimed)
	}
}

func TestSynchronizeSkipsCriticalAndFailedKills(t *testing.T) {
	e := newEnv(t, hard(t, map[string]string{"memory.available": "100Mi"}))
	e.node.memAvail = 10 * mi
	e.pods = []*v1.Pod{
		newPod("static", annotate("kubernetes.io/config.source", "file")),
		newPod("node-critical", priority(2_000_001_000)),
		newPod("stuck"),
		newPod("next", memRequest("1Mi")),
	}
	e.figs = []podFigures{usingMemory("static", 3*gi), usingMemory("node-critical", 2*gi),
		usingMemory("stuck", 1*gi), usingMemory("next", 500*mi)}
	e.killErr["stuck"] = errors.New("runtime timed out")
	if got := e.sync(0); !slices.Equal(got, []string{"next"}) {
		t.Errorf("evicted %v, want [next]: critical pods are never evicted, a failed kill moves on", got)
	}

	// Only critical pods left: nothing to evict, pressure stays.
	e.pods, e.killed = e.pods[:2], nil
	if got := e.sync(10 * time.Second); len(got) != 0 || len(e.killed) != 0 {
		t.Errorf("evicted %v (killed %v), want none", got, e.killed)
	}
	if e.pressure() != "memory" {
		t.Errorf("pressure %q", e.pressure())
	}
}

func TestSynchronizeDiskReclaimsBeforeEvicting(t *testing.T) {
	withMin := func(t *testing.T) []Threshold {
		th, err := ParseThresholds(map[string]string{"nodefs.available": "10%"}, nil, nil,
			map[string]string{"nodefs.available": "5%"}, false)
		if err != nil {
			t.Fatal(err)
		}
		return th
	}
	for _, tc := range []struct {
		name       string
		node       nodeFigures
		after      uint64 // nodefs available after reclaim, of 100Gi
		opts       func(*Options)
		reclaimed  []string
		evicted    []string
		summaries  int
		wantReason string
	}{{
		name:      "reclaim frees enough: no eviction",
		after:     20 * gi,
		reclaimed: []string{"containers", "images"},
		summaries: 2,
	}, {
		name:      "reclaim frees too little: evict the top disk user",
		after:     9 * gi,
		reclaimed: []string{"containers", "images"},
		evicted:   []string{"writer"},
		summaries: 2,
	}, {
		name:      "above the threshold but short of the minimum reclaim: still evict",
		after:     14 * gi,
		reclaimed: []string{"containers", "images"},
		evicted:   []string{"writer"},
		summaries: 2,
	}, {
		name:      "no reclaimers configured: straight to eviction, no second summary",
		opts:      func(o *Options) { o.ReclaimContainers, o.ReclaimImages = nil, nil },
		evicted:   []string{"writer"},
		summaries: 1,
	}, {
		name:      "images only",
		after:     50 * gi,
		opts:      func(o *Options) { o.ReclaimContainers = nil },
		reclaimed: []string{"images"},
		summaries: 2,
	}, {
		name: "dedicated imagefs: nodefs pressure has nothing to reclaim",
		node: nodeFigures{fsAvail: 5 * gi, fsCap: 100 * gi, inodesFree: 900, inodes: 1000,
			imgAvail: 100 * gi, imgCap: 200 * gi, imgInodesFree: 900, imgInodes: 1000},
		evicted:   []string{"logger"},
		summaries: 1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []func(*Options){}
			if tc.opts != nil {
				opts = append(opts, tc.opts)
			}
			e := newEnv(t, withMin(t), opts...)
			e.node.fsAvail = 5 * gi
			if tc.node.fsCap > 0 {
				e.node = tc.node
			}
			after := e.node
			after.fsAvail = tc.after
			e.afterReclaim = &after
			e.pods = []*v1.Pod{newPod("idle"), newPod("writer"), newPod("logger")}
			e.figs = []podFigures{
				{uid: "idle", containers: []containerFigures{{name: "c"}}},
				{uid: "writer", containers: []containerFigures{{name: "c", rootfs: 3 * gi}}},
				{uid: "logger", containers: []containerFigures{{name: "c", logs: 2 * gi}}},
			}
			got := e.sync(0)
			if !slices.Equal(got, tc.evicted) || !slices.Equal(e.reclaimed, tc.reclaimed) || e.summaries != tc.summaries {
				t.Errorf("evicted %v, reclaimed %v, %d summaries; want %v, %v, %d", got, e.reclaimed, e.summaries,
					tc.evicted, tc.reclaimed, tc.summaries)
			}
			if e.pressure() != "disk" {
				t.Errorf("pressure %q, want disk", e.pressure())
			}
			if len(e.killed) == 1 && tc.node.fsCap == 0 {
				const want = "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi, available: 5Gi. " +
					"Container c was using 3Gi, request is 0, has larger consumption of ephemeral-storage. "
				if e.killed[0].status.Message != want {
					t.Errorf("message %q\nwant %q", e.killed[0].status.Message, want)
				}
			}
		})
	}
}

func TestPressureTransitionPeriod(t *testing.T) {
	e := newEnv(t, hard(t, map[string]string{"pid.available": "1000"}),
		func(o *Options) { o.PressureTransitionPeriod = time.Minute })
	e.node.procs = e.node.maxPID - 10
	e.pods = []*v1.Pod{newPod("forker")}
	e.figs = []podFigures{{uid: "forker", procs: 30000}}
	if got := e.sync(0); !slices.Equal(got, []string{"forker"}) || e.pressure() != "pid" {
		t.Fatalf("evicted %v, pressure %q", got, e.pressure())
	}
	e.node.procs = 100
	e.pods = nil
	for _, step := range []struct {
		d    time.Duration
		want string
	}{
		{10 * time.Second, "pid"},
		{40 * time.Second, "pid"}, // 50s since last met
		{9 * time.Second, "pid"},  // 59s
		{time.Second, ""},         // 60s: cleared
		{time.Hour, ""},
	} {
		e.sync(step.d)
		if got := e.pressure(); got != step.want {
			t.Errorf("%v after the last pressure: %q, want %q", e.now.Sub(t0), got, step.want)
		}
	}
	// Met again: back at once.
	e.node.procs = e.node.maxPID
	e.sync(time.Second)
	if e.pressure() != "pid" {
		t.Errorf("pressure %q, want pid again", e.pressure())
	}
}

func TestSoftThresholdGracePeriod(t *testing.T) {
	th, err := ParseThresholds(map[string]string{"memory.available": "100Mi"}, map[string]string{"memory.available": "1Gi"},
		map[string]string{"memory.available": "1m"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, th, func(o *Options) { o.MaxPodGracePeriod = 20 })
	e.pods = []*v1.Pod{newPod("slow", grace(300)), newPod("quick", grace(5))}
	e.figs = []podFigures{usingMemory("slow", 2*gi), usingMemory("quick", 10*mi)}
	e.node.memAvail = 512 * mi

	for _, d := range []time.Duration{0, 30 * time.Second, 29 * time.Second} {
		if got := e.sync(d); len(got) != 0 {
			t.Fatalf("evicted %v before the grace period", got)
		}
		if e.pressure() != "memory" {
			t.Errorf("pressure %q during the grace period, want memory", e.pressure())
		}
	}
	if got := e.sync(time.Second); !slices.Equal(got, []string{"slow"}) {
		t.Fatalf("evicted %v after 1m, want [slow]", got)
	}
	if e.killed[0].grace != 20 {
		t.Errorf("grace %d, want the pod's 300 capped to 20", e.killed[0].grace)
	}
	if !strings.HasPrefix(e.killed[0].status.Message, "The node was low on resource: memory. Threshold quantity: 1Gi, available: 512Mi. ") {
		t.Errorf("message %q", e.killed[0].status.Message)
	}

	// The pressure eases below the soft threshold: the grace period starts over.
	e.pods = e.pods[1:]
	e.node.memAvail = 2 * gi
	e.sync(time.Second)
	e.node.memAvail = 512 * mi
	if got := e.sync(time.Second); len(got) != 0 {
		t.Errorf("evicted %v at once after the threshold was clear", got)
	}
	if got := e.sync(time.Minute); !slices.Equal(got, []string{"quick"}) || e.killed[1].grace != 5 {
		t.Errorf("evicted %v with grace %v, want [quick] with its own 5s", got, e.killed)
	}
}

func TestSynchronizeNeedsFreshFigures(t *testing.T) {
	th, err := ParseThresholds(map[string]string{"memory.available": "100Mi"}, nil, nil,
		map[string]string{"memory.available": "400Mi"}, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, th)
	frozen := t0
	summary := e.m.o.Summary
	e.m.o.Summary = func(ctx context.Context) (*statsapi.Summary, error) {
		s, err := summary(ctx)
		s.Node.Memory.Time.Time = frozen
		return s, err
	}
	e.pods = []*v1.Pod{newPod("a"), newPod("b")}
	e.figs = []podFigures{usingMemory("a", 2*gi), usingMemory("b", 1*gi)}
	e.node.memAvail = 50 * mi
	if got := e.sync(0); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("evicted %v", got)
	}
	e.pods, e.figs = e.pods[1:], e.figs[1:]
	// The same figures again: nothing new to act on.
	if got := e.sync(10 * time.Second); len(got) != 0 {
		t.Errorf("evicted %v on stale figures", got)
	}
	// Fresh figures above the threshold but short of the minimum reclaim:
	// the threshold is not resolved yet, so b goes too.
	frozen = e.now.Add(10 * time.Second)
	e.node.memAvail = 300 * mi
	if got := e.sync(10 * time.Second); !slices.Equal(got, []string{"b"}) {
		t.Errorf("evicted %v, want [b]: the minimum reclaim is not met", got)
	}
	// Resolved with the minimum reclaim: nothing more.
	frozen = e.now.Add(10 * time.Second)
	e.node.memAvail = 600 * mi
	if got := e.sync(10 * time.Second); len(got) != 0 {
		t.Errorf("evicted %v once resolved", got)
	}
}

func TestSynchronizeMemoryBeforeDisk(t *testing.T) {
	th := hard(t, map[string]string{"nodefs.available": "10Gi", "memory.available": "100Mi"})
	slices.Reverse(th) // disk configured first: memory still goes first
	e := newEnv(t, th, func(o *Options) { o.ReclaimContainers, o.ReclaimImages = nil, nil })
	e.node.memAvail, e.node.fsAvail = 1*mi, 1*gi
	e.pods = []*v1.Pod{newPod("disk"), newPod("mem")}
	e.figs = []podFigures{
		{uid: "disk", containers: []containerFigures{{name: "c", ws: 1, rootfs: 50 * gi}}},
		{uid: "mem", containers: []containerFigures{{name: "c", ws: 3 * gi}}},
	}
	if got := e.sync(0); !slices.Equal(got, []string{"mem"}) || e.pressure() != "memory,disk" {
		t.Errorf("evicted %v, pressure %q; want [mem], memory,disk", got, e.pressure())
	}
}

func TestSynchronizeAllocatable(t *testing.T) {
	th, err := ParseThresholds(map[string]string{"memory.available": "100Mi"}, nil, nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, th)
	e.node.podsAvail, e.node.podsWS = 20*mi, 2*gi // the node has room, the pods cgroup not
	e.pods = []*v1.Pod{newPod("p")}
	e.figs = []podFigures{usingMemory("p", 2*gi)}
	if got := e.sync(0); !slices.Equal(got, []string{"p"}) || e.pressure() != "memory" {
		t.Errorf("evicted %v, pressure %q", got, e.pressure())
	}
}

func TestSynchronizeSummaryError(t *testing.T) {
	e := newEnv(t, hard(t, DefaultHard()))
	e.m.o.Summary = func(context.Context) (*statsapi.Summary, error) { return nil, errors.New("no runtime") }
	if got := e.sync(0); len(got) != 0 {
		t.Errorf("evicted %v", got)
	}
}

func TestAdmit(t *testing.T) {
	const evicted = "Evicted"
	bestEffort := newPod("be")
	tolerant := newPod("be-tolerant", func(p *v1.Pod) {
		p.Spec.Tolerations = []v1.Toleration{{Key: v1.TaintNodeMemoryPressure, Operator: v1.TolerationOpExists, Effect: v1.TaintEffectNoSchedule}}
	})
	burstable := newPod("burstable", memRequest("10Mi"))
	critical := newPod("critical", priority(2_000_000_000))
	for _, tc := range []struct {
		name     string
		node     func(*nodeFigures)
		pod      *v1.Pod
		admit    bool
		wantText string
	}{
		{"no pressure", nil, bestEffort, true, ""},
		{"memory pressure: BestEffort refused", func(n *nodeFigures) { n.memAvail = 1 }, bestEffort, false, "The node had condition: [MemoryPressure]. "},
		{"memory pressure: BestEffort tolerating the taint", func(n *nodeFigures) { n.memAvail = 1 }, tolerant, true, ""},
		{"memory pressure: Burstable admitted", func(n *nodeFigures) { n.memAvail = 1 }, burstable, true, ""},
		{"disk pressure: all refused", func(n *nodeFigures) { n.fsAvail = 1 }, burstable, false, "The node had condition: [DiskPressure]. "},
		{"pid pressure: all refused", func(n *nodeFigures) { n.procs = n.maxPID }, tolerant, false, "The node had condition: [PIDPressure]. "},
		{"memory and disk: Burstable refused", func(n *nodeFigures) { n.memAvail, n.fsAvail = 1, 1 }, burstable, false,
			"The node had condition: [MemoryPressure DiskPressure]. "},
		{"critical pods always admitted", func(n *nodeFigures) { n.memAvail, n.fsAvail, n.procs = 1, 1, n.maxPID }, critical, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := hard(t, map[string]string{"memory.available": "100Mi", "nodefs.available": "10%", "pid.available": "5%"})
			e := newEnv(t, th, func(o *Options) { o.ReclaimContainers, o.ReclaimImages = nil, nil })
			if tc.node != nil {
				tc.node(&e.node)
			}
			e.sync(0)
			admit, reason, msg := e.m.Admit(tc.pod)
			if admit != tc.admit || msg != tc.wantText || (!admit && reason != evicted) || (admit && reason != "") {
				t.Errorf("Admit = %v, %q, %q; want %v, %q", admit, reason, msg, tc.admit, tc.wantText)
			}
		})
	}
}

func TestIsCritical(t *testing.T) {
	for _, tc := range []struct {
		pod  *v1.Pod
		want bool
	}{
		{newPod("plain"), false},
		{newPod("api", annotate("kubernetes.io/config.source", "api")), false},
		{newPod("static", annotate("kubernetes.io/config.source", "file")), true},
		{newPod("mirror", annotate("kubernetes.io/config.mirror", "abc")), true},
		{newPod("cluster-critical", priority(2_000_000_000)), true},
		{newPod("high", priority(1_999_999_999)), false},
	} {
		if got := IsCritical(tc.pod); got != tc.want {
			t.Errorf("IsCritical(%s) = %v, want %v", tc.pod.Name, got, tc.want)
		}
	}
}

func TestIsBestEffort(t *testing.T) {
	for _, tc := range []struct {
		pod  *v1.Pod
		want bool
	}{
		{newPod("nothing"), true},
		{newPod("zero", memRequest("0")), true},
		{newPod("request", memRequest("1Mi")), false},
		{newPod("limit", requests(nil, v1.ResourceList{v1.ResourceCPU: resource.MustParse("100m")})), false},
		{newPod("storage only", requests(v1.ResourceList{v1.ResourceEphemeralStorage: resource.MustParse("1Gi")}, nil)), true},
		{newPod("status says", func(p *v1.Pod) { p.Status.QOSClass = v1.PodQOSBurstable }), false},
	} {
		if got := isBestEffort(tc.pod); got != tc.want {
			t.Errorf("isBestEffort(%s) = %v, want %v", tc.pod.Name, got, tc.want)
		}
	}
}

func TestNew(t *testing.T) {
	ok := Options{
		Summary:    func(context.Context) (*statsapi.Summary, error) { return nil, nil },
		ActivePods: func() []*v1.Pod { return nil },
		KillPod:    func(context.Context, *v1.Pod, v1.PodStatus, *int64) error { return nil },
	}
	m, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if m.o.PressureTransitionPeriod != 5*time.Minute || m.o.MonitoringPeriod != 10*time.Second || m.o.Clock == nil {
		t.Errorf("defaults %+v", m.o)
	}
	for name, o := range map[string]Options{
		"no summary":      {ActivePods: ok.ActivePods, KillPod: ok.KillPod},
		"no kill":         {Summary: ok.Summary, ActivePods: ok.ActivePods},
		"negative period": {Summary: ok.Summary, ActivePods: ok.ActivePods, KillPod: ok.KillPod, MonitoringPeriod: -1},
		"unknown signal":  {Summary: ok.Summary, ActivePods: ok.ActivePods, KillPod: ok.KillPod, Thresholds: []Threshold{{Signal: "swap.available"}}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestRunStopsWithContext(t *testing.T) {
	e := newEnv(t, hard(t, DefaultHard()), func(o *Options) { o.MonitoringPeriod = time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.m.Run(ctx)
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}
