package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerEvents: GetContainerEvents streams every lifecycle change
// of a sandbox and its containers (created, started, stopped, deleted;
// an exit the container made itself included), each with the sandbox's
// status and its containers' statuses, as the kubelet's EventedPLEG reads
// them; PodSandboxStatus carries the containers' statuses and a timestamp.
func TestContainerEvents(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	ctx := d.ctx()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := d.rt.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatalf("GetContainerEvents: %v", err)
	}
	events := make(chan *runtimeapi.ContainerEventResponse, 100)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	// The server registers the subscriber when the stream's first message
	// is processed; give it that moment before anything happens.
	time.Sleep(200 * time.Millisecond)

	cfg := podConfig(d, "events")
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	pod := run.PodSandboxId
	cc := containerConfig("quick", "sh", "-c", "sleep 0.3; exit 3")
	cr, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cid := cr.ContainerId
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_EXITED)

	st, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod})
	if err != nil {
		t.Fatal(err)
	}
	if st.Timestamp == 0 || len(st.ContainersStatuses) != 1 || st.ContainersStatuses[0].Id != cid || st.ContainersStatuses[0].ExitCode != 3 {
		t.Errorf("PodSandboxStatus: timestamp %d, containers %v", st.Timestamp, st.ContainersStatuses)
	}

	if _, err := d.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cid}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		t.Fatal(err)
	}

	short := func(t runtimeapi.ContainerEventType) string {
		return strings.TrimSuffix(strings.TrimPrefix(t.String(), "CONTAINER_"), "_EVENT")
	}
	want := []string{
		"sandbox CREATED", "sandbox STARTED",
		"container CREATED", "container STARTED", "container STOPPED", "container DELETED",
		"sandbox STOPPED", "sandbox DELETED",
	}
	var got []string
	var last int64
	timeout := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended after %v", got)
			}
			who := "other"
			switch ev.ContainerId {
			case pod:
				who = "sandbox"
			case cid:
				who = "container"
			}
			got = append(got, who+" "+short(ev.ContainerEventType))
			if ev.CreatedAt < last {
				t.Errorf("event %d goes back in time", len(got))
			}
			last = ev.CreatedAt
			// Statuses as of the event: the sandbox's (until it is gone)
			// and, for the container's events, the container's own state.
			switch ev.ContainerEventType {
			case runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT:
			default:
				if ev.PodSandboxStatus.GetId() != pod {
					t.Errorf("%s: sandbox status %v", got[len(got)-1], ev.PodSandboxStatus)
				}
			}
			if who == "container" && ev.ContainerEventType != runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
				var cs *runtimeapi.ContainerStatus
				for _, s := range ev.ContainersStatuses {
					if s.Id == cid {
						cs = s
					}
				}
				wantState := map[runtimeapi.ContainerEventType]runtimeapi.ContainerState{
					runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT: runtimeapi.ContainerState_CONTAINER_CREATED,
					runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT: runtimeapi.ContainerState_CONTAINER_RUNNING,
					runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT: runtimeapi.ContainerState_CONTAINER_EXITED,
				}[ev.ContainerEventType]
				if cs == nil || cs.State != wantState {
					t.Errorf("%s: container status %v, want state %s", got[len(got)-1], cs, wantState)
				}
				if ev.ContainerEventType == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT && cs != nil && cs.ExitCode != 3 {
					t.Errorf("STOPPED event: exit code %d, want 3", cs.ExitCode)
				}
			}
		case <-timeout:
			t.Fatalf("events so far %v, want %v", got, want)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events\n got %v\nwant %v", got, want)
	}
	// Nothing more: one event per change.
	select {
	case ev := <-events:
		t.Errorf("extra event %s for %s", ev.ContainerEventType, ev.ContainerId)
	case <-time.After(500 * time.Millisecond):
	}
}
