// Command benchcluster measures the same Deployment on a node of the real
// control plane of hack/cluster/harness, one node at a time, each torn
// down before the next: the upstream kubelet (v1.37.2) on peapod, on
// containerd v2.4.2 and on Debian's containerd 1.6, with the kubelet's own
// figures, and peapod-agent as the node on peapod, with the same figures
// where they can be had the same way. It prints one table with a column
// per node, peapod's ratio against each containerd and peapod-agent's
// against containerd v2.4.2. See README.md.
//
// Every process is started and stopped by the harness, by PID; Down runs
// whatever happened (^C included) and removes the pods, mounts, bridge and
// cgroups of the node. Traffic stays on 127.0.0.1 and the node's bridge.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"peapod/hack/cluster/harness"
	"peapod/hack/containerdref"
)

// maxPods is the kubelet's maxPods in the harness's config; the node runs
// no other pod (no kube-proxy, no DNS).
const maxPods = 110

type options struct {
	repo    string        // peapod checkout: bin/peapod, hack/
	binDir  string        // the Kubernetes binaries (hack/cluster/build.sh)
	out     string        // table, logs, raw metrics
	stamp   string        // UTC time of the run, in file names
	only    string        // "", or a comma list of setup keys
	first   int           // replicas of the first scale-up
	pods    int           // replicas of the second
	idle    time.Duration // idle window with pods Ready
	gates   string        // the kubelet's feature gates ("Name=true,…")
	timeout time.Duration // limit of each wait
}

// setup is one column of the table: a node agent on a CRI runtime.
type setup struct {
	key     string // as -only names it
	runtime string // harness.Options.Runtime
	node    string // harness.Options.Node
}

// agent is whether the node is peapod-agent (no kubelet).
func (s setup) agent() bool { return s.node == harness.NodePeapodAgent }

// setups are the columns, in the order they run.
var setups = []setup{
	{"peapod", "peapod", harness.NodeKubelet},
	{"peapod-agent", "peapod", harness.NodePeapodAgent},
	{"containerd", "containerd", harness.NodeKubelet},
	{"containerd-debian", "containerd-debian", harness.NodeKubelet},
}

func setupKeys() []string {
	var keys []string
	for _, s := range setups {
		keys = append(keys, s.key)
	}
	return keys
}

// selected is the setups -only picks (all of them without it).
func (o *options) selected() []setup {
	var out []setup
	for _, s := range setups {
		if o.only == "" || slices.Contains(strings.Split(o.only, ","), s.key) {
			out = append(out, s)
		}
	}
	return out
}

func main() {
	var o options
	wd, _ := os.Getwd()
	flag.StringVar(&o.repo, "repo", wd, "peapod checkout with bin/peapod, bin/peapod-pause and bin/peapod-agent")
	flag.StringVar(&o.out, "out", filepath.Join(wd, "_output", "bench-cluster"), "where the table, logs and raw metrics go")
	flag.StringVar(&o.only, "only", "", "run only these nodes (comma list): peapod (the kubelet on peapod), peapod-agent (peapod-agent on peapod), containerd (the kubelet on "+containerdref.CurrentVersion+"), containerd-debian (the kubelet on Debian's 1.6)")
	flag.IntVar(&o.first, "first", 30, "replicas of the first scale-up (from 0)")
	flag.IntVar(&o.pods, "pods", 100, "replicas of the second scale-up")
	flag.DurationVar(&o.idle, "idle", 2*time.Minute, "idle window with every pod Ready, for CPU and memory")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit of each wait (pods Ready, pods gone, sandboxes gone)")
	flag.StringVar(&o.gates, "kubelet-feature-gates", "", "the kubelet's feature gates, e.g. EventedPLEG=true,PLEGOnDemandRelist=true (compare runs with and without); the peapod-agent node, which has no kubelet, runs without")
	flag.Parse()
	if abs, err := filepath.Abs(o.out); err == nil {
		o.out = abs
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "benchcluster:", err)
		os.Exit(2)
	}
	// Caught for the whole run: a ^C cancels the workload, and a second
	// one does not cut Down short.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchcluster:", err)
		stop()
		os.Exit(1)
	}
}

func (o *options) check() error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root")
	}
	if o.first < 1 || o.pods <= o.first {
		return fmt.Errorf("want 0 < -first (%d) < -pods (%d)", o.first, o.pods)
	}
	if o.pods > maxPods {
		return fmt.Errorf("-pods %d: the harness's kubelet takes at most %d pods (maxPods)", o.pods, maxPods)
	}
	if o.idle <= 0 {
		return errors.New("-idle must be positive")
	}
	for _, k := range strings.Split(o.only, ",") {
		if k != "" && !slices.Contains(setupKeys(), k) {
			return fmt.Errorf("-only: unknown node %q (%s)", k, strings.Join(setupKeys(), ", "))
		}
	}
	bins := []string{"peapod"}
	if slices.ContainsFunc(o.selected(), setup.agent) {
		bins = append(bins, "peapod-agent")
	}
	for _, b := range bins {
		if _, err := os.Stat(filepath.Join(o.repo, "bin", b)); err != nil {
			return fmt.Errorf("bin/%s missing: run make build (make bench-cluster does)", b)
		}
	}
	return nil
}

func run(ctx context.Context, o options) error {
	o.stamp = time.Now().UTC().Format("20060102T150405Z")
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(o.repo, "hack/cluster/build.sh"), "control-plane")
	cmd.Stderr = os.Stderr
	bin, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("hack/cluster/build.sh control-plane: %w", err)
	}
	o.binDir = strings.TrimSpace(string(bin))

	var results []*result
	loadBefore := loadavg()
	for _, s := range o.selected() {
		if ctx.Err() != nil {
			break
		}
		logf("=== %s", s.key)
		r := measure(ctx, o, s)
		if r.err != nil {
			logf("%s: %v", s.key, r.err)
		}
		logf("%s: done in %s", s.key, sec(r.wall))
		results = append(results, r)
	}
	table, missing := render(o, results, loadBefore, loadavg())
	fmt.Print(table)
	name := filepath.Join(o.out, "results-"+o.stamp+".txt")
	if err := os.WriteFile(name, []byte(table), 0o644); err != nil {
		return err
	}
	logf("table written to %s", name)
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.key, r.err))
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("%d figures missing although their phase ran: %s", len(missing), strings.Join(missing, "; ")))
	}
	if ctx.Err() != nil {
		errs = append(errs, errors.New("interrupted"))
	}
	return errors.Join(errs...)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "benchcluster: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
