package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"peapod/hack/cluster/harness"
)

// versionRE is a release's major.minor.patch.
var versionRE = regexp.MustCompile(`^v?\d+\.\d+\.\d+`)

// app names the Deployment (and its pods' app label).
const app = "bench"

// Which scale-up a histogram delta covers.
const (
	phaseFirst = iota // 0 → -first
	phaseRest         // -first → -pods
	phaseAll          // 0 → -pods: every pod the two scale-ups started
	nPhases
)

// result is one node's figures: seconds, bytes, counts; NaN is a figure
// its phase did not produce.
type result struct {
	setup
	name string // as the table heads its column: peapod, peapod-agent, containerd-2.4.2
	err  error
	wall float64 // the whole run of this node, up to down
	up   float64 // harness.Up
	// ready: from each scale-up until the Deployment counts every replica
	// Ready; sli the kubelet's pod start SLI histogram over each phase
	// (kubelet nodes), agentStart peapod-agent's own pod start histogram
	// (the peapod-agent node); sliRan says the phase ran, for either.
	ready      [2]float64
	sli        [nPhases]histogram
	agentStart [nPhases]histogram
	sliRan     [nPhases]bool
	// gone: from the delete until no pod of it is left in the API server;
	// sandboxesStopped until the runtime lists none of their sandboxes
	// ready, sandboxesGone until it lists none at all.
	gone, sandboxesStopped, sandboxesGone float64
	idle                                  struct {
		ran      bool
		secs     float64
		cpu      [nGroups]float64
		mem      [nGroups]mem
		n        [nGroups]int
		workload int
		criCalls float64 // the node agent's, over the window
	}
	// ops: the node agent's CRI calls by operation (the kubelet's
	// operation_type) over the workload; opMean their mean duration as the
	// kubelet timed them (kubelet nodes only).
	ops, opMean map[string]float64
	logs        string
}

func newResult(s setup) *result {
	nan := math.NaN()
	return &result{setup: s, name: s.key, up: nan, ready: [2]float64{nan, nan}, gone: nan, sandboxesStopped: nan, sandboxesGone: nan}
}

// measure brings up a cluster of setup s, runs the workload and always
// tears the cluster down, after copying its logs to the output.
func measure(ctx context.Context, o options, s setup) (r *result) {
	key := s.key
	r = newResult(s)
	start := time.Now()
	defer func() { r.wall = time.Since(start).Seconds() }()
	// Short: containerd 2's shim sockets then fit under it (containerdref).
	dir, err := os.MkdirTemp("/run", "pbc-")
	if err != nil {
		r.err = err
		return r
	}
	ho := harness.Options{Dir: dir, Repo: o.repo, BinDir: o.binDir, Runtime: s.runtime, Node: s.node, Log: os.Stderr}
	if !s.agent() {
		ho.KubeletFeatureGates = o.gates
	}
	c, err := harness.Up(ctx, ho)
	if err != nil {
		// Up has torn down what it made (and removed dir) already.
		if c == nil {
			os.Remove(dir)
		}
		r.err = fmt.Errorf("cluster up: %w", err)
		return r
	}
	r.up = time.Since(start).Seconds()
	r.logs = filepath.Join(o.out, "logs-"+o.stamp, key)
	defer func() {
		if err := copyLogs(c, r.logs); err != nil {
			logf("%s: copy logs: %v", key, err)
		}
		logf("%s: tearing the cluster down", key)
		t := time.Now()
		if err := c.Down(); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("cluster down: %w", err))
		}
		logf("%s: down in %s", key, sec(time.Since(t).Seconds()))
	}()
	if s.runtime != "peapod" {
		if name, version, err := c.RuntimeVersion(ctx); err == nil {
			// As hack/bench names it: containerd-1.6.20, not 1.6.20~ds1.
			if m := versionRE.FindString(version); m != "" {
				version = m
			}
			r.name = name + "-" + strings.TrimPrefix(version, "v")
		}
	}
	rtName := s.runtime
	if !s.agent() {
		rtName = r.name // containerd's with its version
	}
	logf("%s: cluster up in %s (dir %s, node %s on runtime %s)", key, sec(r.up), dir, s.node, rtName)
	if err := os.MkdirAll(r.logs, 0o755); err != nil {
		r.err = err
		return r
	}
	r.err = runWorkload(ctx, o, c, r)
	return r
}

