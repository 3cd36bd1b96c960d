package apiobjects

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// The cache is tested through its one seam, Source.get: a table of objects
// and failures stands behind it, not an API server (the real control plane
// is test/cluster's).

type getCall struct {
	key string
	rv  string
}

type stubGetter struct {
	objs  map[objectKey]metav1.Object
	fail  map[objectKey]error
	calls []getCall
}

func (g *stubGetter) get(_ context.Context, k objectKey, opts metav1.GetOptions) (metav1.Object, error) {
	g.calls = append(g.calls, getCall{k.String(), opts.ResourceVersion})
	if err := g.fail[k]; err != nil {
		return nil, err
	}
	if o := g.objs[k]; o != nil {
		return o, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: k.Kind}, k.Name)
}

func (g *stubGetter) take() []getCall {
	c := g.calls
	g.calls = nil
	sort.Slice(c, func(i, j int) bool { return c[i].key < c[j].key })
	return c
}

func testSource(now *time.Time) *Source {
	return &Source{
		ttl:     DefaultTTL,
		now:     func() time.Time { return *now },
		entries: map[objectKey]*entry{},
		pods:    map[types.UID]map[objectKey]bool{},
		tokens:  map[tokenKey]*tokenEntry{},
		get: func(context.Context, objectKey, metav1.GetOptions) (metav1.Object, error) {
			return nil, errors.New("no getter")
		},
		createToken: func(context.Context, string, string, *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
			return nil, errors.New("no token source")
		},
	}
}

func meta(ns, name, rv string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}
}

