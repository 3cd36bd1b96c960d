package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Handler serves GET /pods (also GET / when mounted under a prefix) as a
// JSON v1.PodList.
func (a *Agent) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		switch strings.TrimSuffix(r.URL.Path, "/") {
		case "", "/pods":
		default:
			http.NotFound(w, r)
			return
		}
		// `peapod pods` asks for the table: the runtime binary links no
		// Kubernetes API types to render it itself.
		if r.URL.Query().Get("format") == "table" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_ = FormatTable(w, a.Pods())
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Pods())
	})
}

// FormatTable prints list as `kubectl get pods -A -o wide` does its first
// columns: NAMESPACE NAME READY STATUS RESTARTS AGE IP.
func FormatTable(w io.Writer, list *v1.PodList) error {
	return formatTable(w, list, time.Now())
}

func formatTable(w io.Writer, list *v1.PodList, now time.Time) error {
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tREADY\tSTATUS\tRESTARTS\tAGE\tIP")
	for i := range list.Items {
		p := &list.Items[i]
		ready, status, restarts := podSummary(p, now)
		age := "<unknown>"
		if !p.CreationTimestamp.IsZero() {
			age = duration.HumanDuration(now.Sub(p.CreationTimestamp.Time))
		}
		ip := p.Status.PodIP
		if ip == "" {
			ip = "<none>"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, ready, status, restarts, age, ip)
	}
	return tw.Flush()
}

// podSummary computes READY, STATUS and RESTARTS as kubectl's printPod.
func podSummary(pod *v1.Pod, now time.Time) (ready, status, restarts string) {
	total := len(pod.Spec.Containers)
	readyN := 0
	restartN := 0
	var lastRestart time.Time
	reason := string(pod.Status.Phase)
	if pod.Status.Reason != "" {
		reason = pod.Status.Reason
	}
	noteRestart := func(cs *v1.ContainerStatus) {
		restartN += int(cs.RestartCount)
		if t := cs.LastTerminationState.Terminated; t != nil && t.FinishedAt.Time.After(lastRestart) {
			lastRestart = t.FinishedAt.Time
		}
	}
	sidecars := map[string]bool{}
	for i := range pod.Spec.InitContainers {
		if isSidecar(&pod.Spec.InitContainers[i]) {
			sidecars[pod.Spec.InitContainers[i].Name] = true
			total++
		}
	}
	initializing := false
	for i := range pod.Status.InitContainerStatuses {
		cs := &pod.Status.InitContainerStatuses[i]
		noteRestart(cs)
		if sidecars[cs.Name] {
			if cs.Ready {
				readyN++
			}
			if cs.Started != nil && *cs.Started {
				continue
			}
		}
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			continue
		case cs.State.Terminated != nil:
			if cs.State.Terminated.Reason == "" {
				if cs.State.Terminated.Signal != 0 {
					reason = fmt.Sprintf("Init:Signal:%d", cs.State.Terminated.Signal)
				} else {
					reason = fmt.Sprintf("Init:ExitCode:%d", cs.State.Terminated.ExitCode)
				}
			} else {
				reason = "Init:" + cs.State.Terminated.Reason
			}
			initializing = true
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + cs.State.Waiting.Reason
			initializing = true
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(pod.Spec.InitContainers))
			initializing = true
		}
		break
	}
	if !initializing || pod.Status.Reason != "" {
		if pod.Status.Reason != "" {
			reason = pod.Status.Reason
		}
		hasRunning := false
		for i := len(pod.Status.ContainerStatuses) - 1; i >= 0; i-- {
			cs := &pod.Status.ContainerStatuses[i]
			noteRestart(cs)
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
				reason = cs.State.Waiting.Reason
			case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
				reason = cs.State.Terminated.Reason
			case cs.State.Terminated != nil:
				if cs.State.Terminated.Signal != 0 {
					reason = fmt.Sprintf("Signal:%d", cs.State.Terminated.Signal)
				} else {
					reason = fmt.Sprintf("ExitCode:%d", cs.State.Terminated.ExitCode)
				}
			case cs.Ready && cs.State.Running != nil:
				hasRunning = true
				readyN++
			}
		}
		if reason == "Completed" && hasRunning {
			reason = "Running"
			for _, c := range pod.Status.Conditions {
				if c.Type == v1.PodReady && c.Status != v1.ConditionTrue {
					reason = "NotReady"
				}
			}
		}
	} else {
		for i := range pod.Status.ContainerStatuses {
			noteRestart(&pod.Status.ContainerStatuses[i])
		}
	}
	if pod.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	restarts = fmt.Sprint(restartN)
	if restartN > 0 && !lastRestart.IsZero() {
		restarts = fmt.Sprintf("%d (%s ago)", restartN, duration.HumanDuration(now.Sub(lastRestart)))
	}
	if reason == "" {
		reason = "Unknown"
	}
	return fmt.Sprintf("%d/%d", readyN, total), reason, restarts
}
