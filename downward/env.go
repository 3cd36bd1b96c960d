package downward

import (
	"fmt"
	"sort"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
)

// Objects looks up the ConfigMaps and Secrets a container's environment
// refers to; nil means not found. *objects.Objects (agent/objects)
// implements it, nil-safe.
type Objects interface {
	ConfigMap(namespace, name string) *v1.ConfigMap
	Secret(namespace, name string) *v1.Secret
}

// EnvVar is one variable of a resolved environment.
type EnvVar struct {
	Name, Value string
}

// Environment resolves the environment of container c as the kubelet's
// makeEnvironmentVariables: envFrom first (later sources win), then env in
// order, each env value expanded against the variables defined before it;
// fieldRef and resourceFieldRef through FieldValue and ResourceValue with
// ctx, configMapKeyRef and secretKeyRef through ctx.Objects. A missing
// object or key is an error unless the reference is optional, which leaves
// the variable unset. The result is in the order of first definition.
//
// It is the one environment of a container: the agent gives it to the
// container, and volumes/ expands subPathExpr against it, as the kubelet's
// makeMounts does.
func Environment(pod *v1.Pod, c *v1.Container, ctx Context) ([]EnvVar, error) {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, e := range ctx.Services {
		set(e.Name, e.Value)
	}
	ns := pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			cm := ctx.configMap(ns, ref.Name)
			if cm == nil {
				if err := notFound("configmap", ref.Name, ref.Optional); err != nil {
					return nil, err
				}
				continue
			}
			data = cm.Data
		case from.SecretRef != nil:
			ref := from.SecretRef
			s := ctx.secret(ns, ref.Name)
			if s == nil {
				if err := notFound("secret", ref.Name, ref.Optional); err != nil {
					return nil, err
				}
				continue
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
		val, ok, err := envValue(pod, c, &e, vals, ctx)
		if err != nil {
			return nil, err
		}
		if ok {
			set(e.Name, val)
		}
	}
	out := make([]EnvVar, 0, len(order))
	for _, k := range order {
		out = append(out, EnvVar{Name: k, Value: vals[k]})
	}
	return out, nil
}

// envValue is the value of env var e of container c, a value expanded
// against the variables defined before it. ok is false when an optional
// configMapKeyRef or secretKeyRef finds no object or no key: the variable is
// left unset.
func envValue(pod *v1.Pod, c *v1.Container, e *v1.EnvVar, defined map[string]string, ctx Context) (val string, ok bool, err error) {
	src := e.ValueFrom
	switch {
	case e.Value != "":
		return Expand(e.Value, MappingFor(defined)), true, nil
	case src == nil:
		return "", true, nil
	case src.FieldRef != nil:
		val, err = FieldValue(pod, src.FieldRef.FieldPath, ctx)
	case src.ResourceFieldRef != nil:
		val, err = ResourceValue(pod, c, src.ResourceFieldRef, ctx.Node)
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm := ctx.configMap(pod.Namespace, ref.Name)
		if cm == nil {
			return "", false, notFound("configmap", ref.Name, ref.Optional)
		}
		return keyRef(cm.Data, "ConfigMap", pod.Namespace, ref.Name, ref.Key, ref.Optional)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s := ctx.secret(pod.Namespace, ref.Name)
		if s == nil {
			return "", false, notFound("secret", ref.Name, ref.Optional)
		}
		return keyRef(s.Data, "Secret", pod.Namespace, ref.Name, ref.Key, ref.Optional)
	}
	if err != nil {
		return "", false, fmt.Errorf("env %s: %w", e.Name, err)
	}
	return val, true, nil
}

// notFound is the error of a reference to a ConfigMap or Secret that does
// not exist: none when the reference is optional.
func notFound(kind, name string, opt *bool) error {
	if optional(opt) {
		return nil
	}
	return fmt.Errorf("%s %q not found", kind, name)
}

// keyRef is the value of key in the data of the named ConfigMap or
// Secret; ok is false when key is missing and the reference optional.
func keyRef[V string | []byte](data map[string]V, kind, ns, name, key string, opt *bool) (val string, ok bool, err error) {
	v, has := data[key]
	if !has {
		if optional(opt) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("couldn't find key %s in %s %s/%s", key, kind, ns, name)
	}
	return string(v), true, nil
}

// EnvMap is env as a map, for Expand's MappingFor.
func EnvMap(env []EnvVar) map[string]string {
	m := make(map[string]string, len(env))
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

func optional(p *bool) bool { return p != nil && *p }

func (c Context) configMap(ns, name string) *v1.ConfigMap {
	if c.Objects == nil {
		return nil
	}
	return c.Objects.ConfigMap(ns, name)
}

func (c Context) secret(ns, name string) *v1.Secret {
	if c.Objects == nil {
		return nil
	}
	return c.Objects.Secret(ns, name)
}
