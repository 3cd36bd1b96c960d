package cri

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestEventStreamFanOutAndDrop(t *testing.T) {
	var e eventStream
	if e.listening() {
		t.Fatal("listening with no subscriber")
	}
	fast, slow := e.subscribe(), e.subscribe()
	ev := func(id string) *runtimeapi.ContainerEventResponse {
		return &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT}
	}
	// The slow subscriber never reads: past its buffer, its events are
	// dropped and counted; the fast one still gets every event, and
	// publish never blocks.
	for i := 0; i < eventBuffer+5; i++ {
		e.publish(ev("c"))
		<-fast
	}
	if got := e.dropped.Load(); got != 5 {
		t.Errorf("dropped = %d, want 5", got)
	}
	if len(slow) != eventBuffer {
		t.Errorf("slow subscriber holds %d, want %d", len(slow), eventBuffer)
	}
	e.unsubscribe(slow)
	e.publish(ev("d"))
	if got := <-fast; got.ContainerId != "d" {
		t.Errorf("fast got %q", got.ContainerId)
	}
	if got := e.dropped.Load(); got != 5 {
		t.Errorf("an unsubscribed client still counts drops: %d", got)
	}
	e.unsubscribe(fast)
	if e.listening() {
		t.Error("listening after every client left")
	}
}
