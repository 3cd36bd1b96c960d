package kubeletapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-client/pkg/logs"
	"k8s.io/klog/v2"
)

// containerLogs is GET /containerLogs/{namespace}/{pod}/{container}, what
// the API server calls for pods/log: the kubelet's getContainerLogs and
// GetKubeletContainerLogs, status codes and messages included.
func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	namespace, name, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := decodeLogOptions(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, `{"message": "Unable to decode query."}`)
		return
	}
	if errs := validateLogOptions(opts); len(errs) > 0 {
		klog.V(4).InfoS("Invalid log options", "errors", errs)
		writeError(w, http.StatusUnprocessableEntity, `{"message": "Invalid request."}`)
		return
	}
	// PodLogsQuerySplitStreams is alpha and off in the kubelet: one stream
	// carries both.
	if opts.Stream != nil && *opts.Stream != v1.LogStreamAll {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unable to return the given log stream: %q. Please enable PodLogsQuerySplitStreams feature gate in kubelet", *opts.Stream))
		return
	}
	pod := s.findPod(namespace, name)
	if pod == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("pod %q does not exist", name))
		return
	}
	if containerSpec(pod, container) == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("container %q not found in pod %q", container, name))
		return
	}
	target, err := logTarget(pod, container, opts.Previous)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	// From here on the response is a stream: the kubelet sends its header
	// with a zero-byte write before reading, so a later error ends up in
	// the body of a 200.
	fw := flushWriter{w: w, rc: http.NewResponseController(w)}
	if _, err := fw.Write(nil); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.stopping, cancel)
	defer stop()
	if err := s.readContainerLogs(ctx, pod, target, opts, fw, fw); err != nil && ctx.Err() == nil {
		_, _ = io.WriteString(w, err.Error())
	}
}

// decodeLogOptions reads v1.PodLogOptions from a query as the kubelet's
// parameter codec does (generated url.Values conversion): the first value
// of each parameter counts, a bool is true unless "0" or "false", and
// "tail" is the old name of tailLines ("all": no limit).
func decodeLogOptions(q url.Values) (*v1.PodLogOptions, error) {
	if tail := q.Get("tail"); tail != "" {
		q = cloneValues(q)
		q["tailLines"] = []string{tail}
		if tail == "all" {
			delete(q, "tailLines")
		}
	}
	o := &v1.PodLogOptions{}
	first := func(k string) (string, bool) {
		v, ok := q[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	boolean := func(k string) bool {
		v, ok := first(k)
		return ok && v != "0" && !strings.EqualFold(v, "false")
	}
	integer := func(k string) (*int64, error) {
		v, ok := first(k)
		if !ok {
			return nil, nil
		}
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, err
		}
		return &i, nil
	}
	var err error
	o.Follow = boolean("follow")
	o.Previous = boolean("previous")
	o.Timestamps = boolean("timestamps")
	o.InsecureSkipTLSVerifyBackend = boolean("insecureSkipTLSVerifyBackend")
	if o.SinceSeconds, err = integer("sinceSeconds"); err != nil {
		return nil, err
	}
	if o.TailLines, err = integer("tailLines"); err != nil {
		return nil, err
	}
	if o.LimitBytes, err = integer("limitBytes"); err != nil {
		return nil, err
	}
	if v, ok := first("sinceTime"); ok {
		t := &metav1.Time{}
		if err := t.UnmarshalQueryParameter(v); err != nil {
			return nil, err
		}
		o.SinceTime = t
	}
	if v, ok := first("stream"); ok {
		o.Stream = &v
	}
	return o, nil
}

func cloneValues(q url.Values) url.Values {
	c := make(url.Values, len(q))
	for k, v := range q {
		c[k] = v
	}
	return c
}

// validateLogOptions is the API's ValidatePodLogOptions.
func validateLogOptions(o *v1.PodLogOptions) []string {
	var errs []string
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, "tailLines: must be greater than or equal to 0")
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, "limitBytes: must be greater than 0")
	}
	switch {
	case o.SinceSeconds != nil && o.SinceTime != nil:
		errs = append(errs, "at most one of `sinceTime` or `sinceSeconds` may be specified")
	case o.SinceSeconds != nil && *o.SinceSeconds < 1:
		errs = append(errs, "sinceSeconds: must be greater than 0")
	}
	if o.Stream != nil {
		switch *o.Stream {
		case v1.LogStreamStdout, v1.LogStreamStderr, v1.LogStreamAll:
		default:
			errs = append(errs, fmt.Sprintf("stream: Unsupported value: %q", *o.Stream))
		}
		if *o.Stream != v1.LogStreamAll && o.TailLines != nil {
			errs = append(errs, "`tailLines` and specific `stream` are mutually exclusive for now")
		}
	}
	return errs
}

// logContainer is the container instance whose log to read.
type logContainer struct {
	name string
	// fullID is "<runtime>://<id>" as in the pod status, id the runtime's.
	fullID, id string
	// attempt is the instance's restart count: its log is
	// <LogDir>/<name>/<attempt>.log.
	attempt int32
}

