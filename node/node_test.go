package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime answers the two calls the status makes.
type fakeRuntime struct {
	criapi.RuntimeService
}

func (fakeRuntime) Version(context.Context, string) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "peapod", RuntimeVersion: "0.4.0"}, nil
}

func (fakeRuntime) Status(context.Context, bool) (*runtimeapi.StatusResponse, error) {
	return criStatus(runtimeUp, networkUp), nil
}

// The Node registers with the volume manager's volumesInUse, and
// UpdateStatusSoon posts a new list at once rather than at the next
// status tick (an hour away here).
func TestNodeVolumesInUse(t *testing.T) {
	client := fake.NewClientset()
	var mu sync.Mutex
	var inUse []v1.UniqueVolumeName
	known := false
	n, err := New(Options{
		Client: client, NodeName: "n1", Runtime: fakeRuntime{}, Addresses: []string{"10.1.0.1"},
		StatusUpdateFrequency: time.Hour, StatusReportFrequency: time.Hour, RenewInterval: time.Hour,
		Pressure: func() (bool, bool, bool) { return false, false, false },
		VolumesInUse: func() ([]v1.UniqueVolumeName, bool) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(inUse), known
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-n.Registered()

	get := func() []v1.UniqueVolumeName {
		node, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return node.Status.VolumesInUse
	}
	if got := get(); len(got) != 0 {
		t.Fatalf("registered with volumesInUse %v", got)
	}
	a := v1.UniqueVolumeName("kubernetes.io/csi/loop.csi.peapod.io^a")
	mu.Lock()
	inUse, known = []v1.UniqueVolumeName{a}, true
	mu.Unlock()
	n.UpdateStatusSoon()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(get(), []v1.UniqueVolumeName{a}) {
		if time.Now().After(deadline) {
			t.Fatalf("volumesInUse %v, want [%s] after UpdateStatusSoon", get(), a)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for cur := n.Current(); !slices.Contains(cur.Status.VolumesInUse, a); cur = n.Current() {
		if time.Now().After(deadline) {
			t.Fatalf("Current() volumesInUse %v", cur.Status.VolumesInUse)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
