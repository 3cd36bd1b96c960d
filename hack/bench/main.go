// Command bench runs the same CRI workload against peapod, the current
// containerd (built into the version-keyed cache) and Debian's containerd
// 1.6, one after the other in one run, and prints a table of all three
// with peapod's ratio against each containerd. See README.md.
//
// Every process it starts (registry, daemons) is stopped by its PID; every
// pod is removed through crictl before its daemon stops; containerd's shims
// are checked gone by the PIDs seen. Traffic stays on 127.0.0.1 and the
// runtimes' own bridges.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"peapod/hack/containerdref"
)

type options struct {
	repo           string        // the peapod checkout (bin/peapod, bin/crictl, hack/registry.sh)
	dir            string        // scratch dir for both runtimes; removed at the end
	out            string        // results: table, profiles, daemon logs
	n              int           // sequential lifecycles
	parallel       int           // pods started at once
	density        int           // pods for the density phase
	batch          int           // density: pods started at a time
	execs          int           // ExecSync calls
	clients        int           // many-clients phase: clients; 0 skips it
	churn          int           // many-clients phase: pods started and removed
	clientPause    time.Duration // many-clients phase: a client's pause between calls
	pulls          int           // image pulls
	critestN       int           // critest -benchmark samples per benchmark; 0 skips it
	critestTimeout time.Duration // one critest run; stopped at it
	only           string        // "", or a comma list of peapod, containerd, containerd-debian
	lxcfs          bool          // also time peapod's gRPC pod starts with lxcfs on
	cgroup         string        // the pods' cgroup parent's parent, removed at the end
	keepOnError    bool
}

func main() {
	var o options
	wd, _ := os.Getwd()
	flag.StringVar(&o.repo, "repo", wd, "peapod checkout with bin/peapod, bin/peapod-pause, bin/crictl")
	flag.StringVar(&o.out, "out", filepath.Join(wd, "_output", "bench"), "where the table, profiles and logs go")
	flag.IntVar(&o.n, "n", 20, "sequential pod lifecycles")
	flag.IntVar(&o.parallel, "parallel", 10, "pods started in parallel")
	flag.IntVar(&o.density, "density", 110, "pods in the density phase")
	flag.IntVar(&o.batch, "batch", 10, "density: pods started at a time")
	flag.IntVar(&o.execs, "execs", 50, "ExecSync calls")
	flag.IntVar(&o.clients, "clients", 50, "many-clients phase: clients calling List and Status RPCs (0: no such phase)")
	flag.IntVar(&o.churn, "churn", 20, "many-clients phase: pods started then removed while the clients call")
	flag.DurationVar(&o.clientPause, "client-pause", 10*time.Millisecond, "many-clients phase: each client's pause between two calls")
	flag.IntVar(&o.pulls, "pulls", 5, "image pulls (each after removing the image)")
	flag.IntVar(&o.critestN, "critest-n", 50, "critest -benchmark samples per benchmark (0: no critest phase)")
	flag.DurationVar(&o.critestTimeout, "critest-timeout", 5*time.Minute, "stop critest -benchmark after this long")
	flag.StringVar(&o.only, "only", "", "run only these runtimes (comma list): peapod, containerd (the current release, "+containerdref.CurrentVersion+"), containerd-debian (Debian's 1.6)")
	flag.BoolVar(&o.keepOnError, "keep", false, "keep the scratch dir when a phase fails")
	flag.BoolVar(&o.lxcfs, "lxcfs", true, "after the peapod column, time n gRPC pod starts with lxcfs and n without on a peapod with containers.lxcfs = on (an lxcfs of the run's own)")
	flag.Parse()
	// critest runs in its own dir: every path handed to it is absolute.
	if abs, err := filepath.Abs(o.out); err == nil {
		o.out = abs
	}
	if o.critestTimeout < time.Minute {
		fmt.Fprintln(os.Stderr, "bench: -critest-timeout must be at least 1m")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) (retErr error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "peapod-bench-")
	if err != nil {
		return err
	}
	o.dir = dir
	o.cgroup = filepath.Base(dir)
	defer removeCgroups(o.cgroup)
	if o.critestN > 0 {
		for _, name := range critestCgroups {
			if roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name); len(roots) == 0 {
				defer removeCgroupRoots(name)
			}
		}
	}
	defer func() {
		if retErr != nil && o.keepOnError {
			logf("keeping %s", dir)
			return
		}
		sweepMounts(dir)
		os.RemoveAll(dir)
	}()
	need := []string{"bin/peapod", "bin/peapod-pause", "bin/crictl"}
	if o.critestN > 0 {
		need = append(need, "bin/critest")
	}
	for _, f := range need {
		if _, err := os.Stat(filepath.Join(o.repo, f)); err != nil {
			return fmt.Errorf("%s missing: run make build tools (make bench does)", f)
		}
	}

	reg, err := startRegistry(ctx, o)
	if err != nil {
		return err
	}
	defer reg.stop()

	var results []*result
	load1 := loadavg()
	for i, key := range []string{"peapod", "containerd", "containerd-debian"} {
		if o.only != "" && !slices.Contains(strings.Split(o.only, ","), key) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logf("=== %s", key)
		var rt *runtime
		switch key {
		case "peapod":
			rt, err = startPeapod(ctx, o, reg.addr, i+1)
		case "containerd", "containerd-debian":
			var in containerdref.Install
			if key == "containerd" {
				in, err = containerdref.Current()
			} else {
				in, err = containerdref.Debian()
			}
			if err == nil {
				rt, err = startContainerd(ctx, o, reg.addr, i+1, in)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		r, err := measure(ctx, o, rt)
		if stopErr := rt.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
		if err == nil && key == "peapod" && o.lxcfs {
			r.lxcfsWith, r.lxcfsWithout, err = lxcfsStarts(ctx, o, rt, reg.addr)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rt.name, err)
		}
		r.key = key
		results = append(results, r)
	}
	table, missing := render(o, results, load1, loadavg())
	fmt.Print(table)
	name := filepath.Join(o.out, "results-"+time.Now().UTC().Format("20060102T150405Z")+".txt")
	if err := os.WriteFile(name, []byte(table), 0o644); err != nil {
		return err
	}
	logf("table written to %s", name)
	// A phase that ran and produced no figure is a broken bench, not a
	// result: fail rather than print n/a and exit 0.
	if len(missing) > 0 {
		return fmt.Errorf("%d rows have no figure although their phase ran: %s", len(missing), strings.Join(missing, "; "))
	}
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