// names lists what an Objects holds, kind-prefixed, sorted.
func names(t *testing.T, s *Source, pod *v1.Pod) []string {
	t.Helper()
	o, err := s.Objects(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, cm := range o.ConfigMaps {
		out = append(out, "cm "+k+"="+cm.Data["v"])
	}
	for k := range o.Secrets {
		out = append(out, "secret "+k)
	}
	for k := range o.PersistentVolumeClaims {
		out = append(out, "pvc "+k)
	}
	for _, pv := range o.PersistentVolumes {
		out = append(out, "pv "+pv.Name)
	}
	sort.Strings(out)
	return out
}

func TestObjectsCache(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := testSource(&now)
	g := &stubGetter{objs: map[objectKey]metav1.Object{}, fail: map[objectKey]error{}}
	s.get = g.get
	put := func(o metav1.Object) {
		var k objectKey
		switch o.(type) {
		case *v1.ConfigMap:
			k = objectKey{kindConfigMap, o.GetNamespace(), o.GetName()}
		case *v1.Secret:
			k = objectKey{kindSecret, o.GetNamespace(), o.GetName()}
		case *v1.PersistentVolumeClaim:
			k = objectKey{kindClaim, o.GetNamespace(), o.GetName()}
		case *v1.PersistentVolume:
			k = objectKey{kindVolume, "", o.GetName()}
		}
		g.objs[k] = o
	}
	put(&v1.ConfigMap{ObjectMeta: meta("ns", "shared", "10"), Data: map[string]string{"v": "1"}})
	put(&v1.ConfigMap{ObjectMeta: meta("ns", "kube-root-ca.crt", "11"), Data: map[string]string{"v": "ca"}})
	put(&v1.PersistentVolumeClaim{ObjectMeta: meta("ns", "data", "12"), Spec: v1.PersistentVolumeClaimSpec{VolumeName: "pv-1"}})
	put(&v1.PersistentVolume{ObjectMeta: meta("", "pv-1", "13"), Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
		FlexVolume: &v1.FlexPersistentVolumeSource{Driver: "x/y", SecretRef: &v1.SecretReference{Name: "flex-creds"}}}}})
	put(&v1.Secret{ObjectMeta: meta("ns", "flex-creds", "14")})

	cmVol := func(name string) v1.Volume {
		return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{LocalObjectReference: v1.LocalObjectReference{Name: name}}}}
	}
	pod1 := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p1", UID: "u1"}, Spec: v1.PodSpec{
		Containers: []v1.Container{{Name: "c", Env: []v1.EnvVar{{Name: "X", ValueFrom: &v1.EnvVarSource{
			SecretKeyRef: &v1.SecretKeySelector{LocalObjectReference: v1.LocalObjectReference{Name: "missing"}, Key: "k", Optional: bptr(true)}}}}}},
		Volumes: []v1.Volume{cmVol("shared"), cmVol("kube-root-ca.crt"),
			{Name: "d", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
	}}
	pod2 := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p2", UID: "u2"}, Spec: v1.PodSpec{Volumes: []v1.Volume{cmVol("shared")}}}

	all1 := []string{"cm ns/kube-root-ca.crt=ca", "cm ns/shared=1", "pv pv-1", "pvc ns/data", "secret ns/flex-creds"}
	steps := []struct {
		name      string
		advance   time.Duration
		change    func()
		pod       *v1.Pod
		want      []string
		wantCalls []getCall
		wantErr   string
	}{
		{name: "first read: every reference, claim → volume → its secret; missing is absent", pod: pod1, want: all1,
			wantCalls: []getCall{{"configmap ns/kube-root-ca.crt", ""}, {"configmap ns/shared", ""}, {"persistentvolume pv-1", ""},
				{"persistentvolumeclaim ns/data", ""}, {"secret ns/flex-creds", ""}, {"secret ns/missing", ""}}},
		{name: "within the TTL: no GET", advance: 59 * time.Second, pod: pod1, want: all1},
		{name: "a new pod gets a fresh (quorum) read of what it references, and only that", pod: pod2,
			want: []string{"cm ns/shared=1"}, wantCalls: []getCall{{"configmap ns/shared", ""}}},
		{name: "after the TTL: read again from the watch cache, updates show",
			advance: 61 * time.Second,
			change:  func() { put(&v1.ConfigMap{ObjectMeta: meta("ns", "shared", "20"), Data: map[string]string{"v": "2"}}) },
			pod:     pod1, want: []string{"cm ns/kube-root-ca.crt=ca", "cm ns/shared=2", "pv pv-1", "pvc ns/data", "secret ns/flex-creds"},
			wantCalls: []getCall{{"configmap ns/kube-root-ca.crt", "0"}, {"configmap ns/shared", "0"}, {"persistentvolume pv-1", "0"},
				{"persistentvolumeclaim ns/data", "0"}, {"secret ns/flex-creds", "0"}, {"secret ns/missing", ""}}},
		{name: "an older answer (lagging watch cache) does not go back in time",
			advance: 2 * time.Minute,
			change: func() {
				put(&v1.ConfigMap{ObjectMeta: meta("ns", "shared", "15"), Data: map[string]string{"v": "old"}})
			},
			pod: pod2, want: []string{"cm ns/shared=2"}, wantCalls: []getCall{{"configmap ns/shared", "0"}}},
		{name: "a failed refresh serves the cached object and retries next call",
			change: func() {
				put(&v1.ConfigMap{ObjectMeta: meta("ns", "shared", "30"), Data: map[string]string{"v": "3"}})
				g.fail[objectKey{kindConfigMap, "ns", "shared"}] = apierrors.NewServiceUnavailable("etcd down")
			},
			pod: pod2, want: []string{"cm ns/shared=2"}, wantCalls: []getCall{{"configmap ns/shared", "0"}}},
		{name: "recovered", change: func() { delete(g.fail, objectKey{kindConfigMap, "ns", "shared"}) },
			pod: pod2, want: []string{"cm ns/shared=3"}, wantCalls: []getCall{{"configmap ns/shared", "0"}}},
		{name: "an object never read that cannot be read is an error naming it",
			change: func() {
				pod2.Spec.Volumes = append(pod2.Spec.Volumes, cmVol("secret-stuff"))
				g.fail[objectKey{kindConfigMap, "ns", "secret-stuff"}] = apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "secret-stuff", errors.New("no relationship found"))
			},
			pod: pod2, wantErr: "get configmap ns/secret-stuff: ", wantCalls: []getCall{{"configmap ns/secret-stuff", ""}}},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		if st.change != nil {
			st.change()
		}
		if st.wantErr != "" {
			_, err := s.Objects(context.Background(), st.pod)
			if err == nil || !strings.Contains(err.Error(), st.wantErr) || !apierrors.IsForbidden(err) {
				t.Errorf("%s: err = %v, want %q", st.name, err, st.wantErr)
			}
		} else if got := names(t, s, st.pod); !reflect.DeepEqual(got, st.want) {
			t.Errorf("%s: objects %v, want %v", st.name, got, st.want)
		}
		if got := g.take(); !reflect.DeepEqual(got, st.wantCalls) && !(len(got) == 0 && len(st.wantCalls) == 0) {
			t.Errorf("%s: GETs %v, want %v", st.name, got, st.wantCalls)
		}
	}

	// Forget drops what only that pod used; shared objects stay cached.
	s.Forget(pod1)
	var left []string
	for k := range s.entries {
		left = append(left, k.String())
	}
	sort.Strings(left)
	if want := []string{"configmap ns/secret-stuff", "configmap ns/shared"}; !reflect.DeepEqual(left, want) {
		t.Errorf("after Forget(p1) cached %v, want %v", left, want)
	}
	s.Forget(pod2)
	if len(s.entries) != 0 || len(s.pods) != 0 {
		t.Errorf("after Forget of every pod: entries %v, pods %v", s.entries, s.pods)
	}
}

// A pod whose spec stops referencing an object releases it.
func TestObjectsReleasesDroppedReferences(t *testing.T) {
	now := time.Now()
	s := testSource(&now)
	g := &stubGetter{objs: map[objectKey]metav1.Object{}}
	s.get = g.get
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u"}, Spec: v1.PodSpec{Containers: []v1.Container{{Name: "c",
		EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "a"}}}}}}}}
	names(t, s, pod)
	pod.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name = "b"
	names(t, s, pod)
	if _, ok := s.entries[objectKey{kindConfigMap, "ns", "a"}]; ok || len(s.entries) != 1 {
		t.Errorf("entries %v: want only configmap ns/b", s.entries)
	}
	if _, err := s.Objects(context.Background(), &v1.Pod{}); err == nil {
		t.Error("pod without UID accepted")
	}
}

func bptr(b bool) *bool { return &b }
