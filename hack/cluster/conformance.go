package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"peapod/hack/cluster/harness"
)

// conformance runs Kubernetes' own node e2e specs (e2e.test of the same
// release, [NodeConformance] by default) against a fresh cluster whose node
// runs the upstream kubelet on the given runtime, or peapod-agent itself
// (node "peapod-agent"), prints passed / failed /
// skipped with each failure (hack/conformance/summary), and tears the
// cluster down. Returns the exit code: 0 when no spec failed. A
// storageDriver (an e2e storage test driver file, e.g.
// hack/cluster/csi-loop-testdriver.yaml) runs the cluster with CSI
// (csi.go) and adds that driver's storage specs, "External Storage
// [Driver: …]", which focus must then select.
func conformance(runtime, node, focus, skip, out string, procs int, storageDriver string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	repo, err := os.Getwd()
	check(err)
	cmd := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), "all")
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	check(err)
	bin := strings.TrimSpace(string(b))
	if out == "" {
		out, err = os.MkdirTemp("", "peapod-conformance-k8s.")
		check(err)
	}
	check(os.MkdirAll(out, 0o755))
	dir, err := os.MkdirTemp("", "peapod-conformance-cluster.")
	check(err)
	var extra []string
	csiSidecars := ""
	if storageDriver != "" {
		abs, err := filepath.Abs(storageDriver)
		check(err)
		extra = append(extra, "--storage.testdriver="+abs)
		csiSidecars, err = build(repo, "csi-sidecars")
		check(err)
	}
	c, err := harness.Up(ctx, harness.Options{
		Dir: dir, Repo: repo, BinDir: bin, Runtime: runtime, Node: node, E2EImages: true, Log: os.Stderr,
		CSISidecars: csiSidecars,
	})
	check(err)
	defer func() {
		// Keep the node's logs with the report: they name the cause of a
		// failure more often than the spec's message does.
		for _, name := range []string{"kubelet", harness.NodePeapodAgent, "peapod", "containerd", "kube-apiserver", "peapod-csi-loop", "csi-provisioner", "csi-attacher", "csi-resizer"} {
			src := filepath.Join(c.Dir, "logs", name+".log")
			if data, err := os.ReadFile(src); err == nil {
				_ = os.WriteFile(filepath.Join(out, name+".log"), data, 0o644)
			}
		}
		if err := c.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster down: %v\n", err)
		}
	}()
	if root := c.KubeletRootDir(); storageDriver != "" && root != "" {
		// Storage specs look for the pods' volume dirs there (default
		// /var/lib/kubelet); the harness's kubelet keeps them in its dir.
		extra = append(extra, "--kubelet-root-dir="+root)
	}
	junit := filepath.Join(out, "junit.xml")
	logf, err := os.Create(filepath.Join(out, "e2e.log"))
	check(err)
	defer logf.Close()
	start := time.Now()
	fmt.Fprintf(os.Stderr, "conformance: e2e.test on %s under %s, focus %q skip %q (log: %s)\n", runtime, node, focus, skip, logf.Name())
	// ginkgo runs the specs in parallel processes (most of a node spec's
	// time is waiting for pods); each process is one e2e.test.
	e2e := exec.CommandContext(ctx, filepath.Join(bin, "ginkgo"),
		fmt.Sprintf("--procs=%d", procs),
		"--focus="+focus,
		"--skip="+skip,
		"--junit-report=junit.xml",
		"--output-dir="+out,
		"--no-color",
		"--timeout=3h",
		filepath.Join(bin, "e2e.test"), "--",
		"--provider=skeleton",
		"--kubeconfig="+c.Kubeconfig,
		"--kubectl-path="+c.Kubectl,
		"--container-runtime-endpoint="+c.RuntimeEndpoint,
		"--report-dir="+out,
		"--dump-logs-on-failure=false",
	)
	e2e.Args = append(e2e.Args, extra...)
	e2e.Dir = out
	e2e.Stdout, e2e.Stderr = logf, logf
	e2eErr := e2e.Run()
	fmt.Fprintf(os.Stderr, "conformance: e2e.test finished after %s (%v)\n", time.Since(start).Round(time.Second), e2eErr)
	if _, err := os.Stat(junit); err != nil {
		fmt.Fprintf(os.Stderr, "conformance: e2e.test wrote no report; the end of its log:\n")
		tail := exec.Command("tail", "-40", logf.Name())
		tail.Stdout = os.Stderr
		_ = tail.Run()
		return 1
	}
	sum := exec.Command("go", "run", "./hack/conformance/summary", "-label", "node-conformance("+runtime+")", junit)
	sum.Dir = repo
	sum.Stdout, sum.Stderr = os.Stdout, os.Stderr
	if err := sum.Run(); err != nil {
		return 1
	}
	return 0
}
