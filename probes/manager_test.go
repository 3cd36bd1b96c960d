package probes

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// testUnit is one probe "second" in tests.
const testUnit = 10 * time.Millisecond

func newTestManager(t *testing.T, rt Runtime, unit time.Duration) (*Manager, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewManager(Options{Runtime: rt, Registerer: reg, unit: unit})
	t.Cleanup(m.Stop)
	return m, reg
}

func execProbe(period, success, failure int32) *v1.Probe {
	return &v1.Probe{
		ProbeHandler:     v1.ProbeHandler{Exec: &v1.ExecAction{Command: []string{"check"}}},
		PeriodSeconds:    period,
		TimeoutSeconds:   1,
		SuccessThreshold: success,
		FailureThreshold: failure,
	}
}

func testPod(uid string, c ...v1.Container) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-" + uid, Namespace: "ns", UID: types.UID(uid)},
		Spec:       v1.PodSpec{Containers: c},
	}
}

// next waits for the next update.
func next(t *testing.T, m *Manager) Update {
	t.Helper()
	select {
	case u := <-m.Updates():
		return u
	case <-time.After(5 * time.Second):
		t.Fatal("no update")
	}
	return Update{}
}

// none asserts that no update arrives for d.
func none(t *testing.T, m *Manager, d time.Duration) {
	t.Helper()
	select {
	case u := <-m.Updates():
		t.Fatalf("unexpected update %+v", u)
	case <-time.After(d):
	}
}

// scripted returns exec results from a per-container script of results
// (S, F); the last entry repeats.
func scripted(script map[string]string) func(context.Context, string, int, time.Duration) ([]byte, []byte, error) {
	return func(_ context.Context, id string, call int, _ time.Duration) ([]byte, []byte, error) {
		s := script[id]
		if s == "" {
			return nil, nil, nil
		}
		c := s[min(call, len(s))-1]
		if c == 'F' {
			return nil, []byte("bad"), exitErr(1)
		}
		return nil, nil, nil
	}
}

