package kubeletapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/proxy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// Exec, attach and port-forward, as the kubelet serves them: the runtime
// returns a streaming URL for the request, and the upgraded connection is
// proxied to it (the kubelet's only mode since streaming redirects were
// removed). The API server translates websocket clients to SPDY before
// it reaches a node that does not declare ExtendWebSocketsToKubelet, as
// the agent's node does not; a websocket request that arrives anyway is
// proxied unchanged (the runtime's streaming server speaks the older
// channel.k8s.io protocols).

const (
	// execCommandParam is the query parameter carrying exec's command,
	// repeated once per argument.
	execCommandParam = "command"
	// podUIDLabel is the CRI label with a sandbox's pod UID.
	podUIDLabel = "io.kubernetes.pod.uid"
)

// exec is /exec/{namespace}/{pod}[/{uid}]/{container}.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	s.containerStream(w, r, func(ctx context.Context, pod *v1.Pod, uid types.UID, container string, o *remotecommand.Options) (*url.URL, error) {
		return s.execURL(ctx, pod, uid, container, r.URL.Query()[execCommandParam], o)
	})
}

// attach is /attach/{namespace}/{pod}[/{uid}]/{container}.
func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	s.containerStream(w, r, s.attachURL)
}

// containerStream is exec's and attach's request: the stream options and
// the pod from the path, the runtime's streaming URL from streamURL, then
// the upgrade proxied there.
func (s *Server) containerStream(w http.ResponseWriter, r *http.Request,
	streamURL func(context.Context, *v1.Pod, types.UID, string, *remotecommand.Options) (*url.URL, error)) {
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pod := s.findPod(r.PathValue("namespace"), r.PathValue("pod"))
	if pod == nil {
		writeError(w, http.StatusNotFound, "pod does not exist")
		return
	}
	u, err := streamURL(r.Context(), pod, types.UID(r.PathValue("uid")), r.PathValue("container"), opts)
	if err != nil {
		_ = streaming.WriteError(err, w)
		return
	}
	proxyStream(w, r, u)
}

// portForward is /portForward/{namespace}/{pod}[/{uid}].
func (s *Server) portForward(w http.ResponseWriter, r *http.Request) {
	ports, err := forwardPorts(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pod := s.findPod(r.PathValue("namespace"), r.PathValue("pod"))
	if pod == nil {
		writeError(w, http.StatusNotFound, "pod does not exist")
		return
	}
	if uid := types.UID(r.PathValue("uid")); uid != "" && pod.UID != uid {
		writeError(w, http.StatusNotFound, "pod not found")
		return
	}
	u, err := s.portForwardURL(r.Context(), pod, ports)
	if err != nil {
		_ = streaming.WriteError(err, w)
		return
	}
	proxyStream(w, r, u)
}

// runningContainerID is the runtime id of pod's running container name:
// exec and attach need a running container, as the kubelet finds them
// among the runtime's running pods.
func runningContainerID(pod *v1.Pod, uid types.UID, name string) (string, bool) {
	if uid != "" && pod.UID != uid {
		return "", false
	}
	cs, ok := containerStatus(pod, name)
	if !ok || cs.State.Running == nil || cs.ContainerID == "" {
		return "", false
	}
	return runtimeID(cs.ContainerID), true
}

func (s *Server) execURL(ctx context.Context, pod *v1.Pod, uid types.UID, container string, cmd []string, o *remotecommand.Options) (*url.URL, error) {
	id, ok := runningContainerID(pod, uid, container)
	if !ok {
		return nil, fmt.Errorf("container not found (%q)", container)
	}
	resp, err := s.o.Runtime.Exec(ctx, &runtimeapi.ExecRequest{
		ContainerId: id,
		Cmd:         cmd,
		Tty:         o.TTY,
		Stdin:       o.Stdin,
		Stdout:      o.Stdout,
		Stderr:      o.Stderr,
	})
	if err != nil {
		return nil, err
	}
	return url.Parse(resp.GetUrl())
}

func (s *Server) attachURL(ctx context.Context, pod *v1.Pod, uid types.UID, container string, o *remotecommand.Options) (*url.URL, error) {
	full := podFullName(pod)
	id, ok := runningContainerID(pod, uid, container)
	if !ok {
		return nil, fmt.Errorf("container %s not found in pod %s", container, full)
	}
	// Whether the process has a terminal was decided when it started: the
	// spec's tty, not the request's.
	spec := containerSpec(pod, container)
	if spec == nil {
		return nil, fmt.Errorf("container %s not found in pod %s", container, full)
	}
	resp, err := s.o.Runtime.Attach(ctx, &runtimeapi.AttachRequest{
		ContainerId: id,
		Stdin:       o.Stdin,
		Stdout:      o.Stdout,
		Stderr:      o.Stderr,
		Tty:         spec.TTY,
	})
	if err != nil {
		return nil, err
	}
	return url.Parse(resp.GetUrl())
}

func (s *Server) portForwardURL(ctx context.Context, pod *v1.Pod, ports []int32) (*url.URL, error) {
	id, err := s.sandboxID(ctx, pod)
	if err != nil {
		return nil, err
	}
	resp, err := s.o.Runtime.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: id, Port: ports})
	if err != nil {
		return nil, err
	}
	return url.Parse(resp.GetUrl())
}

