package probes

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
)

// freeRuntime answers every exec probe with success at no cost.
type freeRuntime struct{ n atomic.Int64 }

func (f *freeRuntime) ExecSync(context.Context, string, []string, time.Duration) ([]byte, []byte, error) {
	f.n.Add(1)
	return nil, nil, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDoProbe is one probe through the machinery (startup gate check,
// initial delay, prober dispatch, ExecSync call, metrics, decide, result
// cache) without the timer wake-up. One op = one probe.
func BenchmarkDoProbe(b *testing.B) {
	rt := &freeRuntime{}
	m := NewManager(Options{Runtime: rt, Registerer: prometheus.NewRegistry(), unit: time.Hour})
	defer m.Stop()
	pod := testPod("u1", v1.Container{Name: "app", LivenessProbe: execProbe(1, 1, 3)})
	m.AddContainer(pod, &pod.Spec.Containers[0], "c1", "127.0.0.1")
	m.mu.Lock()
	w := m.containers[containerKey{"u1", "app"}].workers[Liveness]
	m.mu.Unlock()
	w.doProbe() // the first result is published
	<-m.Updates()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.doProbe()
	}
}

// BenchmarkManager100 runs 100 containers, each with an exec liveness probe
// every period, through real workers and timers against a runtime that
// costs nothing, and reports the process CPU and allocations per probe of
// the probing machinery. The period is one "second" of 1 ms (100,000 probes
// a second) so the benchmark ends quickly; per-probe cost does not depend
// on the rate. One op = one probe.
func BenchmarkManager100(b *testing.B) {
	rt := &freeRuntime{}
	m := NewManager(Options{Runtime: rt, Registerer: prometheus.NewRegistry(), unit: time.Millisecond})
	go func() {
		for range m.Updates() {
		}
	}()
	for i := range 100 {
		pod := testPod(fmt.Sprint("u", i), v1.Container{Name: "app", LivenessProbe: execProbe(1, 1, 3)})
		m.AddContainer(pod, &pod.Spec.Containers[0], fmt.Sprint("c", i), "127.0.0.1")
	}
	time.Sleep(5 * time.Millisecond) // past the jitter
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, n0, t0 := cpuTime(), rt.n.Load(), time.Now()
	b.ResetTimer()
	for rt.n.Load()-n0 < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu, n, wall := cpuTime()-cpu0, rt.n.Load()-n0, time.Since(t0)
	runtime.ReadMemStats(&ms1)
	m.Stop()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/probe")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "allocs/probe")
	b.ReportMetric(float64(n)/wall.Seconds(), "probes/s")
}