func TestDecide(t *testing.T) {
	// Each step: probe result in, expected report/stop out.
	type step struct {
		r            Result
		report, stop bool
	}
	S, F, U := Success, Failure, Unknown
	tests := []struct {
		name       string
		kind       Kind
		succ, fail int32
		steps      []step
	}{
		{"readiness 1/1", Readiness, 1, 1, []step{{S, true, false}, {F, true, false}, {S, true, false}}},
		{"readiness success threshold 2", Readiness, 2, 1, []step{{S, false, false}, {S, true, false}, {S, true, false}, {F, true, false}, {S, false, false}, {F, true, false}}},
		{"readiness failure threshold 3", Readiness, 1, 3, []step{{F, false, false}, {F, false, false}, {S, true, false}, {F, false, false}, {F, false, false}, {F, true, false}}},
		{"unknown neither counts nor resets", Readiness, 1, 2, []step{{F, false, false}, {U, false, false}, {F, true, false}}},
		{"liveness stops on failure", Liveness, 1, 2, []step{{S, true, false}, {F, false, false}, {F, true, true}}},
		{"startup stops on success", Startup, 1, 3, []step{{F, false, false}, {S, true, true}}},
		{"startup stops on failure", Startup, 1, 2, []step{{F, false, false}, {F, true, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := runState{last: Unknown}
			for i, st := range tt.steps {
				var a action
				s, a = decide(tt.kind, s, st.r, tt.succ, tt.fail)
				if a.report != st.report || a.stop != st.stop {
					t.Errorf("step %d (%v): got %+v, want report=%v stop=%v", i, st.r, a, st.report, st.stop)
				}
			}
		})
	}
}

func TestFirstWait(t *testing.T) {
	s := time.Second
	tests := []struct {
		name                      string
		kind                      Kind
		sinceStart, delay, period time.Duration
		r                         float64
		want                      time.Duration
	}{
		{"liveness fresh jittered", Liveness, 0, 0, 10 * s, 0.5, 5 * s},
		{"liveness rest of initial delay plus jitter", Liveness, 2 * s, 5 * s, 10 * s, 0.1, 4 * s},
		{"readiness fresh: no jitter", Readiness, 0, 0, 10 * s, 0.9, 0},
		{"readiness fresh: initial delay only", Readiness, s, 5 * s, 10 * s, 0.9, 4 * s},
		{"startup fresh: no jitter", Startup, 0, 3 * s, 10 * s, 0.9, 3 * s},
		{"readiness of an old container (agent restart): jittered", Readiness, time.Hour, 5 * s, 10 * s, 0.3, 3 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstWait(tt.kind, tt.sinceStart, tt.delay, tt.period, tt.r); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	m, _ := newTestManager(t, &fakeRuntime{fn: func(ctx context.Context, _ string, _ int, _ time.Duration) ([]byte, []byte, error) {
		<-ctx.Done() // never answers within the test
		return nil, nil, ctx.Err()
	}}, time.Second)
	probe := execProbe(100, 1, 1)
	probe.InitialDelaySeconds = 100
	pod := testPod("u1",
		v1.Container{Name: "none"},
		v1.Container{Name: "all", LivenessProbe: probe, ReadinessProbe: probe, StartupProbe: probe})
	for i := range pod.Spec.Containers {
		m.AddContainer(pod, &pod.Spec.Containers[i], "id-"+pod.Spec.Containers[i].Name, "127.0.0.1")
	}
	tests := []struct {
		container string
		kind      Kind
		want      Result
	}{
		{"none", Liveness, Success}, {"none", Readiness, Success}, {"none", Startup, Success},
		{"all", Liveness, Success}, {"all", Readiness, Failure}, {"all", Startup, Unknown},
		{"unknown", Readiness, Unknown},
	}
	for _, tt := range tests {
		if got := m.Result("u1", tt.container, tt.kind); got != tt.want {
			t.Errorf("%s %v: got %v, want %v", tt.container, tt.kind, got, tt.want)
		}
	}
}

func TestThresholdsAndUpdatesOnChange(t *testing.T) {
	// Readiness, success threshold 2, failure threshold 3.
	rt := &fakeRuntime{fn: scripted(map[string]string{"c1": "SSSSFFSFFFFSSSSSSSS"})}
	m, _ := newTestManager(t, rt, testUnit)
	pod := testPod("u1", v1.Container{Name: "app", ReadinessProbe: execProbe(1, 2, 3)})
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")

	want := []struct {
		r     Result
		calls int // the call that established it
	}{{Success, 2}, {Failure, 10}, {Success, 13}}
	for _, w := range want {
		u := next(t, m)
		if u.Result != w.r || u.Kind != Readiness || u.ContainerID != "c1" || u.ContainerName != "app" || u.PodUID != "u1" || u.PodName != "pod-u1" || u.PodNamespace != "ns" {
			t.Fatalf("got %+v, want %v", u, w.r)
		}
		if n := rt.count("c1"); n < w.calls {
			t.Errorf("%v established after %d calls, want %d", w.r, n, w.calls)
		}
		if got := m.Result("u1", "app", Readiness); got != w.r {
			t.Errorf("Result = %v, want %v", got, w.r)
		}
	}
	// Successes keep coming; no more updates.
	none(t, m, 10*testUnit)
	if n := rt.count("c1"); n < 20 {
		t.Errorf("only %d probes ran", n)
	}
}

func TestStartupGatesLivenessAndReadiness(t *testing.T) {
	// One runtime; the probes are told apart by their command.
	var mu sync.Mutex
	calls := map[string]int{}
	firstOther := 0 // startup calls made when liveness/readiness first ran
	rt := runtimeFunc(func(_ context.Context, _ string, cmd []string, _ time.Duration) ([]byte, []byte, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[cmd[0]]++
		if cmd[0] == "startup" {
			if calls["startup"] < 6 {
				return nil, nil, exitErr(1)
			}
			return nil, nil, nil
		}
		if firstOther == 0 {
			firstOther = calls["startup"]
		}
		return nil, nil, nil
	})
	count := func(names ...string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, name := range names {
			n += calls[name]
		}
		return n
	}
	m, _ := newTestManager(t, rt, testUnit)
	probe := func(name string, failure int32) *v1.Probe {
		p := execProbe(1, 1, failure)
		p.Exec.Command = []string{name}
		return p
	}
	pod := testPod("u1", v1.Container{Name: "app", LivenessProbe: probe("liveness", 1), ReadinessProbe: probe("readiness", 1), StartupProbe: probe("startup", 10)})
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")
	if m.Result("u1", "app", Startup) != Unknown || m.Result("u1", "app", Readiness) != Failure {
		t.Errorf("defaults before startup: %v %v", m.Result("u1", "app", Startup), m.Result("u1", "app", Readiness))
	}

	got := map[Kind]Result{}
	for len(got) < 3 {
		u := next(t, m)
		got[u.Kind] = u.Result
		if u.Kind != Startup && got[Startup] != Success {
			t.Fatalf("%v update %v before startup succeeded", u.Kind, u.Result)
		}
	}
	if got[Startup] != Success || got[Liveness] != Success || got[Readiness] != Success {
		t.Errorf("updates %v", got)
	}
	mu.Lock()
	if firstOther < 6 {
		t.Errorf("liveness/readiness probed after %d startup probes, want after the 6th (success)", firstOther)
	}
	mu.Unlock()
	// The startup worker ends after success; the others go on.
	n := count("startup")
	time.Sleep(10 * testUnit)
	if count("startup") != n {
		t.Errorf("startup probe kept running after success")
	}
	if c := count("liveness", "readiness"); c < 10 {
		t.Errorf("liveness/readiness not probing after startup: %d", c)
	}
}

type runtimeFunc func(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, error)

func (f runtimeFunc) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, error) {
	return f(ctx, id, cmd, timeout)
}

func TestLivenessHoldsUntilNewContainerID(t *testing.T) {
	rt := &fakeRuntime{fn: scripted(map[string]string{"c1": "SSF", "c2": "SF"})}
	m, reg := newTestManager(t, rt, testUnit)
	pod := testPod("u1", v1.Container{Name: "app", LivenessProbe: execProbe(1, 1, 1)})
	c := &pod.Spec.Containers[0]
	m.AddContainer(pod, c, "c1", "127.0.0.1")

	if u := next(t, m); u.Result != Success || u.ContainerID != "c1" {
		t.Fatalf("got %+v", u)
	}
	u := next(t, m)
	if u.Result != Failure || u.ContainerID != "c1" || u.Kind != Liveness || u.Message == "" {
		t.Fatalf("got %+v", u)
	}
	if m.Result("u1", "app", Liveness) != Failure {
		t.Errorf("Result not Failure")
	}
	n := rt.count("c1")
	none(t, m, 10*testUnit)
	if rt.count("c1") != n {
		t.Errorf("liveness kept probing after failure: %d → %d", n, rt.count("c1"))
	}
	// Same id again: still on hold.
	m.AddContainer(pod, c, "c1", "127.0.0.1")
	none(t, m, 5*testUnit)

	// The agent restarted the container: new id, result reset, probing resumes.
	m.AddContainer(pod, c, "c2", "127.0.0.1")
	if got := m.Result("u1", "app", Liveness); got != Success {
		t.Errorf("Result after new id = %v, want Success (default)", got)
	}
	if u := next(t, m); u.Result != Success || u.ContainerID != "c2" {
		t.Fatalf("got %+v (first result of the new id is published)", u)
	}
	if u := next(t, m); u.Result != Failure || u.ContainerID != "c2" {
		t.Fatalf("got %+v", u)
	}

	// Metrics: 3 + 2 probes, by result; no pod uid label.
	check := func(result string, want float64) {
		t.Helper()
		var d dto.Metric
		if err := m.metrics.total.WithLabelValues("Liveness", result, "app", "pod-u1", "ns").Write(&d); err != nil {
			t.Fatal(err)
		}
		if got := d.GetCounter().GetValue(); got != want {
			t.Errorf("probe_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	check(resultSuccessful, 3)
	check(resultFailed, 2)
	check(resultUnknown, 0)
	if n := series(t, reg, "peapod_prober_probe_duration_seconds"); n != 1 {
		t.Errorf("%d duration series, want 1 (by probe type only)", n)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "pod_uid" {
					t.Errorf("%s has a pod_uid label", mf.GetName())
				}
			}
		}
	}

	// RemovePod: series gone, workers gone.
	m.RemovePod("u1")
	if n := series(t, reg, "peapod_prober_probe_total"); n != 0 {
		t.Errorf("%d probe_total series after RemovePod", n)
	}
	if got := m.Result("u1", "app", Liveness); got != Unknown {
		t.Errorf("Result after RemovePod = %v", got)
	}
}

func TestStartupFailureHolds(t *testing.T) {
	rt := &fakeRuntime{fn: scripted(map[string]string{"c1": "F"})}
	m, _ := newTestManager(t, rt, testUnit)
	pod := testPod("u1", v1.Container{Name: "app", StartupProbe: execProbe(1, 1, 3), LivenessProbe: execProbe(1, 1, 1)})
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")
	if u := next(t, m); u.Kind != Startup || u.Result != Failure {
		t.Fatalf("got %+v", u)
	}
	n := rt.count("c1")
	if n != 3 {
		t.Errorf("%d probes, want 3 (failure threshold; liveness gated)", n)
	}
	none(t, m, 10*testUnit)
	if rt.count("c1") != n {
		t.Errorf("probing continued after startup failure")
	}
}

func TestRemoveAndStop(t *testing.T) {
	rt := &fakeRuntime{}
	m := NewManager(Options{Runtime: rt, unit: testUnit})
	pod := testPod("u1", v1.Container{Name: "a", ReadinessProbe: execProbe(1, 1, 1)}, v1.Container{Name: "b", ReadinessProbe: execProbe(1, 1, 1)})
	m.AddContainer(pod, &pod.Spec.Containers[0], "ca", "127.0.0.1")
	m.AddContainer(pod, &pod.Spec.Containers[1], "cb", "127.0.0.1")
	next(t, m)
	next(t, m)
	m.RemoveContainer("u1", "a")
	time.Sleep(2 * testUnit)
	na, nb := rt.count("ca"), rt.count("cb")
	time.Sleep(10 * testUnit)
	if rt.count("ca") != na {
		t.Errorf("removed container still probed")
	}
	if rt.count("cb") <= nb {
		t.Errorf("other container stopped being probed")
	}
	m.Stop()
	if _, ok := <-m.Updates(); ok {
		t.Errorf("Updates not closed by Stop")
	}
	m.Stop() // idempotent
	m.AddContainer(pod, &pod.Spec.Containers[0], "ca2", "127.0.0.1")
}

func TestInitialDelay(t *testing.T) {
	rt := &fakeRuntime{}
	m, _ := newTestManager(t, rt, testUnit)
	p := execProbe(1, 1, 1)
	p.InitialDelaySeconds = 20
	pod := testPod("u1", v1.Container{Name: "app", ReadinessProbe: p})
	start := time.Now()
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")
	next(t, m)
	if d := time.Since(start); d < 20*testUnit {
		t.Errorf("first result after %v, before the initial delay %v", d, 20*testUnit)
	}

	// A container that started long ago (agent restart) is not delayed again.
	old := testPod("u2", v1.Container{Name: "app", ReadinessProbe: p})
	old.Status.ContainerStatuses = []v1.ContainerStatus{{Name: "app", ContainerID: "containerd://c2",
		State: v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: metav1.NewTime(time.Now().Add(-time.Hour))}}}}
	start = time.Now()
	m.AddContainer(old, &old.Spec.Containers[0], "c2", "127.0.0.1")
	next(t, m)
	if d := time.Since(start); d > 10*testUnit {
		t.Errorf("first result after %v for an old container", d)
	}
}

func TestJitter(t *testing.T) {
	const n = 100
	rt := &fakeRuntime{}
	// A 1 s period (unit 100 ms × 10): jitter spreads first probes over it.
	m, _ := newTestManager(t, rt, 100*time.Millisecond)
	begin := time.Now()
	for i := range n {
		pod := testPod(fmt.Sprint("u", i), v1.Container{Name: "app", LivenessProbe: execProbe(10, 1, 3)})
		m.AddContainer(pod, &pod.Spec.Containers[0], fmt.Sprint("c", i), "127.0.0.1")
	}
	for range n {
		next(t, m)
	}
	rt.mu.Lock()
	var times []time.Duration
	for _, ts := range rt.first {
		times = append(times, ts.Sub(begin))
	}
	rt.mu.Unlock()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	// The most first-probes in any 10 ms window.
	most := 0
	for i := range times {
		j := i
		for j < len(times) && times[j]-times[i] < 10*time.Millisecond {
			j++
		}
		most = max(most, j-i)
	}
	if most > n/4 {
		t.Errorf("%d of %d first probes within 10 ms (spread %v..%v)", most, n, times[0], times[len(times)-1])
	}
	if spread := times[len(times)-1] - times[0]; spread < 500*time.Millisecond {
		t.Errorf("first probes spread over only %v of a 1 s period", spread)
	}
}

func TestKillGracePeriod(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name     string
		podGrace *int64
		probe    *int64
		kind     Kind
		want     int64
	}{
		{"default", nil, nil, Liveness, 30},
		{"pod", i64(5), nil, Liveness, 5},
		{"probe overrides pod", i64(5), i64(1), Liveness, 1},
		{"startup probe", i64(5), i64(2), Startup, 2},
		{"readiness has none", i64(5), i64(2), Readiness, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &v1.Probe{TerminationGracePeriodSeconds: tt.probe}
			c := &v1.Container{LivenessProbe: p, StartupProbe: p, ReadinessProbe: p}
			pod := &v1.Pod{Spec: v1.PodSpec{TerminationGracePeriodSeconds: tt.podGrace}}
			if got := KillGracePeriod(pod, c, tt.kind); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func series(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

func TestNetworkProbesThroughManager(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port := hostPort(t, srv.Listener.Addr().String())

	m, _ := newTestManager(t, nil, testUnit)
	httpProbe := &v1.Probe{ProbeHandler: v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("web")}}, PeriodSeconds: 1, FailureThreshold: 2}
	tcpProbe := &v1.Probe{ProbeHandler: v1.ProbeHandler{TCPSocket: &v1.TCPSocketAction{Port: intstr.FromString("web")}}, PeriodSeconds: 1}
	pod := testPod("u1", v1.Container{
		Name:           "web",
		Ports:          []v1.ContainerPort{{Name: "web", ContainerPort: int32(port)}},
		ReadinessProbe: httpProbe,
		LivenessProbe:  tcpProbe,
	})
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")
	got := map[Kind]Result{}
	for len(got) < 2 {
		u := next(t, m)
		got[u.Kind] = u.Result
	}
	if got[Readiness] != Success || got[Liveness] != Success {
		t.Fatalf("got %v", got)
	}
	healthy.Store(false)
	u := next(t, m)
	if u.Kind != Readiness || u.Result != Failure || !strings.Contains(u.Message, "503") {
		t.Fatalf("got %+v", u)
	}
	healthy.Store(true)
	if u := next(t, m); u.Kind != Readiness || u.Result != Success {
		t.Fatalf("got %+v", u)
	}
}
