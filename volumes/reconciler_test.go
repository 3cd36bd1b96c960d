package volumes

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
)

// A failing volume is retried with per-operation exponential back-off: an
// immediate retry is refused with the last error, Run retries once the
// back-off has passed, and a success clears it. Needs no root (hostPath).
func TestBackoffAndRetryByRun(t *testing.T) {
	old := initialBackoff
	initialBackoff = 200 * time.Millisecond
	oldResync := resyncPeriod
	resyncPeriod = 50 * time.Millisecond
	t.Cleanup(func() { initialBackoff, resyncPeriod = old, oldResync })

	root := t.TempDir()
	m, err := New(Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "g"), StateDir: filepath.Join(root, "s"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(root, "host")
	dirType := v1.HostPathDirectory
	pod := podWith("u-bo", "bo", []v1.Volume{{Name: "h", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: host, Type: &dirType}}}},
		v1.Container{Name: "c", VolumeMounts: []v1.VolumeMount{{Name: "h", MountPath: "/h"}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	if _, err := m.SetupPod(ctx, pod, nil); err == nil || !strings.Contains(err.Error(), "not a Directory") {
		t.Fatalf("first SetupPod: %v", err)
	}
	os.Mkdir(host, 0o755)
	_, err = m.SetupPod(ctx, pod, nil)
	var be *backoffError
	if !errors.As(err, &be) && !strings.Contains(err.Error(), "retry in") {
		t.Fatalf("immediate retry: %v, want back-off", err)
	}
	go m.Run(ctx)
	deadline := time.Now().Add(3 * time.Second)
	for {
		m.mu.Lock()
		st := m.pods["u-bo"].state["h"]
		ready := st != nil && st.ready
		m.mu.Unlock()
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not retry the volume")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mounts, err := m.SetupPod(ctx, pod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mounts["c"][0].HostPath != host {
		t.Fatalf("mounts %v", mounts)
	}
	if len(m.backoffs) != 0 {
		t.Fatalf("back-offs left: %v", m.backoffs)
	}
	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.podRecordPath("u-bo")); !os.IsNotExist(err) {
		t.Fatal("pod record left after teardown")
	}
}

// A claim that cannot bind fails SetupPod before anything touches the node.
func TestSetupPodUnboundClaim(t *testing.T) {
	root := t.TempDir()
	m, err := New(Options{PodsDir: filepath.Join(root, "pods"), GlobalMountDir: filepath.Join(root, "g"), StateDir: filepath.Join(root, "s")})
	if err != nil {
		t.Fatal(err)
	}
	pod := claimPod("u-nb")
	if _, err := m.SetupPod(context.Background(), pod, &Objects{}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v", err)
	}
	if len(m.PodUIDs()) != 0 {
		t.Fatal("unresolvable pod entered the desired state")
	}
	if _, err := os.Stat(filepath.Join(root, "pods", "u-nb")); !os.IsNotExist(err) {
		t.Fatal("pod dir created")
	}
}
