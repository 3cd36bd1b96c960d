package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// critestOps are the operations of `critest -benchmark` the table shows, by
// the file critest writes them to: the ones the phases above do not time —
// status, stop and remove of pods and containers, and the image calls, all
// over critest's own gRPC client. critest's RunPodSandbox, CreateContainer
// and StartContainer are in its files too; the gRPC lifecycles time those.
var critestOps = []struct{ file, op string }{
	{"pod_benchmark_data.json", "StatusPod"},
	{"pod_benchmark_data.json", "StopPod"},
	{"pod_benchmark_data.json", "RemovePod"},
	{"container_benchmark_data.json", "StatusContainer"},
	{"container_benchmark_data.json", "StopContainer"},
	{"container_benchmark_data.json", "RemoveContainer"},
	{"image_lifecycle_benchmark_data.json", "PullImage"},
	{"image_lifecycle_benchmark_data.json", "StatusImage"},
	{"image_lifecycle_benchmark_data.json", "RemoveImage"},
	{"image_listing_benchmark_data.json", "ListImages"},
}

// critestImages replace critest's defaults (public.ecr.aws/docker/library/
// busybox:…, which no mirror here serves) with the tags the local registry
// holds for it; the first is the one pulled, status'd and removed.
var critestImages = []string{"docker.io/library/busybox:1-glibc", "docker.io/library/busybox:1", "docker.io/library/busybox:1-musl"}

// critestResult is one runtime's `critest -benchmark`: what it wrote, even
// when it failed part-way (a failed spec writes no file; the others do).
type critestResult struct {
	ops  map[string][]float64 // seconds, by critest's operation name
	wall float64
	log  string
	err  error
}

// critestJSON is critest's LifecycleBenchmarksResultsSet, the fields used.
// critestCgroups are the cgroup parents critest's pods end in: it asks for
// "" when the runtime reports the cgroupfs driver (peapod then uses its
// default, "peapod"; containerd 2.x "/k8s.io") and for /test.slice
// otherwise (containerd 1.6 has no RuntimeConfig). The bench's own pods are
// all below o.cgroup.
var critestCgroups = []string{"peapod", "test.slice", "k8s.io"}

type critestJSON struct {
	OperationsNames []string `json:"operationsNames"`
	Datapoints      []struct {
		OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
	} `json:"datapoints"`
}

// runCritest runs bin/critest -benchmark against rt and removes whatever
// it left. It never fails the run: an error is kept in the result, and
// the table says n/a for what critest did not write.
func runCritest(ctx context.Context, o options, rt *runtime) *critestResult {
	dir := filepath.Join(o.out, "critest-"+rt.name)
	cr := &critestResult{ops: map[string][]float64{}, log: filepath.Join(dir, "critest.log")}
	// Files of an earlier run in the same -out would pass for this one's.
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		cr.err = err
		return cr
	}
	before, err := imageTags(ctx, rt.crictl)
	if err != nil {
		cr.err = fmt.Errorf("before critest: %w", err)
		return cr
	}
	start := time.Now()
	cr.err = execCritest(ctx, o, rt, dir, cr.log)
	cr.wall = time.Since(start).Seconds()
	if err := readCritest(dir, cr.ops); err != nil && cr.err == nil {
		cr.err = err
	}
	if err := cleanCritest(rt, before); err != nil && cr.err == nil {
		cr.err = err
	}
	if cr.err != nil {
		logf("%s: critest -benchmark FAILED after %.1fs: %v (log %s)", rt.name, cr.wall, cr.err, cr.log)
	} else {
		logf("%s: critest -benchmark done in %.1fs (%d samples per benchmark)", rt.name, cr.wall, o.critestN)
	}
	return cr
}