func runWorkload(ctx context.Context, o options, c *harness.Cluster, r *result) error {
	a, err := newAPI(c)
	if err != nil {
		return err
	}
	defer a.close()
	// The kubelet counts and times its CRI calls itself; peapod-agent does
	// not, and its calls are counted where they arrive: peapod's /metrics.
	var rt *runtimeMetrics
	if r.agent() {
		if rt, err = newRuntimeMetrics(c); err != nil {
			return err
		}
		defer rt.close()
	}
	scrape := func(name string) (snapshot, error) {
		b, err := a.nodeMetrics(ctx)
		if err != nil {
			return snapshot{}, fmt.Errorf("%s metrics: %w", r.node, err)
		}
		_ = os.WriteFile(filepath.Join(r.logs, "metrics-"+name+".txt"), b, 0o644)
		s, err := parseMetrics(bytes.NewReader(b))
		if err != nil || rt == nil {
			return s, err
		}
		b, err = rt.get(ctx)
		if err != nil {
			return s, fmt.Errorf("peapod metrics: %w", err)
		}
		_ = os.WriteFile(filepath.Join(r.logs, "runtime-metrics-"+name+".txt"), b, 0o644)
		calls, err := parseRuntimeCRI(bytes.NewReader(b))
		if err != nil {
			return s, err
		}
		s.ops, s.opSum, s.opCount = calls.ops, calls.opSum, calls.opCount
		return s, nil
	}
	ready := func(n int) func(context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) { return a.deploymentReady(ctx, app, n) }
	}
	podsGone := func(ctx context.Context) (bool, string, error) {
		uids, err := a.pods(ctx, app, 1)
		return len(uids) == 0, fmt.Sprintf("%d+ pods left", len(uids)), err
	}

	// Warm-up: one pod up and gone again, so the image is on the node and
	// the first-use costs of node agent and runtime are paid before the
	// figures start.
	t := time.Now()
	if err := a.createDeployment(ctx, deployment(app, 0)); err != nil {
		return err
	}
	if err := a.scale(ctx, app, 1); err != nil {
		return err
	}
	if _, err := poll(ctx, t, 200*time.Millisecond, o.timeout, "warm-up pod Ready", ready(1)); err != nil {
		return err
	}
	if err := a.scale(ctx, app, 0); err != nil {
		return err
	}
	if _, err := poll(ctx, t, 200*time.Millisecond, o.timeout, "warm-up pod gone", podsGone); err != nil {
		return err
	}
	logf("%s: warm-up pod up and gone in %s", r.key, sec(time.Since(t).Seconds()))
	if err := sleep(ctx, 2*time.Second); err != nil { // let its teardown settle
		return err
	}

	// The two scale-ups, each timed until the Deployment counts every
	// replica Ready; the kubelet's histogram (or peapod-agent's) is read
	// after each, once it holds a sample for every pod started (either
	// records a pod when it sees its containers started, before the probe
	// passes: normally at once).
	samples := func(s snapshot) float64 { return s.sli.count }
	if r.agent() {
		samples = func(s snapshot) float64 { return s.agentStart.count }
	}
	m := make([]snapshot, 3)
	if m[0], err = scrape("0-before-scale-up"); err != nil {
		return err
	}
	for i, n := range []int{o.first, o.pods} {
		t := time.Now()
		if err := a.scale(ctx, app, n); err != nil {
			return err
		}
		d, err := poll(ctx, t, 100*time.Millisecond, o.timeout, fmt.Sprintf("%d replicas Ready", n), ready(n))
		if err != nil {
			return err
		}
		r.ready[i] = d.Seconds()
		want := n
		if i > 0 {
			want -= o.first
		}
		if m[i+1], err = waitSLI(ctx, scrape, samples, fmt.Sprintf("%d-ready-%d", i+1, n), m[i], want); err != nil {
			return err
		}
		logf("%s: %d replicas Ready after %s", r.key, n, sec(d.Seconds()))
	}
	for p, ab := range [nPhases][2]int{phaseFirst: {0, 1}, phaseRest: {1, 2}, phaseAll: {0, 2}} {
		d, err := m[ab[1]].since(m[ab[0]])
		if err != nil {
			return err
		}
		r.sli[p], r.agentStart[p], r.sliRan[p] = d.sli, d.agentStart, true
	}

	// Idle with every pod Ready: CPU over the window, memory at its end.
	if err := idle(ctx, o, c, r, scrape); err != nil {
		return err
	}

	// Delete: until the API server has no pod of it, and until the
	// runtime has no sandbox of those pods.
	uids, err := a.pods(ctx, app, 0)
	if err != nil {
		return err
	}
	// The kubelet stops a deleted pod's sandbox before it lets the API
	// server drop the pod, and removes the sandbox at its next container
	// GC (every minute); peapod-agent removes it when it tears the pod
	// down. One poll follows all three from the delete.
	w, err := newSandboxWatch(c.RuntimeEndpoint, uids)
	if err != nil {
		return err
	}
	defer w.close()
	t = time.Now()
	if err := a.deleteDeployment(ctx, app); err != nil {
		return err
	}
	_, err = poll(ctx, t, 100*time.Millisecond, o.timeout, "pods and their sandboxes gone", func(ctx context.Context) (bool, string, error) {
		if math.IsNaN(r.gone) {
			uids, err := a.pods(ctx, app, 1)
			if err != nil {
				return false, "", err
			}
			if len(uids) == 0 {
				r.gone = time.Since(t).Seconds()
			}
		}
		total, ready, err := w.count(ctx)
		if err != nil {
			return false, "", err
		}
		if ready == 0 && math.IsNaN(r.sandboxesStopped) {
			r.sandboxesStopped = time.Since(t).Seconds()
		}
		if total == 0 && math.IsNaN(r.sandboxesGone) {
			r.sandboxesGone = time.Since(t).Seconds()
		}
		return !math.IsNaN(r.gone) && total == 0, fmt.Sprintf("API server pods gone: %t; %d sandboxes of them left, %d ready", !math.IsNaN(r.gone), total, ready), nil
	})
	if err != nil {
		return err
	}
	logf("%s: %d pods deleted: sandboxes stopped after %s, pods gone from the API server after %s, sandboxes removed after %s",
		r.key, len(uids), sec(r.sandboxesStopped), sec(r.gone), sec(r.sandboxesGone))

	end, err := scrape("3-after-delete")
	if err != nil {
		return err
	}
	dl, err := end.since(m[0])
	if err != nil {
		return err
	}
	r.ops, r.opMean = dl.ops, dl.opMean
	if rt != nil {
		// peapod counted the bench's own ListPodSandbox polls too.
		if err := subtractCalls(r.ops, listPodSandboxOp, float64(w.calls)); err != nil {
			return err
		}
	}
	return nil
}

