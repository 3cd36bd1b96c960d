package sandbox

import (
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Container and sandbox lifecycle events
//
// Every place that changes a container's or a sandbox's state emits one
// event after the change is recorded: created, started, stopped (an exit,
// whoever caused it), deleted. A sandbox's events carry its own ID as the
// container ID, as containerd's do. The observer (cri/'s event stream for
// GetContainerEvents) is called synchronously, never under the manager's
// map lock, so it may read records; it must not block.

// Event is one state change.
type Event struct {
	Type        runtimeapi.ContainerEventType
	ContainerID string // the sandbox's ID for a sandbox event
	SandboxID   string
	// Sandbox: the event is about the sandbox itself.
	Sandbox bool
	// At is when it happened, in Unix nanoseconds.
	At int64
}

var timeNowNano = func() int64 { return time.Now().UnixNano() }

type eventHook struct {
	mu       sync.RWMutex
	observer func(Event)
}

// OnEvent registers fn, called for every event. One observer; a later call
// replaces it.
func (m *Manager) OnEvent(fn func(Event)) {
	m.events.mu.Lock()
	m.events.observer = fn
	m.events.mu.Unlock()
}

func (m *Manager) emit(ev Event) {
	m.events.mu.RLock()
	fn := m.events.observer
	m.events.mu.RUnlock()
	if fn == nil {
		return
	}
	if ev.At == 0 {
		ev.At = timeNowNano()
	}
	fn(ev)
}

func (m *Manager) emitContainer(t runtimeapi.ContainerEventType, c *Container) {
	rec := c.Record()
	m.emit(Event{Type: t, ContainerID: rec.ID, SandboxID: rec.SandboxID})
}

func (m *Manager) emitSandbox(t runtimeapi.ContainerEventType, id string) {
	m.emit(Event{Type: t, ContainerID: id, SandboxID: id, Sandbox: true})
}