// execCritest runs critest once with a deadline. At the deadline (or ^C)
// it gets SIGTERM, by its PID: ginkgo then runs the specs' cleanup; if it
// is still there 15 s later, SIGKILL.
func execCritest(ctx context.Context, o options, rt *runtime, dir, logPath string) error {
	params := filepath.Join(dir, "params.yaml")
	if err := os.WriteFile(params, []byte(critestParams(o)), 0o644); err != nil {
		return err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	ctx, cancel := context.WithTimeout(ctx, o.critestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(o.repo, "bin/critest"),
		"-benchmark",
		// These win over any crictl.yaml critest finds (its -config is
		// read before its flags are parsed, so it cannot point elsewhere).
		"-runtime-endpoint", rt.endpoint, "-image-endpoint", rt.endpoint,
		"-benchmarking-output-dir", dir,
		"-benchmarking-params-file", params,
		// -benchmark adds its own -ginkgo.focus, and focus values are
		// ORed: only skip narrows. "start a container from scratch" is
		// one sample of run+create+start+stop+remove, kept in ginkgo's
		// report only; the gRPC lifecycles time those calls.
		"-ginkgo.skip", "from scratch",
		"-ginkgo.no-color",
		"-ginkgo.junit-report", filepath.Join(dir, "junit.xml"),
		// Ginkgo's own deadline comes first, so a slow spec is reported
		// and cleaned up rather than killed.
		"-ginkgo.timeout", (o.critestTimeout - 30*time.Second).String(),
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a ^C reaches it through ctx, in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	err = cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("critest stopped after %v: %w (%v)", o.critestTimeout, ctx.Err(), err)
	}
	if err != nil {
		return fmt.Errorf("critest: %w; %s", err, critestFailure(logPath))
	}
	return nil
}

// critestParams sets the sample counts (critest skips a benchmark whose
// count is unset), one sample at a time as the sequential phases, and the
// images. The timeouts are the longest wait between two samples; critest's
// 10 s for images is short for a loaded machine.
func critestParams(o options) string {
	p := map[string]any{
		"podsNumber": o.critestN, "podsNumberParallel": 1,
		"containersNumber": o.critestN, "containersNumberParallel": 1,
		"imagesNumber": o.critestN, "imagesNumberParallel": 1,
		"containerBenchmarkTimeoutSeconds": 60,
		"imageBenchmarkTimeoutSeconds":     60,
		"imagePullingBenchmarkImage":       critestImages[0],
		"imageListingBenchmarkImages":      critestImages,
	}
	data, _ := json.MarshalIndent(p, "", "  ") // JSON is YAML
	return string(data) + "\n"
}

// critestFailure picks ginkgo's summary of the failed specs from the log.
func critestFailure(logPath string) string {
	data, _ := os.ReadFile(logPath)
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "[FAIL]") || strings.Contains(l, "[PANICKED]") || strings.Contains(l, "[TIMEDOUT]") ||
			strings.HasPrefix(l, "Ran ") || strings.Contains(l, "Passed |") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) == 0 {
		return "log tail: " + strings.TrimSpace(tail(string(data), 400))
	}
	return strings.Join(lines, "; ")
}

// readCritest adds each operation's durations from the files critest
// wrote in dir; a missing file is a benchmark that did not finish.
func readCritest(dir string, ops map[string][]float64) error {
	seen := map[string]bool{}
	for _, c := range critestOps {
		if seen[c.file] {
			continue
		}
		seen[c.file] = true
		data, err := os.ReadFile(filepath.Join(dir, c.file))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		var set critestJSON
		if err := json.Unmarshal(data, &set); err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		for _, dp := range set.Datapoints {
			// An operation after a failed one in the sample is 0.
			for i, ns := range dp.OperationsDurationsNs {
				if i < len(set.OperationsNames) && ns > 0 {
					ops[set.OperationsNames[i]] = append(ops[set.OperationsNames[i]], float64(ns)/1e9)
				}
			}
		}
	}
	return nil
}

// cleanCritest removes the pods critest left (none, unless a spec failed
// half-way: the bench's own were all removed before) and the images it
// pulled that were not there before.
func cleanCritest(rt *runtime, before map[string]bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := rt.crictl
	pods, err := c.run(ctx, "pods", "-q")
	if err != nil {
		return fmt.Errorf("after critest: %w", err)
	}
	if pods != "" {
		rt.noteHelpers()
		n := len(strings.Fields(pods))
		if _, err := c.run(ctx, "rmp", "-af"); err != nil {
			return fmt.Errorf("after critest: %w", err)
		}
		logf("%s: removed %d pods critest left", rt.name, n)
	}
	after, err := imageTags(ctx, c)
	if err != nil {
		return fmt.Errorf("after critest: %w", err)
	}
	var left []string
	for tag := range after {
		if !before[tag] {
			left = append(left, tag)
		}
	}
	if len(left) == 0 {
		return nil
	}
	// One at a time, errors aside: removing one tag may remove the others
	// of the same image (containerd removes every reference), and then rmi
	// of those says "not found". What is left after is the check.
	for _, tag := range left {
		c.run(ctx, "rmi", tag)
	}
	after, err = imageTags(ctx, c)
	if err != nil {
		return fmt.Errorf("after critest: %w", err)
	}
	for _, tag := range left {
		if after[tag] {
			return fmt.Errorf("after critest: image %s could not be removed", tag)
		}
	}
	logf("%s: removed images critest pulled: %s", rt.name, strings.Join(left, " "))
	return nil
}

// imageTags lists the runtime's images by tag (or id when untagged).
func imageTags(ctx context.Context, c *crictl) (map[string]bool, error) {
	out, err := c.run(ctx, "images", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Images []struct {
			ID       string   `json:"id"`
			RepoTags []string `json:"repoTags"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("crictl images: %w", err)
	}
	tags := map[string]bool{}
	for _, im := range list.Images {
		if len(im.RepoTags) == 0 {
			tags[im.ID] = true
		}
		for _, t := range im.RepoTags {
			tags[t] = true
		}
	}
	return tags, nil
}
