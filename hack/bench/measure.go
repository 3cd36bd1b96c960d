package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const image = "docker.io/library/busybox:latest"

// result holds one runtime's figures; durations in seconds, memory in bytes.
type result struct {
	name    string    // as the table heads its column: peapod, containerd-2.4.2
	key     string    // as -only names it: peapod, containerd, containerd-debian
	crictl  []float64 // `crictl version`: the fixed cost of one crictl call
	phases  map[string][]float64
	grpc    map[string][]float64 // gRPC lifecycles, by grpcOrder
	pull    []float64
	execs   []float64
	par     float64 // 10 pods in parallel: wall time to all running
	density struct {
		pods            int
		wall, remove    float64
		starts          []float64
		daemonIdle      mem
		daemonIdleSplit rssSplit
		// peapod's idle memory with its default config (agent on); for
		// containerd, which has no agent, its idle memory again.
		idleDefault      rssSplit
		idleDefaultRSS   mem
		idleAgent        mem // peapod-agent alone (0: no agent)
		daemonLoaded     mem
		helpers, pauses  mem
		nHelpers, nPause int
		statsCrictl      float64
		statspCrictl     float64
		scrape           []float64 // peapod /metrics
	}
	profiles []string
	clients  *clientsResult // nil when the phase is off
	critest  *critestResult // nil when the phase is off
	// lxcfsWith, lxcfsWithout: peapod only, gRPC start totals on a
	// daemon with containers.lxcfs = "on", of pods with lxcfs and of pods
	// that opt out, interleaved (lxcfs.go).
	lxcfsWith, lxcfsWithout []float64
}

var phaseOrder = []string{"runp", "create", "start", "stopp", "rmp", "total"}

