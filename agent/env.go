package agent

import (
	"fmt"
	"peapod/downward"
	"sort"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// envContext is what environment variables may refer to besides the spec.
type envContext struct {
	PodIPs  []string
	HostIPs []string
	Objects *Objects
	// Node is the node's allocatable resources: the value of a
	// resourceFieldRef limit the container does not set.
	Node v1.ResourceList
}

// makeEnvironment resolves the environment of container c as the kubelet's
// makeEnvironmentVariables: envFrom first (later sources win), then env in
// order, each env value expanded against the variables defined before it.
// The order of the result is the order of first definition.
func makeEnvironment(pod *v1.Pod, c *v1.Container, ec envContext) ([]*runtimeapi.KeyValue, error) {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	ns := pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			cm := ec.Objects.ConfigMap(ns, ref.Name)
			if cm == nil {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			data = cm.Data
		case from.SecretRef != nil:
			ref := from.SecretRef
			s := ec.Objects.Secret(ns, ref.Name)
			if s == nil {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		default:
			continue
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var invalid []string
		for _, k := range keys {
			name := from.Prefix + k
			if errs := validation.IsEnvVarName(name); len(errs) > 0 {
				invalid = append(invalid, name)
				continue
			}
			set(name, data[k])
		}
		if len(invalid) > 0 {
			klog.InfoS("Skipped invalid environment variable names from envFrom", "pod", klog.KObj(pod), "container", c.Name, "names", invalid)
		}
	}
	for _, e := range c.Env {
		val := e.Value
		switch {
		case val != "":
			val = expand(val, mappingFuncFor(vals))
		case e.ValueFrom == nil:
		case e.ValueFrom.FieldRef != nil:
			v, err := downward.FieldValue(pod, e.ValueFrom.FieldRef.FieldPath, downward.Context{PodIPs: ec.PodIPs, HostIPs: ec.HostIPs})
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		case e.ValueFrom.ResourceFieldRef != nil:
			v, err := downward.ResourceValue(pod, c, e.ValueFrom.ResourceFieldRef, ec.Node)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := ec.Objects.ConfigMap(ns, ref.Name)
			if cm == nil {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("configmap %q not found", ref.Name)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", ref.Key, ns, ref.Name)
			}
			val = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s := ec.Objects.Secret(ns, ref.Name)
			if s == nil {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("secret %q not found", ref.Name)
			}
			v, ok := s.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", ref.Key, ns, ref.Name)
			}
			val = string(v)
		}
		set(e.Name, val)
	}
	out := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, k := range order {
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(vals[k])})
	}
	return out, nil
}

func optional(p *bool) bool { return p != nil && *p }

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
	return nil
}

// expandCommand expands $(VAR) in command and args against env.
func expandCommand(c *v1.Container, env []*runtimeapi.KeyValue) (command, args []string) {
	vars := make(map[string]string, len(env))
	for _, kv := range env {
		vars[kv.Key] = string(kv.Value)
	}
	m := mappingFuncFor(vars)
	for _, s := range c.Command {
		command = append(command, expand(s, m))
	}
	for _, s := range c.Args {
		args = append(args, expand(s, m))
	}
	return command, args
}
