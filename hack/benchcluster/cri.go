package main

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandboxWatch asks the node's runtime, over one connection, about the
// sandboxes of a set of pods.
type sandboxWatch struct {
	conn *grpc.ClientConn
	rt   runtimeapi.RuntimeServiceClient
	uids map[string]bool
	// calls is how many ListPodSandbox calls it made: the runtime's own
	// count of CRI calls holds them too.
	calls int
}

func newSandboxWatch(endpoint string, uids []string) (*sandboxWatch, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	w := &sandboxWatch{conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), uids: map[string]bool{}}
	for _, u := range uids {
		w.uids[u] = true
	}
	return w, nil
}

func (w *sandboxWatch) close() { w.conn.Close() }

// count is how many sandboxes of the pods the runtime lists, and how many
// of those are still ready (not stopped).
func (w *sandboxWatch) count(ctx context.Context) (total, ready int, err error) {
	w.calls++
	list, err := w.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return 0, 0, err
	}
	for _, s := range list.Items {
		if !w.uids[s.GetMetadata().GetUid()] {
			continue
		}
		total++
		if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready++
		}
	}
	return total, ready, nil
}