// sandboxID is pod's ready sandbox, the newest when there are several.
func (s *Server) sandboxID(ctx context.Context, pod *v1.Pod) (string, error) {
	desc := fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
	sbs, err := s.o.Runtime.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
		LabelSelector: map[string]string{podUIDLabel: string(pod.UID)},
	})
	if err != nil {
		return "", fmt.Errorf("failed to find sandboxID for pod %s: %v", desc, err)
	}
	if len(sbs) == 0 {
		return "", fmt.Errorf("failed to find sandboxID for pod %s", desc)
	}
	sort.Slice(sbs, func(i, j int) bool {
		if sbs[i].CreatedAt != sbs[j].CreatedAt {
			return sbs[i].CreatedAt > sbs[j].CreatedAt
		}
		return sbs[i].Id < sbs[j].Id
	})
	return sbs[0].Id, nil
}

// forwardPorts are the ports of a port-forward request: the "port" query
// parameters (each may list several, comma-separated). A websocket client
// must name them (portforward.NewV4Options); an SPDY client names each
// port again on its streams, so for it they are optional.
func forwardPorts(r *http.Request) ([]int32, error) {
	if wsstream.IsWebSocketRequest(r) {
		o, err := portforward.NewV4Options(r)
		if err != nil {
			return nil, err
		}
		return o.Ports, nil
	}
	var ports []int32
	for _, s := range r.URL.Query()[portforward.PortHeader] {
		if s == "" {
			return nil, fmt.Errorf("query parameter %q cannot be empty", portforward.PortHeader)
		}
		for _, p := range strings.Split(s, ",") {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return nil, fmt.Errorf("unable to parse %q as a port: %v", s, err)
			}
			if n < 1 {
				return nil, fmt.Errorf("port %q must be > 0", s)
			}
			ports = append(ports, int32(n))
		}
	}
	return ports, nil
}

// proxyStream proxies the upgrade request r to the runtime's streaming URL
// u; a request that is no upgrade gets 400.
func proxyStream(w http.ResponseWriter, r *http.Request, u *url.URL) {
	h := proxy.NewUpgradeAwareHandler(u, nil /*transport*/, false /*wrapTransport*/, true /*upgradeRequired*/, proxyResponder{})
	h.ServeHTTP(w, r)
}

type proxyResponder struct{}

func (proxyResponder) Error(w http.ResponseWriter, r *http.Request, err error) {
	klog.ErrorS(err, "Proxying a stream to the runtime failed", "path", r.URL.Path)
	http.Error(w, err.Error(), http.StatusInternalServerError)
}
