package volumes

import (
	"peapod/downward"

	"context"
	"errors"
	"fmt"
	"os"
	"time"

	v1 "k8s.io/api/core/v1"
)

// Payloads of the projected kinds: configMap, secret, downwardAPI and
// projected (any mix of them, service account tokens included), rendered
// into fileProjections for the atomicWriter.

const defaultFileMode = 0o644

// errNoTokenSource: a static-pod-only agent has no API server to issue
// tokens.
var errNoTokenSource = errors.New("serviceAccountToken needs an API server: run the agent as a node (agent.kubeconfig)")

var (
	// tokenResyncPeriod is how often a token-bearing projected volume is
	// written again (the kubelet remounts such volumes on each pod sync,
	// about once a minute).
	tokenResyncPeriod = time.Minute
	// tokenRequestTimeout bounds one token fetch: it runs under the
	// Manager's lock, so an unresponsive API server must not hold every
	// other volume operation for long. A failure is retried with back-off.
	tokenRequestTimeout = 10 * time.Second
)

func modeOr(p *int32, def int32) os.FileMode {
	if p != nil {
		return os.FileMode(*p) & 0o777
	}
	return os.FileMode(def) & 0o777
}

func optional(b *bool) bool { return b != nil && *b }

// keyToPathPayload applies items (or every key when there are none) to a
// ConfigMap's or Secret's data.
func keyToPathPayload(kind, name string, data map[string][]byte, items []v1.KeyToPath, defMode int32, opt bool) (map[string]fileProjection, error) {
	out := map[string]fileProjection{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = fileProjection{Data: v, Mode: os.FileMode(defMode) & 0o777}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if opt {
				continue
			}
			return nil, fmt.Errorf("%s %q has no key %q", kind, name, it.Key)
		}
		if err := validatePayloadPath(it.Path); err != nil {
			return nil, fmt.Errorf("%s %q item %q: %w", kind, name, it.Key, err)
		}
		out[it.Path] = fileProjection{Data: v, Mode: modeOr(it.Mode, defMode)}
	}
	return out, nil
}

func configMapData(cm *v1.ConfigMap) map[string][]byte {
	d := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		d[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		d[k] = v
	}
	return d
}

func secretData(s *v1.Secret) map[string][]byte {
	d := make(map[string][]byte, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		d[k] = v
	}
	for k, v := range s.StringData { // not merged by an API server here
		d[k] = []byte(v)
	}
	return d
}

func configMapPayload(pod *v1.Pod, src *v1.ConfigMapVolumeSource, objs *Objects) (map[string]fileProjection, error) {
	def := int32(defaultFileMode)
	if src.DefaultMode != nil {
		def = *src.DefaultMode
	}
	cm := objs.ConfigMap(pod.Namespace, src.Name)
	if cm == nil {
		if optional(src.Optional) {
			return map[string]fileProjection{}, nil
		}
		return nil, fmt.Errorf("configmap %s/%s not found", pod.Namespace, src.Name)
	}
	return keyToPathPayload("configmap", src.Name, configMapData(cm), src.Items, def, optional(src.Optional))
}

func secretPayload(pod *v1.Pod, src *v1.SecretVolumeSource, objs *Objects) (map[string]fileProjection, error) {
	def := int32(defaultFileMode)
	if src.DefaultMode != nil {
		def = *src.DefaultMode
	}
	s := objs.Secret(pod.Namespace, src.SecretName)
	if s == nil {
		if optional(src.Optional) {
			return map[string]fileProjection{}, nil
		}
		return nil, fmt.Errorf("secret %s/%s not found", pod.Namespace, src.SecretName)
	}
	return keyToPathPayload("secret", src.SecretName, secretData(s), src.Items, def, optional(src.Optional))
}

func downwardAPIPayload(pod *v1.Pod, items []v1.DownwardAPIVolumeFile, defMode int32) (map[string]fileProjection, error) {
	out := map[string]fileProjection{}
	for _, it := range items {
		if err := validatePayloadPath(it.Path); err != nil {
			return nil, fmt.Errorf("downwardAPI item: %w", err)
		}
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = downward.FieldValue(pod, it.FieldRef.FieldPath, downward.FromStatus(pod))
		case it.ResourceFieldRef != nil:
			val, err = downward.ResourceValue(pod, nil, it.ResourceFieldRef, nodeAllocatable())
		default:
			err = fmt.Errorf("item %q has neither fieldRef nor resourceFieldRef", it.Path)
		}
		if err != nil {
			return nil, fmt.Errorf("downwardAPI %q: %w", it.Path, err)
		}
		out[it.Path] = fileProjection{Data: []byte(val), Mode: modeOr(it.Mode, defMode)}
	}
	return out, nil
}

