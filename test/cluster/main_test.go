// Package cluster drives a real Kubernetes v1.37 control plane and the
// upstream kubelet on peapod (hack/cluster) with kubectl, as a user would.
// The cluster is brought up once, on first use, and torn down after the
// last test; PEAPOD_CLUSTER_DIR=DIR uses a cluster `make cluster` left up
// instead (and leaves it up).
package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"peapod/hack/cluster/harness"
	"peapod/hack/testenv"
)

var (
	once       sync.Once
	theCluster *harness.Cluster
	upErr      error
	ownCluster bool
)

func TestMain(m *testing.M) {
	code := m.Run()
	if ownCluster && theCluster != nil {
		if err := theCluster.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster down: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "../.."))
}

// cluster returns the shared cluster, bringing it up on first use.
func cluster(t *testing.T) *harness.Cluster {
	t.Helper()
	testenv.Integration(t)
	once.Do(func() {
		if dir := os.Getenv("PEAPOD_CLUSTER_DIR"); dir != "" {
			theCluster, upErr = harness.Load(dir)
			return
		}
		repo := repoRoot()
		out, err := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), "control-plane").Output()
		if err != nil {
			upErr = fmt.Errorf("hack/cluster/build.sh: %w", err)
			return
		}
		// The cluster's StorageClass peapod-loop (csi_test.go).
		sidecars, err := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), "csi-sidecars").Output()
		if err != nil {
			upErr = fmt.Errorf("hack/cluster/build.sh csi-sidecars: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "peapod-cluster-test.")
		if err != nil {
			upErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		ownCluster = true
		theCluster, upErr = harness.Up(ctx, harness.Options{
			Dir: dir, Repo: repo, BinDir: strings.TrimSpace(string(out)), Log: os.Stderr,
			CSISidecars: strings.TrimSpace(string(sidecars)),
		})
		if upErr != nil {
			theCluster = nil
		}
	})
	if upErr != nil {
		t.Fatalf("cluster: %v", upErr)
	}
	return theCluster
}

// kc is kubectl bound to one test: every call has a deadline and its
// failure fails the test with kubectl's stderr.
type kc struct {
	t  *testing.T
	c  *harness.Cluster
	ns string
}

// newNS makes a namespace for one test in the shared cluster and deletes
// it (not waiting) at its end.
func newNS(t *testing.T) *kc {
	return newNSIn(t, cluster(t))
}

// newNSIn is newNS in cluster c (a test's own cluster).
func newNSIn(t *testing.T, c *harness.Cluster) *kc {
	k := &kc{t: t, c: c}
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + fmt.Sprintf("-%d", time.Now().UnixNano()%100000)
	k.run("create", "namespace", name)
	k.ns = name
	// The namespace controller waits for the service account's token
	// controller; pods need the default service account.
	k.eventually(60*time.Second, "default service account", func() (bool, string) {
		out, err := k.try("get", "serviceaccount", "default", "-o", "name")
		return err == nil, out
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := k.try("get", "pods,events", "-o", "wide")
			t.Logf("namespace %s at failure:\n%s", name, out)
		}
		_, _ = exec.Command(c.Kubectl, "--kubeconfig", c.Kubeconfig, "delete", "namespace", name, "--wait=false").CombinedOutput()
	})
	return k
}

func (k *kc) cmd(ctx context.Context, args ...string) *exec.Cmd {
	if k.ns != "" {
		args = append([]string{"-n", k.ns}, args...)
	}
	cmd := k.c.KubectlCmd(ctx, args...)
	// On a deadline the kill reaches kubectl only; a child of it must not
	// keep the test waiting on its output pipe.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// try runs kubectl and returns stdout, or an error with stderr.
func (k *kc) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return k.tryCtx(ctx, nil, args...)
}

func (k *kc) tryCtx(ctx context.Context, stdin []byte, args ...string) (string, error) {
	if k.ns != "" {
		args = append([]string{"-n", k.ns}, args...)
	}
	return k.c.KubectlRun(ctx, stdin, args...)
}

func (k *kc) run(args ...string) string {
	k.t.Helper()
	out, err := k.try(args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

func (k *kc) apply(manifest string) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := k.tryCtx(ctx, []byte(manifest), "apply", "-f", "-"); err != nil {
		k.t.Fatal(err)
	}
}

// eventually polls cond every 500 ms until it holds or timeout passes.
func (k *kc) eventually(timeout time.Duration, what string, cond func() (bool, string)) {
	k.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// jsonpath reads one field of one object.
func (k *kc) jsonpath(obj, path string) string {
	out, _ := k.try("get", obj, "-o", "jsonpath="+path)
	return out
}

func (k *kc) waitPodPhase(pod, phase string, timeout time.Duration) {
	k.t.Helper()
	k.eventually(timeout, "pod "+pod+" "+phase, func() (bool, string) {
		p := k.jsonpath("pod/"+pod, "{.status.phase}")
		return p == phase, p + " " + k.jsonpath("pod/"+pod, "{.status.containerStatuses}")
	})
}

func (k *kc) waitReady(pod string, timeout time.Duration) {
	k.t.Helper()
	k.run("wait", "--for=condition=Ready", "pod/"+pod, fmt.Sprintf("--timeout=%s", timeout))
}
