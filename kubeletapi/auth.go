package kubeletapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"k8s.io/klog/v2"
)

// userInfo is who a request comes from, as an authenticator found it.
type userInfo struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// authenticator identifies the user of a request. ok=false with a nil
// error: the request carries no credentials this authenticator handles.
type authenticator interface {
	authenticate(r *http.Request) (u *userInfo, ok bool, err error)
}

// decision is an authorizer's answer.
type decision int

const (
	decisionNoOpinion decision = iota
	decisionAllow
	decisionDeny
)

// attributes is what an authorizer decides on: always a resource request
// on the node object (apiVersion v1, resource nodes), like the kubelet's.
type attributes struct {
	User        *userInfo
	Verb        string
	Resource    string
	Subresource string
	Name        string
	Path        string
}

// authorizer decides whether a user may do what attributes describe.
type authorizer interface {
	authorize(ctx context.Context, a attributes) (d decision, reason string, err error)
}

// Paths whose requests get a specific subresource rather than "proxy"
// (the kubelet's pkg/kubelet/server constants).
const (
	statsPath       = "/stats/"
	metricsPath     = "/metrics"
	logsPath        = "/logs/"
	checkpointPath  = "/checkpoint/"
	statuszPath     = "/statusz"
	flagzPath       = "/flagz"
	allocatedPods   = "/allocatedPods"
	podsPath        = "/pods"
	runningPodsPath = "/runningpods/"
	healthzPath     = "/healthz"
	configzPath     = "/configz"
)

// isSubpath reports whether subpath is path or lies below it.
func isSubpath(subpath, path string) bool {
	path = strings.TrimSuffix(path, "/")
	return subpath == path || (strings.HasPrefix(subpath, path) && subpath[len(path)] == '/')
}

// apiVerb maps an HTTP method to the API verb authorized for it.
func apiVerb(method string) string {
	switch method {
	case http.MethodPost:
		return "create"
	case http.MethodGet:
		return "get"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return ""
}

// requestAttributes is the kubelet's nodeAuthorizerAttributesGetter with
// KubeletFineGrainedAuthz (GA and locked on since 1.36): the attributes to
// try, in order; the request is allowed when any of them is. Every request
// is verb (from the method) on nodes/<nodeName>; the subresource is
//
//	/stats/*                  stats
//	/metrics, /metrics/*      metrics
//	/logs/*                   log
//	/checkpoint/*             checkpoint
//	/statusz                  statusz
//	/flagz                    configz
//	/pods, /allocatedPods,
//	/runningpods/             pods, then proxy
//	/healthz, /healthz/*      healthz, then proxy
//	/configz                  configz, then proxy
//	anything else             proxy   (exec, attach, portForward, containerLogs…)
//
// The streaming endpoints are no exception: their verb comes from the
// method as well, so a POST exec needs create on nodes/proxy.
func requestAttributes(nodeName string, u *userInfo, r *http.Request) []attributes {
	path := r.URL.Path
	var subresources []string
	switch {
	case isSubpath(path, allocatedPods), isSubpath(path, podsPath):
		subresources = append(subresources, "pods")
	case isSubpath(path, healthzPath):
		subresources = append(subresources, "healthz")
	case isSubpath(path, configzPath):
		subresources = append(subresources, "configz")
	case isSubpath(path, runningPodsPath):
		subresources = append(subresources, "pods")
	}
	switch {
	case isSubpath(path, statsPath):
		subresources = append(subresources, "stats")
	case isSubpath(path, metricsPath):
		subresources = append(subresources, "metrics")
	case isSubpath(path, logsPath):
		// "log" to match the other log subresources (pods/log).
		subresources = append(subresources, "log")
	case isSubpath(path, checkpointPath):
		subresources = append(subresources, "checkpoint")
	case isSubpath(path, statuszPath):
		subresources = append(subresources, "statusz")
	case isSubpath(path, flagzPath):
		subresources = append(subresources, "configz")
	default:
		subresources = append(subresources, "proxy")
	}
	attrs := make([]attributes, 0, len(subresources))
	for _, sub := range subresources {
		attrs = append(attrs, attributes{
			User:        u,
			Verb:        apiVerb(r.Method),
			Resource:    "nodes",
			Subresource: sub,
			Name:        nodeName,
			Path:        path,
		})
	}
	return attrs
}

// withAuth puts authentication and authorization in front of next, as the
// kubelet's auth filter does on :10250 for every path (/healthz included,
// and unknown paths too: they 404 only once authorized).
func withAuth(nodeName string, authn authenticator, authz authorizer, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok, err := authn.authenticate(r)
		if err != nil {
			klog.V(2).InfoS("Unable to authenticate the request", "err", err, "path", r.URL.Path, "remote", r.RemoteAddr)
			writeError(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		if !ok {
			writeError(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
		attrs := requestAttributes(nodeName, u, r)
		var subresources []string
		allowed := false
		for _, a := range attrs {
			subresources = append(subresources, a.Subresource)
			d, _, err := authz.authorize(r.Context(), a)
			if err != nil {
				klog.ErrorS(err, "Authorization error", "user", u.Name, "verb", a.Verb, "resource", a.Resource, "subresource", a.Subresource)
				writeError(w, http.StatusInternalServerError, fmt.Sprintf("Authorization error (user=%s, verb=%s, resource=%s, subresource=%s)", u.Name, a.Verb, a.Resource, a.Subresource))
				return
			}
			if d == decisionAllow {
				allowed = true
				break
			}
		}
		if !allowed {
			// The attributes differ only by subresource: the first tells the rest.
			klog.V(2).InfoS("Forbidden", "user", u.Name, "verb", attrs[0].Verb, "resource", attrs[0].Resource, "subresource(s)", subresources)
			writeError(w, http.StatusForbidden, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=%s, subresource(s)=%v)\n", u.Name, attrs[0].Verb, attrs[0].Resource, subresources))
			return
		}
		// No status in this line: wrapping the ResponseWriter to catch it
		// would hide the Hijacker the stream proxy needs.
		klog.V(4).InfoS("Kubelet API request", "method", r.Method, "path", r.URL.Path, "user", u.Name, "remote", r.RemoteAddr)
		next.ServeHTTP(w, r)
	})
}

// writeError writes msg as the whole plain-text body, as go-restful's
// WriteErrorString does for the kubelet (no trailing newline added).
func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg))
}
