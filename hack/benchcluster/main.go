// Command benchcluster measures, with the kubelet's own figures, the same
// Deployment on a node of the real control plane of hack/cluster/harness
// whose kubelet (upstream v1.37.2) runs on peapod, on containerd v2.4.2
// and on Debian's containerd 1.6: one node at a time, each torn down
// before the next. It prints one table with a column per runtime and
// peapod's ratio against each containerd. See README.md.
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
	only    string        // "", or a comma list of runtimes
	first   int           // replicas of the first scale-up
	pods    int           // replicas of the second
	idle    time.Duration // idle window with pods Ready
	gates   string        // the kubelet's feature gates ("Name=true,…")
	timeout time.Duration // limit of each wait
}

var runtimes = []string{"peapod", "containerd", "containerd-debian"}

func main() {
	var o options
	wd, _ := os.Getwd()
	flag.StringVar(&o.repo, "repo", wd, "peapod checkout with bin/peapod and bin/peapod-pause")
	flag.StringVar(&o.out, "out", filepath.Join(wd, "_output", "bench-cluster"), "where the table, logs and raw metrics go")
	flag.StringVar(&o.only, "only", "", "run only these runtimes (comma list): peapod, containerd ("+containerdref.CurrentVersion+"), containerd-debian (Debian's 1.6)")
	flag.IntVar(&o.first, "first", 30, "replicas of the first scale-up (from 0)")
	flag.IntVar(&o.pods, "pods", 100, "replicas of the second scale-up")
	flag.DurationVar(&o.idle, "idle", 2*time.Minute, "idle window with every pod Ready, for CPU and memory")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit of each wait (pods Ready, pods gone, sandboxes gone)")
	flag.StringVar(&o.gates, "kubelet-feature-gates", "", "the kubelet's feature gates, e.g. EventedPLEG=true,PLEGOnDemandRelist=true (compare runs with and without)")
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
		if k != "" && !slices.Contains(runtimes, k) {
			return fmt.Errorf("-only: unknown runtime %q (%s)", k, strings.Join(runtimes, ", "))
		}
	}
	if _, err := os.Stat(filepath.Join(o.repo, "bin", "peapod")); err != nil {
		return errors.New("bin/peapod missing: run make build (make bench-cluster does)")
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
	for _, key := range runtimes {
		if o.only != "" && !slices.Contains(strings.Split(o.only, ","), key) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		logf("=== %s", key)
		r := measure(ctx, o, key)
		if r.err != nil {
			logf("%s: %v", key, r.err)
		}
		logf("%s: done in %s", key, sec(r.wall))
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