// waitSLI scrapes until the pod start histogram (samples reads its count)
// holds want samples more than prev (up to 60 s; then the table shows the
// samples it got).
func waitSLI(ctx context.Context, scrape func(string) (snapshot, error), samples func(snapshot) float64, name string, prev snapshot, want int) (snapshot, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := scrape(name)
		if err != nil {
			return s, err
		}
		got := samples(s) - samples(prev)
		if got >= float64(want) || time.Now().After(deadline) {
			if got < float64(want) {
				logf("pod start SLI: %g samples after 60 s, want %d", got, want)
			}
			return s, nil
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return s, err
		}
	}
}

// idle reads the node's processes, waits o.idle, reads them again.
func idle(ctx context.Context, o options, c *harness.Cluster, r *result, scrape func(string) (snapshot, error)) error {
	var daemon, node int
	for _, p := range c.Components {
		switch p.Name {
		case "peapod", "containerd":
			daemon = p.PID
		case harness.NodeKubelet, harness.NodePeapodAgent:
			node = p.PID
		}
	}
	if daemon == 0 || node == 0 {
		return fmt.Errorf("no runtime or node agent PID recorded in %s/cluster.json", c.Dir)
	}
	// The scrapes (the node agent's and the runtime's work) sit outside
	// the process readings.
	m0, err := scrape("2a-idle-start")
	if err != nil {
		return err
	}
	before := classify(allProcs(), daemon, node, c.Dir, readCmdline)
	t := time.Now()
	logf("%s: idle for %s (%d helpers, %d pauses, %d workload processes)", r.key, o.idle, before.count()[gHelpers], before.count()[gPauses], before.workload)
	if err := sleep(ctx, o.idle); err != nil {
		return err
	}
	after := classify(allProcs(), daemon, node, c.Dir, readCmdline)
	r.idle.secs = time.Since(t).Seconds()
	r.idle.cpu = after.cpuSince(before)
	r.idle.mem = after.memory()
	r.idle.n = after.count()
	r.idle.workload = after.workload
	r.idle.ran = true
	m1, err := scrape("2b-idle-end")
	if err != nil {
		return err
	}
	d, err := m1.since(m0)
	if err != nil {
		return err
	}
	for _, n := range d.ops {
		r.idle.criCalls += n
	}
	if r.idle.n[gPauses] != o.pods {
		logf("%s: %d pause processes with %d pods Ready", r.key, r.idle.n[gPauses], o.pods)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// copyLogs copies every component's log (node agent, runtime, control
// plane) into dir.
func copyLogs(c *harness.Cluster, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, p := range c.Components {
		if p.Log == "" {
			continue
		}
		errs = append(errs, copyFile(p.Log, filepath.Join(dir, filepath.Base(p.Log))))
	}
	return errors.Join(errs...)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