func measure(ctx context.Context, o options, rt *runtime) (*result, error) {
	r := &result{name: rt.name, phases: map[string][]float64{}}
	c := rt.crictl
	time.Sleep(2 * time.Second)
	r.density.daemonIdle = memOf(rt.cmd.Process.Pid)
	r.density.daemonIdleSplit = rssSplitOf(rt.cmd.Process.Pid)
	r.density.idleDefaultRSS, r.density.idleDefault = r.density.daemonIdle, r.density.daemonIdleSplit
	if rt.idleWithAgent.rss > 0 {
		r.density.idleDefaultRSS, r.density.idleDefault = rt.idleWithAgent, rt.idleWithAgentSplit
		r.density.idleAgent = rt.idleAgent
	}
	logf("%s: idle Rss %s (RssAnon %s, RssFile %s)", rt.name, mib(r.density.daemonIdle.rss),
		mib(r.density.daemonIdleSplit.anon), mib(r.density.daemonIdleSplit.file))

	for i := 0; i < 10; i++ {
		_, d, err := c.timed(ctx, "version")
		if err != nil {
			return nil, err
		}
		r.crictl = append(r.crictl, d.Seconds())
	}

	// Pulls: each after removing the image. The first pull also serves
	// the rest of the run. containerd pulls its pause image up front, as
	// a node would have it before the first pod.
	if rt.name != "peapod" {
		if _, err := c.run(ctx, "pull", "registry.k8s.io/pause:3.6"); err != nil {
			return nil, err
		}
	}
	for i := 0; i < o.pulls; i++ {
		if i > 0 {
			if _, err := c.run(ctx, "rmi", image); err != nil {
				return nil, err
			}
		}
		_, d, err := c.timed(ctx, "pull", image)
		if err != nil {
			return nil, err
		}
		r.pull = append(r.pull, d.Seconds())
	}
	logf("%s: pulls done", rt.name)

	// One warm-up pod, untimed (first-use costs of both daemons).
	if _, err := lifecycle(ctx, o, c, "warmup", 0); err != nil {
		return nil, err
	}
	for i := 0; i < o.n; i++ {
		t, err := lifecycle(ctx, o, c, "seq", i)
		if err != nil {
			return nil, err
		}
		total := 0.0
		for _, p := range phaseOrder[:5] {
			r.phases[p] = append(r.phases[p], t[p])
			total += t[p]
		}
		r.phases["total"] = append(r.phases["total"], total)
	}
	logf("%s: %d sequential lifecycles done", rt.name, o.n)

	// The same starts over the CRI socket: no crictl process in the
	// figures.
	if err := grpcLifecycles(ctx, o, rt, r); err != nil {
		return nil, err
	}
	logf("%s: %d gRPC lifecycles done, Run+Create+Start p50 %s", rt.name, o.n, ms(quantile(r.grpc["total"], 0.5)))

	// Parallel.
	start := time.Now()
	if _, err := startPods(ctx, o, c, "par", o.parallel, o.parallel); err != nil {
		return nil, err
	}
	r.par = time.Since(start).Seconds()
	if _, err := c.run(ctx, "rmp", "-af"); err != nil {
		return nil, err
	}
	logf("%s: %d pods in parallel: %.2fs", rt.name, o.parallel, r.par)

	// Many clients on List and Status while pods start and stop.
	if o.clients > 0 {
		cr, err := manyClients(ctx, o, rt)
		if err != nil {
			return nil, err
		}
		r.clients = cr
		logf("%s: %d clients, %d calls in %.1fs of churn, %d errors, %d raced removals", rt.name, o.clients, cr.calls(), cr.churn, cr.errors(), cr.raced)
	}

	// Density, with a CPU profile of peapod while the pods start.
	var prof sync.WaitGroup
	if rt.httpAddr != "" {
		prof.Add(1)
		go func() {
			defer prof.Done()
			if p, err := saveProfile(rt.httpAddr, "profile?seconds=10", filepath.Join(o.out, "peapod-cpu-density.pprof")); err == nil {
				r.profiles = append(r.profiles, p)
			}
		}()
	}
	start = time.Now()
	starts, err := startPods(ctx, o, c, "density", o.density, o.batch)
	if err != nil {
		return nil, err
	}
	r.density.wall = time.Since(start).Seconds()
	r.density.starts = starts
	r.density.pods = o.density
	prof.Wait()
	logf("%s: %d pods running after %.1fs", rt.name, o.density, r.density.wall)
	time.Sleep(2 * time.Second)
	rt.noteHelpers()
	helpers := rt.helpers()
	r.density.nHelpers = len(helpers)
	r.density.helpers, r.density.pauses, r.density.nPause = podProcs(rt.cmd.Process.Pid, helpers)
	r.density.daemonLoaded = memOf(rt.cmd.Process.Pid)
	// The CRI stats calls over gRPC (crictl stats itself waits a second
	// between two samples), each after the cache of peapod expired.
	if err := listStats(ctx, rt, r); err != nil {
		return nil, err
	}
	if rt.httpAddr != "" {
		for i := 0; i < 5; i++ {
			time.Sleep(1100 * time.Millisecond) // past the cache: each scrape reads every cgroup
			start := time.Now()
			resp, err := http.Get("http://" + rt.httpAddr + "/metrics")
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r.density.scrape = append(r.density.scrape, time.Since(start).Seconds())
		}
		if p, err := saveProfile(rt.httpAddr, "heap", filepath.Join(o.out, "peapod-heap-density.pprof")); err == nil {
			r.profiles = append(r.profiles, p)
		}
	}

	// ExecSync over gRPC (no crictl process in the figure) in a density pod.
	if err := execSync(ctx, rt, o.execs, r); err != nil {
		return nil, err
	}

	start = time.Now()
	if _, err := c.run(ctx, "rmp", "-af"); err != nil {
		return nil, err
	}
	r.density.remove = time.Since(start).Seconds()
	logf("%s: removed %d pods in %.1fs", rt.name, o.density, r.density.remove)

	// Last, on a daemon with no pods of the bench's: critest's own
	// lifecycles and image calls. A failure there is reported in the
	// table, not fatal.
	if o.critestN > 0 {
		r.critest = runCritest(ctx, o, rt)
	}
	return r, nil
}

type podFiles struct{ pod, ctr string }

// writeConfigs writes crictl's pod and container JSON for pod name.
func writeConfigs(o options, name string) (podFiles, error) {
	dir := filepath.Join(o.dir, "configs")
	os.MkdirAll(dir, 0o755)
	pod := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "bench", "uid": "uid-" + name, "attempt": 0},
		"log_directory": filepath.Join(o.dir, "logs", name),
		// As the kubelet does: a cgroup per pod (containerd's pod stats
		// need one).
		"linux": map[string]any{"cgroup_parent": "/" + o.cgroup + "/pod-uid-" + name},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "sleep"},
		"image":    map[string]any{"image": image},
		"command":  []string{"sleep", "3600"},
		"log_path": "sleep.log",
		"linux":    map[string]any{},
	}
	f := podFiles{pod: filepath.Join(dir, name+"-pod.json"), ctr: filepath.Join(dir, name+"-ctr.json")}
	for path, v := range map[string]any{f.pod: pod, f.ctr: ctr} {
		data, _ := json.Marshal(v)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return f, err
		}
	}
	return f, nil
}

