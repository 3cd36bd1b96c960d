package agent

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// Container events (CRI GetContainerEvents), as the kubelet's EventedPLEG
// uses them: a runtime that streams them tells the agent at once when a
// container starts, stops or goes away, so the pod workers, which re-read
// the CRI every SyncPeriod (1 s) otherwise, only do so every
// eventedResyncPeriod as a safety net against a dropped event, and are
// woken by the events in between. A runtime without events (containerd
// 1.6 answers Unimplemented) or a broken stream falls back to the 1 s
// relist.
const (
	// eventedResyncPeriod is the workers' period while events flow. The
	// kubelet's evented relist is 300 s; the agent also recomputes
	// waiting reasons and messages on a sync, so it keeps it shorter.
	eventedResyncPeriod = 10 * time.Second
	// eventsSettle: a stream counts as up once it has stayed open this
	// long (a runtime without events fails the first Recv at once).
	eventsSettle   = 2 * time.Second
	eventsRetryMin = time.Second
	eventsRetryMax = 30 * time.Second
)

// eventsState is what the agent knows of the event stream.
type eventsState struct {
	mu        sync.Mutex
	connected time.Time // zero while down
}

// healthy says whether workers may rely on events at now.
func (e *eventsState) healthy(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.connected.IsZero() && now.Sub(e.connected) >= eventsSettle
}

func (e *eventsState) set(t time.Time) {
	e.mu.Lock()
	e.connected = t
	e.mu.Unlock()
}

// resyncPeriod is how long a worker waits between syncs with nothing to
// wake it.
func (a *Agent) resyncPeriod() time.Duration {
	if a.events.healthy(a.clock.Now()) {
		return max(a.syncPeriod, eventedResyncPeriod)
	}
	return a.syncPeriod
}

// watchEvents keeps a GetContainerEvents stream open until ctx ends,
// waking the worker of each event's pod.
func (a *Agent) watchEvents(ctx context.Context) {
	retry := eventsRetryMin
	for ctx.Err() == nil {
		ch := make(chan *runtimeapi.ContainerEventResponse, 256)
		done := make(chan error, 1)
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			done <- a.o.Runtime.GetContainerEvents(sctx, ch, func(runtimeapi.RuntimeService_GetContainerEventsClient) {
				a.events.set(a.clock.Now())
			})
		}()
		opened := a.clock.Now()
		err := a.consumeEvents(ctx, ch, done)
		cancel()
		a.events.set(time.Time{})
		if ctx.Err() != nil {
			return
		}
		// The stream ended: what happened meanwhile is only in a relist.
		a.kickAll()
		if a.clock.Now().Sub(opened) > eventsRetryMax {
			retry = eventsRetryMin // it had been up: retry soon
		}
		klog.V(2).InfoS("Container event stream ended; relisting every sync period until it is back", "err", err, "retryIn", retry)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(retry*2, eventsRetryMax)
	}
}

// consumeEvents wakes workers for each event until the stream ends.
func (a *Agent) consumeEvents(ctx context.Context, ch <-chan *runtimeapi.ContainerEventResponse, done <-chan error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			return err
		case ev := <-ch:
			a.onEvent(ev)
		}
	}
}

// onEvent drops the shared CRI list (it no longer says what is) and wakes
// the worker of the event's pod.
func (a *Agent) onEvent(ev *runtimeapi.ContainerEventResponse) {
	a.cri.invalidate()
	uid := types.UID(ev.GetPodSandboxStatus().GetMetadata().GetUid())
	a.mu.Lock()
	w := a.workers[uid]
	a.mu.Unlock()
	klog.V(4).InfoS("Container event", "type", ev.GetContainerEventType(), "containerID", ev.GetContainerId(), "podUID", uid, "worker", w != nil)
	if w != nil {
		w.kick()
	}
}

// kickAll wakes every worker.
func (a *Agent) kickAll() {
	a.cri.invalidate()
	a.mu.Lock()
	ws := make([]*worker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.kick()
	}
}
