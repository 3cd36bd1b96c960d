package kubeletapi

import (
	"encoding/json"
	"net/http"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// healthz answers "ok": the server is up and the request got through
// authentication and authorization (on :10250 the kubelet checks those for
// /healthz too).
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write([]byte("ok"))
}

// pods is GET /pods: the node's pods, as a v1 PodList.
func (s *Server) pods(w http.ResponseWriter, _ *http.Request) {
	list := s.o.Pods.Pods()
	if list == nil {
		list = &v1.PodList{}
	}
	out := *list
	out.TypeMeta.Kind, out.TypeMeta.APIVersion = "PodList", "v1"
	if out.Items == nil {
		out.Items = []v1.Pod{}
	}
	b, err := json.Marshal(&out)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(b); err != nil {
		klog.V(4).InfoS("Writing /pods failed", "err", err)
	}
}

// findPod is the pod namespace/name among the node's, or nil.
func (s *Server) findPod(namespace, name string) *v1.Pod {
	list := s.o.Pods.Pods()
	if list == nil {
		return nil
	}
	for i := range list.Items {
		if p := &list.Items[i]; p.Namespace == namespace && p.Name == name {
			return p
		}
	}
	return nil
}

// containerSpec is the container, init container or ephemeral container
// called name in pod, or nil.
func containerSpec(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; c.Name == name {
			return c
		}
	}
	for i := range pod.Spec.Containers {
		if c := &pod.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if c := &pod.Spec.EphemeralContainers[i]; c.Name == name {
			return (*v1.Container)(&c.EphemeralContainerCommon)
		}
	}
	return nil
}

// containerStatus is the status of the container called name in pod,
// looked up as the kubelet does: regular, then init, then ephemeral.
func containerStatus(pod *v1.Pod, name string) (*v1.ContainerStatus, bool) {
	for _, list := range [][]v1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i], true
			}
		}
	}
	return nil, false
}

// podFullName is the kubelet's name for a pod in messages: <name>_<namespace>.
func podFullName(pod *v1.Pod) string {
	return pod.Name + "_" + pod.Namespace
}
