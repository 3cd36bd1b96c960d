// Package objects holds the non-pod API objects read from the static pod
// directory (ConfigMaps, Secrets, PersistentVolumes, PersistentVolumeClaims).
//
// It is a leaf package so that volumes/ can import it without importing the
// agent (the agent sits above volumes/ in peapod's layering); agent.Objects
// and volumes.Objects are aliases of objects.Objects.
package objects

import v1 "k8s.io/api/core/v1"

// Objects is the set of objects a pod may reference. Maps are keyed by
// "namespace/name"; PersistentVolumes are cluster-scoped and listed.
type Objects struct {
	ConfigMaps             map[string]*v1.ConfigMap
	Secrets                map[string]*v1.Secret
	PersistentVolumes      []*v1.PersistentVolume
	PersistentVolumeClaims map[string]*v1.PersistentVolumeClaim
}

// Key is the map key of a namespaced object.
func Key(namespace, name string) string { return namespace + "/" + name }

// New returns an empty, ready-to-fill Objects.
func New() *Objects {
	return &Objects{
		ConfigMaps:             map[string]*v1.ConfigMap{},
		Secrets:                map[string]*v1.Secret{},
		PersistentVolumeClaims: map[string]*v1.PersistentVolumeClaim{},
	}
}

// ConfigMap returns the named ConfigMap, or nil.
func (o *Objects) ConfigMap(namespace, name string) *v1.ConfigMap {
	if o == nil {
		return nil
	}
	return o.ConfigMaps[Key(namespace, name)]
}

// Secret returns the named Secret, or nil.
func (o *Objects) Secret(namespace, name string) *v1.Secret {
	if o == nil {
		return nil
	}
	return o.Secrets[Key(namespace, name)]
}

// PersistentVolumeClaim returns the named claim, or nil.
func (o *Objects) PersistentVolumeClaim(namespace, name string) *v1.PersistentVolumeClaim {
	if o == nil {
		return nil
	}
	return o.PersistentVolumeClaims[Key(namespace, name)]
}

// PersistentVolume returns the named volume, or nil.
func (o *Objects) PersistentVolume(name string) *v1.PersistentVolume {
	if o == nil {
		return nil
	}
	for _, pv := range o.PersistentVolumes {
		if pv.Name == name {
			return pv
		}
	}
	return nil
}

// Merge returns a copy of o with every object of n added or replaced; o
// and n may be nil. PersistentVolumes keep their first-seen order.
func (o *Objects) Merge(n *Objects) *Objects {
	out := New()
	for _, src := range []*Objects{o, n} {
		if src == nil {
			continue
		}
		for k, v := range src.ConfigMaps {
			out.ConfigMaps[k] = v
		}
		for k, v := range src.Secrets {
			out.Secrets[k] = v
		}
		for k, v := range src.PersistentVolumeClaims {
			out.PersistentVolumeClaims[k] = v
		}
	}
	byName := map[string]*v1.PersistentVolume{}
	var names []string
	for _, src := range []*Objects{o, n} {
		if src == nil {
			continue
		}
		for _, pv := range src.PersistentVolumes {
			if _, ok := byName[pv.Name]; !ok {
				names = append(names, pv.Name)
			}
			byName[pv.Name] = pv
		}
	}
	for _, nm := range names {
		out.PersistentVolumes = append(out.PersistentVolumes, byName[nm])
	}
	return out
}
