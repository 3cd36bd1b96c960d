package cri

import (
	"sync"
	"sync/atomic"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// eventBuffer is how many events one subscriber may lag behind before
// events are dropped for it: containerd keeps 1000 too. A dropped event
// is not lost for good: the kubelet relists (EventedPLEG falls back to
// its generic relist when the stream breaks or lags).
const eventBuffer = 1000

// eventStream fans container events out to every GetContainerEvents
// client. Publishing never blocks the runtime: a subscriber whose buffer
// is full loses the event, and the loss is counted.
type eventStream struct {
	mu      sync.Mutex
	subs    map[chan *runtimeapi.ContainerEventResponse]struct{}
	dropped atomic.Uint64
}

func (e *eventStream) subscribe() chan *runtimeapi.ContainerEventResponse {
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBuffer)
	e.mu.Lock()
	if e.subs == nil {
		e.subs = map[chan *runtimeapi.ContainerEventResponse]struct{}{}
	}
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return ch
}

func (e *eventStream) unsubscribe(ch chan *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	delete(e.subs, ch)
	e.mu.Unlock()
}

func (e *eventStream) listening() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs) > 0
}

func (e *eventStream) publish(ev *runtimeapi.ContainerEventResponse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.subs {
		select {
		case ch <- ev:
		default:
			e.dropped.Add(1)
		}
	}
}

// EventsDropped counts events a slow GetContainerEvents client missed
// (peapod_cri_container_events_dropped_total).
func (s *Server) EventsDropped() uint64 { return s.events.dropped.Load() }

// publishEvent is the sandbox manager's event observer: it builds the
// response as the CRI defines it — the sandbox's status and the statuses
// of its containers at the time of the event — and hands it to every
// subscriber. Nothing is built while nobody listens.
func (s *Server) publishEvent(ev sandbox.Event) {
	if !s.events.listening() {
		return
	}
	resp := &runtimeapi.ContainerEventResponse{
		ContainerId:        ev.ContainerID,
		ContainerEventType: ev.Type,
		CreatedAt:          ev.At,
	}
	if sb, err := s.deps.Sandboxes.Sandbox(ev.SandboxID); err == nil {
		resp.PodSandboxStatus = sandboxStatus(sb)
		resp.ContainersStatuses = s.containerStatusesOf(ev.SandboxID)
	}
	s.events.publish(resp)
}

// containerStatusesOf are the statuses of every container of a sandbox.
func (s *Server) containerStatusesOf(sandboxID string) []*runtimeapi.ContainerStatus {
	var out []*runtimeapi.ContainerStatus
	for _, c := range s.deps.Sandboxes.Containers() {
		if rec := c.Record(); rec.SandboxID == sandboxID {
			out = append(out, containerStatus(c, rec))
		}
	}
	return out
}

// GetContainerEvents streams container and sandbox lifecycle events until
// the client goes away (the kubelet's EventedPLEG).
func (s *Server) GetContainerEvents(_ *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch := s.events.subscribe()
	defer s.events.unsubscribe(ch)
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-ch:
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