// logTarget picks the container instance to read, as the kubelet's
// validateContainerLogStatus does: with previous, the last terminated
// one; else the running one, else the one that terminated last.
func logTarget(pod *v1.Pod, container string, previous bool) (logContainer, error) {
	cs, ok := containerStatus(pod, container)
	if !ok {
		return logContainer{}, fmt.Errorf("container %q in pod %q is not available", container, pod.Name)
	}
	last := cs.LastTerminationState.Terminated
	waiting, running, terminated := cs.State.Waiting, cs.State.Running, cs.State.Terminated
	var fullID string
	switch {
	case previous:
		if last == nil || last.ContainerID == "" {
			return logContainer{}, fmt.Errorf("previous terminated container %q in pod %q not found", container, pod.Name)
		}
		fullID = last.ContainerID
	case running != nil:
		fullID = cs.ContainerID
	case terminated != nil:
		// When the next container did not start, terminated.ContainerID is
		// empty: the last termination has the logs.
		switch {
		case terminated.ContainerID != "":
			fullID = terminated.ContainerID
		case last != nil && last.ContainerID != "":
			fullID = last.ContainerID
		default:
			return logContainer{}, fmt.Errorf("container %q in pod %q is terminated", container, pod.Name)
		}
	case last != nil:
		if last.ContainerID == "" {
			return logContainer{}, fmt.Errorf("container %q in pod %q is terminated", container, pod.Name)
		}
		fullID = last.ContainerID
	case waiting != nil:
		switch waiting.Reason {
		case "ErrImagePull":
			return logContainer{}, fmt.Errorf("container %q in pod %q is waiting to start: image can't be pulled", container, pod.Name)
		case "ImagePullBackOff":
			return logContainer{}, fmt.Errorf("container %q in pod %q is waiting to start: trying and failing to pull image", container, pod.Name)
		default:
			return logContainer{}, fmt.Errorf("container %q in pod %q is waiting to start: %v", container, pod.Name, waiting.Reason)
		}
	default:
		return logContainer{}, fmt.Errorf("container %q in pod %q is waiting to start - no logs yet", container, pod.Name)
	}
	t := logContainer{name: container, fullID: fullID, id: runtimeID(fullID), attempt: cs.RestartCount}
	if fullID != cs.ContainerID && t.attempt > 0 {
		// The one before the newest.
		t.attempt--
	}
	return t, nil
}

// runtimeID is the runtime's id in a status containerID "<runtime>://<id>".
func runtimeID(containerID string) string {
	if _, id, ok := strings.Cut(containerID, "://"); ok {
		return id
	}
	return containerID
}

// readContainerLogs copies the log of t to stdout and stderr. The log file
// is where the runtime says (ContainerStatus log_path, as the kubelet
// reads it); for a container the runtime no longer knows, it is where the
// agent has it written, <LogDir>/<container>/<attempt>.log, and not
// followed: it has exited.
func (s *Server) readContainerLogs(ctx context.Context, pod *v1.Pod, t logContainer, o *v1.PodLogOptions, stdout, stderr io.Writer) error {
	path := ""
	follow := o.Follow
	if resp, err := s.o.Runtime.ContainerStatus(ctx, t.id, false); err == nil && resp.GetStatus() != nil {
		path = resp.GetStatus().GetLogPath()
		if path != "" && !filepath.IsAbs(path) {
			path = filepath.Join(s.o.Pods.LogDir(pod), path)
		}
	} else if err != nil {
		klog.V(4).InfoS("Container status failed; looking for the log file in the pod's log directory", "containerID", t.fullID, "err", err)
	}
	if path == "" {
		path = filepath.Join(s.o.Pods.LogDir(pod), t.name, fmt.Sprintf("%d.log", t.attempt))
		follow = false
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("unable to retrieve container logs for %v", t.fullID)
		}
	}
	lo := criLogOptions(o, time.Now())
	lo.Follow = follow
	return logs.ReadLogs(ctx, path, t.id, lo, s.o.Runtime, stdout, stderr)
}

// criLogOptions is the kubelet's conversion of the API's log options: the
// later of sinceSeconds and sinceTime wins.
func criLogOptions(o *v1.PodLogOptions, now time.Time) *logs.LogOptions {
	lo := &logs.LogOptions{
		TailLines:  o.TailLines,
		LimitBytes: o.LimitBytes,
		Follow:     o.Follow,
		Timestamp:  o.Timestamps,
	}
	if o.SinceSeconds != nil {
		lo.Since = now.Add(-time.Duration(*o.SinceSeconds) * time.Second)
	}
	if o.SinceTime != nil && o.SinceTime.After(lo.Since) {
		lo.Since = o.SinceTime.Time
	}
	return lo
}

// flushWriter sends each write to the client at once, for followed logs.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	_ = f.rc.Flush()
	return n, nil
}