// tokenPayload is a serviceAccountToken source: the token, at its path,
// with the volume's default mode; with an fsGroup 0600, which the volume's
// ownership turns into 0640, as the kubelet's projected.go does ("When
// FsGroup is set, we depend on SetVolumeOwnership to change from 0600 to
// 0640"). Its other case, 0600 and owned by the pods' one runAsUser
// (FsUser), peapod does not do.
func tokenPayload(ctx context.Context, pod *v1.Pod, src *v1.ServiceAccountTokenProjection, defMode int32, tokens TokenSource) (map[string]fileProjection, error) {
	if tokens == nil {
		return nil, errNoTokenSource
	}
	if err := validatePayloadPath(src.Path); err != nil {
		return nil, fmt.Errorf("serviceAccountToken: %w", err)
	}
	var exp int64
	if src.ExpirationSeconds != nil {
		exp = *src.ExpirationSeconds
	}
	ctx, cancel := context.WithTimeout(ctx, tokenRequestTimeout)
	defer cancel()
	tok, _, err := tokens.Token(ctx, pod, src.Audience, exp)
	if err != nil {
		return nil, fmt.Errorf("serviceAccountToken %q: %w", src.Path, err)
	}
	mode := os.FileMode(defMode) & 0o777
	if podFSGroup(pod) != nil {
		mode = 0o600
	}
	return map[string]fileProjection{src.Path: {Data: []byte(tok), Mode: mode}}, nil
}

func projectedPayload(ctx context.Context, pod *v1.Pod, src *v1.ProjectedVolumeSource, objs *Objects, tokens TokenSource) (map[string]fileProjection, error) {
	def := int32(defaultFileMode)
	if src.DefaultMode != nil {
		def = *src.DefaultMode
	}
	out := map[string]fileProjection{}
	merge := func(p map[string]fileProjection) {
		for k, v := range p {
			out[k] = v
		}
	}
	for i, s := range src.Sources {
		switch {
		case s.ConfigMap != nil:
			cm := objs.ConfigMap(pod.Namespace, s.ConfigMap.Name)
			if cm == nil {
				if optional(s.ConfigMap.Optional) {
					continue
				}
				return nil, fmt.Errorf("configmap %s/%s not found", pod.Namespace, s.ConfigMap.Name)
			}
			p, err := keyToPathPayload("configmap", s.ConfigMap.Name, configMapData(cm), s.ConfigMap.Items, def, optional(s.ConfigMap.Optional))
			if err != nil {
				return nil, err
			}
			merge(p)
		case s.Secret != nil:
			sec := objs.Secret(pod.Namespace, s.Secret.Name)
			if sec == nil {
				if optional(s.Secret.Optional) {
					continue
				}
				return nil, fmt.Errorf("secret %s/%s not found", pod.Namespace, s.Secret.Name)
			}
			p, err := keyToPathPayload("secret", s.Secret.Name, secretData(sec), s.Secret.Items, def, optional(s.Secret.Optional))
			if err != nil {
				return nil, err
			}
			merge(p)
		case s.DownwardAPI != nil:
			p, err := downwardAPIPayload(pod, s.DownwardAPI.Items, def)
			if err != nil {
				return nil, err
			}
			merge(p)
		case s.ServiceAccountToken != nil:
			p, err := tokenPayload(ctx, pod, s.ServiceAccountToken, def, tokens)
			if err != nil {
				return nil, fmt.Errorf("projected source %d: %w", i, err)
			}
			merge(p)
		default:
			return nil, fmt.Errorf("projected source %d: only configMap, secret, downwardAPI and serviceAccountToken are supported", i)
		}
	}
	return out, nil
}

// nodeAllocatable stands in for the node's allocatable resources when a
// container sets no limit; a variable so tests can fix it.
var nodeAllocatable = downward.NodeAllocatable
