package sandbox

import (
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodStarted(t *testing.T) {
	const (
		created = runtimeapi.ContainerState_CONTAINER_CREATED
		running = runtimeapi.ContainerState_CONTAINER_RUNNING
		exited  = runtimeapi.ContainerState_CONTAINER_EXITED
		unknown = runtimeapi.ContainerState_CONTAINER_UNKNOWN
	)
	for _, tc := range []struct {
		name string
		cs   []podStartContainer
		want bool
	}{
		{"no containers", nil, false},
		{"one running", []podStartContainer{{state: running}}, true},
		{"all running", []podStartContainer{{state: running}, {state: running}}, true},
		{"one still created", []podStartContainer{{state: running}, {state: created}}, false},
		{"completed and running", []podStartContainer{{state: exited}, {state: running}}, true},
		{"all completed", []podStartContainer{{state: exited}}, false},
		{"one failed", []podStartContainer{{state: exited, exitCode: 1}, {state: running}}, false},
		{"a restart", []podStartContainer{{state: running, attempt: 1}}, false},
		{"unknown", []podStartContainer{{state: unknown}, {state: running}}, false},
	} {
		if got := podStarted(tc.cs); got != tc.want {
			t.Errorf("%s: podStarted = %v, want %v", tc.name, got, tc.want)
		}
	}
}
