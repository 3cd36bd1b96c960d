package agent

import (
	"peapod/downward"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// envContext is what environment variables may refer to besides the spec:
// the pod's and node's IPs, the objects (*Objects) and the node's
// allocatable resources (the value of a resourceFieldRef limit the
// container does not set).
type envContext = downward.Context

// makeEnvironment resolves the environment of container c with
// downward.Environment (the kubelet's makeEnvironmentVariables: envFrom
// first, later sources winning, then env in order, each value expanded
// against the variables defined before it), in the order of first
// definition. volumes/ expands subPathExpr against the same environment.
func makeEnvironment(pod *v1.Pod, c *v1.Container, ec envContext) ([]*runtimeapi.KeyValue, error) {
	env, err := downward.Environment(pod, c, ec)
	if err != nil {
		return nil, err
	}
	out := make([]*runtimeapi.KeyValue, 0, len(env))
	for _, e := range env {
		out = append(out, &runtimeapi.KeyValue{Key: e.Name, Value: []byte(e.Value)})
	}
	return out, nil
}

func findContainer(pod *v1.Pod, name string) *v1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.EphemeralContainers {
		if pod.Spec.EphemeralContainers[i].Name == name {
			return ephemeralAsContainer(&pod.Spec.EphemeralContainers[i])
		}
	}
	return nil
}

// ephemeralAsContainer is an ephemeral container as a (copied) Container:
// the API gives both the same fields, and everything that configures a
// container takes a *v1.Container.
func ephemeralAsContainer(ec *v1.EphemeralContainer) *v1.Container {
	c := v1.Container(ec.EphemeralContainerCommon)
	return &c
}

// expandCommand expands $(VAR) in command and args against env.
func expandCommand(c *v1.Container, env []*runtimeapi.KeyValue) (command, args []string) {
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		vars[kv.Key] = string(kv.Value)
	}
	m := downward.MappingFor(vars)
	for _, s := range c.Command {
		command = append(command, downward.Expand(s, m))
	}
	for _, s := range c.Args {
		args = append(args, downward.Expand(s, m))
	}
	return command, args
}