// startPod runs runp, create, start for one pod; returns the pod id and
// each call's duration.
func startPod(ctx context.Context, o options, c *crictl, name string) (string, map[string]float64, error) {
	f, err := writeConfigs(o, name)
	if err != nil {
		return "", nil, err
	}
	t := map[string]float64{}
	pod, d, err := c.timed(ctx, "runp", f.pod)
	if err != nil {
		return "", nil, err
	}
	t["runp"] = d.Seconds()
	ctr, d, err := c.timed(ctx, "create", "--no-pull", pod, f.ctr, f.pod)
	if err != nil {
		return pod, nil, err
	}
	t["create"] = d.Seconds()
	if _, d, err = c.timed(ctx, "start", ctr); err != nil {
		return pod, nil, err
	}
	t["start"] = d.Seconds()
	return pod, t, nil
}

// lifecycle is one pod through runp, create, start, stopp, rmp.
func lifecycle(ctx context.Context, o options, c *crictl, prefix string, i int) (map[string]float64, error) {
	pod, t, err := startPod(ctx, o, c, fmt.Sprintf("%s-%d", prefix, i))
	if err != nil {
		return nil, err
	}
	_, d, err := c.timed(ctx, "stopp", pod)
	if err != nil {
		return nil, err
	}
	t["stopp"] = d.Seconds()
	if _, d, err = c.timed(ctx, "rmp", pod); err != nil {
		return nil, err
	}
	t["rmp"] = d.Seconds()
	return t, nil
}

// startPods starts n pods, at most conc at a time; returns each pod's
// runp+create+start time.
func startPods(ctx context.Context, o options, c *crictl, prefix string, n, conc int) ([]float64, error) {
	var (
		mu       sync.Mutex
		starts   []float64
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				begin := time.Now()
				_, _, err := startPod(ctx, o, c, fmt.Sprintf("%s-%d", prefix, i))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				starts = append(starts, time.Since(begin).Seconds())
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return starts, firstErr
}

func execSync(ctx context.Context, rt *runtime, n int, r *result) error {
	conn, cl, err := dialCRI(rt)
	if err != nil {
		return err
	}
	defer conn.Close()
	list, err := cl.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
	if err != nil || len(list.Containers) == 0 {
		return fmt.Errorf("no running container for ExecSync: %v", err)
	}
	id := list.Containers[0].Id
	for i := 0; i < n+1; i++ {
		start := time.Now()
		resp, err := cl.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 10})
		if err != nil {
			return fmt.Errorf("ExecSync: %w", err)
		}
		if resp.ExitCode != 0 {
			return fmt.Errorf("ExecSync true: exit %d", resp.ExitCode)
		}
		if i > 0 { // the first is a warm-up
			r.execs = append(r.execs, time.Since(start).Seconds())
		}
	}
	return nil
}

func listStats(ctx context.Context, rt *runtime, r *result) error {
	conn, cl, err := dialCRI(rt)
	if err != nil {
		return err
	}
	defer conn.Close()
	time.Sleep(1100 * time.Millisecond)
	start := time.Now()
	cs, err := cl.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		return fmt.Errorf("ListContainerStats: %w", err)
	}
	r.density.statsCrictl = time.Since(start).Seconds()
	time.Sleep(1100 * time.Millisecond)
	start = time.Now()
	ps, err := cl.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
	if err != nil {
		return fmt.Errorf("ListPodSandboxStats: %w", err)
	}
	r.density.statspCrictl = time.Since(start).Seconds()
	logf("%s: ListContainerStats %d in %s, ListPodSandboxStats %d in %s", rt.name, len(cs.Stats), ms(r.density.statsCrictl), len(ps.Stats), ms(r.density.statspCrictl))
	return nil
}

func saveProfile(addr, what, path string) (string, error) {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("pprof %s: %s", what, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return path, err
}

// quantile of xs (nearest rank); NaN for none, which the table shows as
// n/a and counts as a missing figure.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}
