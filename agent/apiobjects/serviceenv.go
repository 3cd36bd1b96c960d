package apiobjects

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ErrServicesNotSynced is returned by ServiceEnv until the Services
// informer has listed once. The kubelet refuses to start an API pod's
// containers then, so none misses KUBERNETES_SERVICE_HOST (which in-cluster
// clients need) after a restart; a static pod may go on without.
var ErrServicesNotSynced = errors.New("services have not been read from the API server yet")

// The API server's own Service, whose variables every pod gets.
const (
	masterServiceNamespace = metav1.NamespaceDefault
	masterServiceName      = "kubernetes"
)

// ServiceEnv returns the environment variables the kubelet adds to every
// container of pod (getServiceEnvVarMap): the Docker-link style variables
// of each Service of the pod's namespace when spec.enableServiceLinks is
// unset or true, and those of default/kubernetes always. They are sorted by
// name; the container's own env wins over them (the caller's part).
func (s *Source) ServiceEnv(pod *v1.Pod) ([]v1.EnvVar, error) {
	if !s.HasSynced() {
		return nil, fmt.Errorf("apiobjects: service env for pod %s/%s: %w", pod.Namespace, pod.Name, ErrServicesNotSynced)
	}
	links := pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks
	var svcs []*v1.Service
	if links {
		// The namespace index: no need to walk every Service of the cluster.
		l, err := s.lister.Services(pod.Namespace).List(labels.Everything())
		if err != nil {
			return nil, fmt.Errorf("apiobjects: list services of namespace %s: %w", pod.Namespace, err)
		}
		svcs = l
	}
	switch m, err := s.lister.Services(masterServiceNamespace).Get(masterServiceName); {
	case err == nil:
		svcs = append(svcs, m)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("apiobjects: service %s/%s: %w", masterServiceNamespace, masterServiceName, err)
	}
	return serviceEnv(svcs, pod.Namespace, links), nil
}

// serviceEnv picks the Services a pod in namespace sees (its namespace's,
// when links, and default/kubernetes; a namespace's own "kubernetes" wins
// over the master's, as in the kubelet) and renders their variables
// (envvars.FromServices), sorted by name.
func serviceEnv(services []*v1.Service, namespace string, links bool) []v1.EnvVar {
	byName := map[string]*v1.Service{}
	for _, svc := range services {
		// Headless and ExternalName services have no address to give.
		if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == v1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		switch {
		case links && svc.Namespace == namespace:
			byName[svc.Name] = svc
		case svc.Namespace == masterServiceNamespace && svc.Name == masterServiceName:
			if _, ok := byName[svc.Name]; !ok {
				byName[svc.Name] = svc
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	vars := map[string]string{}
	for _, n := range names {
		serviceVars(byName[n], vars)
	}
	out := make([]v1.EnvVar, 0, len(vars))
	for k, v := range vars {
		out = append(out, v1.EnvVar{Name: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serviceVars adds one Service's variables to vars, as the kubelet's
// envvars.FromServices: <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT (the first
// port), <NAME>_SERVICE_PORT_<PORTNAME> per named port, and Docker's link
// variables <NAME>_PORT and <NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR].
func serviceVars(svc *v1.Service, vars map[string]string) {
	prefix := envName(svc.Name)
	ip := svc.Spec.ClusterIP
	vars[prefix+"_SERVICE_HOST"] = ip
	vars[prefix+"_SERVICE_PORT"] = strconv.Itoa(int(svc.Spec.Ports[0].Port))
	for _, p := range svc.Spec.Ports {
		if p.Name != "" {
			vars[prefix+"_SERVICE_PORT_"+envName(p.Name)] = strconv.Itoa(int(p.Port))
		}
	}
	for i, p := range svc.Spec.Ports {
		proto := string(v1.ProtocolTCP)
		if p.Protocol != "" {
			proto = string(p.Protocol)
		}
		lower := strings.ToLower(proto)
		url := lower + "://" + net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
		if i == 0 {
			vars[prefix+"_PORT"] = url // Docker special-cases the first port
		}
		pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
		vars[pp] = url
		vars[pp+"_PROTO"] = lower
		vars[pp+"_PORT"] = strconv.Itoa(int(p.Port))
		vars[pp+"_ADDR"] = ip
	}
}

// envName is a Service or port name as a variable name: upper case, '-'
// as '_' (the kubelet's makeEnvVariableName).
func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
