package kubeletapi

import (
	"context"
	"net/http"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	criapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime is the CRI calls the server makes; the rest of the
// interface is nil and panics if called.
type fakeRuntime struct {
	criapi.RuntimeService

	mu         sync.Mutex
	containers map[string]*runtimeapi.ContainerStatus // by id
	sandboxes  []*runtimeapi.PodSandbox
	streamURL  string
	streamErr  error

	exec        *runtimeapi.ExecRequest
	attach      *runtimeapi.AttachRequest
	portForward *runtimeapi.PortForwardRequest
	sbFilter    *runtimeapi.PodSandboxFilter
}

func (f *fakeRuntime) ContainerStatus(_ context.Context, id string, _ bool) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %q not found", id)
	}
	return &runtimeapi.ContainerStatusResponse{Status: proto.Clone(c).(*runtimeapi.ContainerStatus)}, nil
}

func (f *fakeRuntime) setState(id string, st runtimeapi.ContainerState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id].State = st
}

func (f *fakeRuntime) Exec(_ context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = r
	if f.streamErr != nil {
		return nil, f.streamErr
	}
	return &runtimeapi.ExecResponse{Url: f.streamURL + "/exec/tok"}, nil
}

func (f *fakeRuntime) Attach(_ context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attach = r
	if f.streamErr != nil {
		return nil, f.streamErr
	}
	return &runtimeapi.AttachResponse{Url: f.streamURL + "/attach/tok"}, nil
}

func (f *fakeRuntime) PortForward(_ context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.portForward = r
	if f.streamErr != nil {
		return nil, f.streamErr
	}
	return &runtimeapi.PortForwardResponse{Url: f.streamURL + "/portforward/tok"}, nil
}

// ListPodSandbox filters as a runtime does: state and labels.
func (f *fakeRuntime) ListPodSandbox(_ context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sbFilter = filter
	var out []*runtimeapi.PodSandbox
next:
	for _, sb := range f.sandboxes {
		if st := filter.GetState(); st != nil && sb.State != st.State {
			continue
		}
		for k, v := range filter.GetLabelSelector() {
			if sb.Labels[k] != v {
				continue next
			}
		}
		out = append(out, sb)
	}
	return out, nil
}

// fakePods is a PodSource.
type fakePods struct {
	mu     sync.Mutex
	pods   []v1.Pod
	logDir string
}

func (p *fakePods) Pods() *v1.PodList {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &v1.PodList{Items: append([]v1.Pod(nil), p.pods...)}
}

func (p *fakePods) LogDir(pod *v1.Pod) string {
	return p.logDir + "/" + pod.Namespace + "_" + pod.Name + "_" + string(pod.UID)
}

// allowAll authenticates everyone as one user and allows everything.
type allowAll struct{}

func (allowAll) authenticate(*http.Request) (*userInfo, bool, error) {
	return &userInfo{Name: "tester", Groups: []string{groupAllAuthenticated}}, true, nil
}

func (allowAll) authorize(context.Context, attributes) (decision, string, error) {
	return decisionAllow, "", nil
}

// newTestServer is a server with authentication and authorization
// stubbed out.
func newTestServer(rt *fakeRuntime, pods *fakePods, handlers map[string]http.Handler) (*Server, error) {
	return newServer(Options{NodeName: "node-a", Runtime: rt, Pods: pods, Handlers: handlers}, nil, allowAll{}, allowAll{})
}
