// Package objects holds the non-pod API objects read from the static pod
// directory (ConfigMaps, Secrets, PersistentVolumes, PersistentVolumeClaims).
//
// It is a leaf package so that volumes/ can import it without importing the
// agent (the agent sits above volumes/ in peapod's layering); agent.Objects
// is an alias of objects.Objects.
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
