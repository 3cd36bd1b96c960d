package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	namespace = "default"
	// image is the busybox the cluster tests use; a tag other than latest,
	// so IfNotPresent really means no pull once the warm-up pod ran.
	image = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	// httpdScript serves a file on 8080 for the readiness probe. sh stays
	// PID 1 with a TERM trap: busybox httpd as PID 1 would ignore SIGTERM
	// and every delete would wait out the kubelet's 2 s minimum grace
	// period rather than measure the kubelet and the runtime.
	httpdScript = `mkdir -p /www && echo ok >/www/index.html; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait`
)

// deployment is the workload: busybox httpd with an HTTP readiness probe
// every second, replicas pods.
func deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	grace := int64(1)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name:            "httpd",
						Image:           image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command:         []string{"sh", "-c", httpdScript},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/", Port: intstr.FromInt32(8080),
							}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func deploymentPath(name string) string {
	return "/apis/apps/v1/namespaces/" + namespace + "/deployments/" + name
}

func (a *api) createDeployment(ctx context.Context, d *appsv1.Deployment) error {
	return a.do(ctx, http.MethodPost, "/apis/apps/v1/namespaces/"+namespace+"/deployments", "application/json", d, nil)
}

// scale sets the Deployment's replicas through its scale subresource, as
// kubectl scale does.
func (a *api) scale(ctx context.Context, name string, replicas int) error {
	patch := map[string]any{"spec": map[string]any{"replicas": replicas}}
	return a.do(ctx, http.MethodPatch, deploymentPath(name)+"/scale", "application/merge-patch+json", patch, nil)
}

// deleteDeployment deletes it as kubectl delete does: background
// propagation, the garbage collector then deletes its ReplicaSet and pods.
func (a *api) deleteDeployment(ctx context.Context, name string) error {
	opts := map[string]any{"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
	return a.do(ctx, http.MethodDelete, deploymentPath(name), "application/json", opts, nil)
}

// deploymentReady says whether the Deployment's controller has seen its
// latest spec and counts exactly n replicas, all Ready.
func (a *api) deploymentReady(ctx context.Context, name string, n int) (bool, string, error) {
	var d appsv1.Deployment
	if err := a.do(ctx, http.MethodGet, deploymentPath(name), "", nil, &d); err != nil {
		return false, "", err
	}
	s := d.Status
	ok := s.ObservedGeneration >= d.Generation && int(s.Replicas) == n && int(s.ReadyReplicas) == n && int(s.UpdatedReplicas) == n
	return ok, fmt.Sprintf("replicas %d, ready %d, updated %d (want %d)", s.Replicas, s.ReadyReplicas, s.UpdatedReplicas, n), nil
}

// pods lists the UIDs of the workload's pods in the API server (also
// those terminating).
func (a *api) pods(ctx context.Context, app string, limit int) ([]string, error) {
	q := url.Values{"labelSelector": {"app=" + app}}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var list corev1.PodList
	if err := a.do(ctx, http.MethodGet, "/api/v1/namespaces/"+namespace+"/pods?"+q.Encode(), "", nil, &list); err != nil {
		return nil, err
	}
	var uids []string
	for _, p := range list.Items {
		uids = append(uids, string(p.UID))
	}
	return uids, nil
}

// poll calls cond every `every` until it says done, and returns how long
// that took from start. A cond error is remembered, not fatal (the API
// server may hiccup under load): the time-out error names the last one.
func poll(ctx context.Context, start time.Time, every, timeout time.Duration, what string, cond func(context.Context) (bool, string, error)) (time.Duration, error) {
	deadline := start.Add(timeout)
	var last string
	for {
		done, state, err := cond(ctx)
		if err == nil && done {
			return time.Since(start), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = state
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("%s: not within %s (last: %s)", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(every):
		}
	}
}
