package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func runtimeClass(name, handler string) *nodev1.RuntimeClass {
	return &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Handler: handler}
}

// TestRuntimeClassLookup: the lookup logic against client-go's fake
// clientset (the real API server is test/cluster's business).
func TestRuntimeClassLookup(t *testing.T) {
	client := fake.NewClientset(runtimeClass("userns", "runc-userns"))
	c := newRuntimeClassCache(client)
	if _, err := c.handler("userns"); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("before the first list: %v", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	c.start(stop)
	if !cache.WaitForCacheSync(stop, c.informer.HasSynced) {
		t.Fatal("no sync")
	}
	if h, err := c.handler("userns"); err != nil || h != "runc-userns" {
		t.Errorf("userns: %q, %v", h, err)
	}
	if _, err := c.handler("missing"); err == nil || err.Error() != `RuntimeClass "missing" not found` {
		t.Errorf("missing: %v", err)
	}
	// A class made later is seen through the watch.
	if _, err := client.NodeV1().RuntimeClasses().Create(context.Background(), runtimeClass("later", "crun"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new RuntimeClass", func() bool { h, err := c.handler("later"); return err == nil && h == "crun" })

	// The pod's handler: "" without a class; the class's handler in node
	// mode; the name itself without an API server.
	a := &Agent{runtimeClasses: c}
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	if h, err := a.runtimeHandler(pod); h != "" || err != nil {
		t.Errorf("no class: %q, %v", h, err)
	}
	name := "userns"
	pod.Spec.RuntimeClassName = &name
	if h, err := a.runtimeHandler(pod); h != "runc-userns" || err != nil {
		t.Errorf("node mode: %q, %v", h, err)
	}
	if h, err := (&Agent{}).runtimeHandler(pod); h != "userns" || err != nil {
		t.Errorf("static mode: %q, %v", h, err)
	}
}

// TestAgentRuntimeClassNotFound: a pod whose RuntimeClass does not exist
// gets no sandbox and says why, as the kubelet's FailedCreatePodSandBox;
// once the class exists, its sandbox runs on the class's handler.
func TestAgentRuntimeClassNotFound(t *testing.T) {
	manifests, state := t.TempDir(), t.TempDir()
	writeFile(t, manifests, "p.yaml", `apiVersion: v1
kind: Pod
metadata:
  name: rc
spec:
  runtimeClassName: fast
  containers:
  - name: app
    image: busybox:1.36
`)
	rt, img := critest.NewFakeRuntimeService(), critest.NewFakeImageService()
	img.SetFakeImages([]string{"busybox:1.36"})
	a, err := New(Options{
		ManifestsDir: manifests, StateDir: state, PodLogsDir: filepath.Join(state, "logs"), NodeName: "node1", NodeIP: "10.0.0.1",
		Runtime: rt, Images: img, Registerer: prometheus.NewRegistry(), SyncPeriod: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	c := newRuntimeClassCache(client)
	a.runtimeClasses = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	c.start(ctx.Done())
	go func() { defer close(done); _ = a.Run(ctx) }()

	pod := func() *v1.Pod {
		for _, p := range a.Pods().Items {
			if p.Name == "rc" {
				return &p
			}
		}
		return nil
	}
	waitFor(t, "the status message", func() bool {
		p := pod()
		return p != nil && strings.Contains(p.Status.Message, `failed to create pod sandbox: RuntimeClass "fast" not found`)
	})
	if p := pod(); p.Status.Phase != v1.PodPending {
		t.Errorf("phase %s, want Pending", p.Status.Phase)
	}
	for _, call := range rt.GetCalls() {
		if call == "RunPodSandbox" {
			t.Fatal("RunPodSandbox called for a pod without its RuntimeClass")
		}
	}
	if _, err := client.NodeV1().RuntimeClasses().Create(context.Background(), runtimeClass("fast", "crun"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sandbox on the class's handler", func() bool {
		rt.Lock()
		defer rt.Unlock()
		for _, s := range rt.Sandboxes {
			if s.Metadata.Name == "rc" && s.RuntimeHandler == "crun" && s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
				return true
			}
		}
		return false
	})
}
