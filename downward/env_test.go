package downward

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// fakeObjects holds ConfigMaps and Secrets by "namespace/name".
type fakeObjects map[string]any

func (f fakeObjects) ConfigMap(ns, name string) *v1.ConfigMap {
	cm, _ := f[ns+"/"+name].(*v1.ConfigMap)
	return cm
}

func (f fakeObjects) Secret(ns, name string) *v1.Secret {
	s, _ := f[ns+"/"+name].(*v1.Secret)
	return s
}

func TestEnvironment(t *testing.T) {
	objs := fakeObjects{
		"default/cfg":   &v1.ConfigMap{Data: map[string]string{"color": "blue", "size": "L", "bad-key": "x"}},
		"default/creds": &v1.Secret{Data: map[string][]byte{"password": []byte("s3cret")}},
		"default/word":  &v1.ConfigMap{Data: map[string]string{"word": "over"}},
	}
	pod := &v1.Pod{}
	pod.Name, pod.Namespace, pod.UID = "web", "default", "uid-1"
	pod.Labels = map[string]string{"app": "web"}
	pod.Annotations = map[string]string{"team": "peas"}
	pod.Spec.NodeName, pod.Spec.ServiceAccountName = "node1", "sa"
	ec := Context{PodIPs: []string{"10.88.0.5", "fd00::5"}, HostIPs: []string{"192.168.1.2"}, Objects: objs,
		Node: v1.ResourceList{v1.ResourceCPU: resource.MustParse("4"), v1.ResourceMemory: resource.MustParse("8Gi")}}
	yes, no := true, false
	mk := func(env []v1.EnvVar, from ...v1.EnvFromSource) *v1.Container {
		return &v1.Container{Name: "app", Env: env, EnvFrom: from, Resources: v1.ResourceRequirements{
			Limits:   v1.ResourceList{v1.ResourceCPU: resource.MustParse("1500m"), v1.ResourceMemory: resource.MustParse("64Mi")},
			Requests: v1.ResourceList{v1.ResourceCPU: resource.MustParse("250m")},
		}}
	}
	field := func(name, path string) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	res := func(name, r, div string) v1.EnvVar {
		s := &v1.ResourceFieldSelector{Resource: r}
		if div != "" {
			s.Divisor = resource.MustParse(div)
		}
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{ResourceFieldRef: s}}
	}
	cmKey := func(name, cm, key string, opt *bool) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{ConfigMapKeyRef: &v1.ConfigMapKeySelector{
			LocalObjectReference: v1.LocalObjectReference{Name: cm}, Key: key, Optional: opt}}}
	}
	secKey := func(name, s, key string, opt *bool) v1.EnvVar {
		return v1.EnvVar{Name: name, ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{
			LocalObjectReference: v1.LocalObjectReference{Name: s}, Key: key, Optional: opt}}}
	}
	for _, tc := range []struct {
		name    string
		c       *v1.Container
		want    string // KEY=VALUE;...
		wantErr string
	}{
		{"values and expansion", mk([]v1.EnvVar{{Name: "A", Value: "x"}, {Name: "B", Value: "$(A)-$(C)-$$(A)"}, {Name: "C", Value: "c"}}),
			"A=x;B=x-$(C)-$(A);C=c", ""},
		{"fieldRefs", mk([]v1.EnvVar{field("N", "metadata.name"), field("NS", "metadata.namespace"), field("U", "metadata.uid"),
			field("L", "metadata.labels['app']"), field("AN", "metadata.annotations['team']"), field("NODE", "spec.nodeName"),
			field("SA", "spec.serviceAccountName"), field("IP", "status.podIP"), field("IPS", "status.podIPs"), field("H", "status.hostIP")}),
			"N=web;NS=default;U=uid-1;L=web;AN=peas;NODE=node1;SA=sa;IP=10.88.0.5;IPS=10.88.0.5,fd00::5;H=192.168.1.2", ""},
		{"bad fieldRef", mk([]v1.EnvVar{field("X", "spec.bogus")}), "", "unsupported fieldRef"},
		{"resourceFieldRefs", mk([]v1.EnvVar{res("LC", "limits.cpu", ""), res("LCM", "limits.cpu", "1m"), res("RC", "requests.cpu", ""),
			res("LM", "limits.memory", "1Mi"), res("LMB", "limits.memory", ""), res("RM", "requests.memory", "")}),
			// RM: an unset request is the limit, as API defaulting makes it.
			"LC=2;LCM=1500;RC=1;LM=64;LMB=67108864;RM=67108864", ""},
		{"unset limit is node allocatable", &v1.Container{Name: "app", Env: []v1.EnvVar{res("LC", "limits.cpu", ""), res("LM", "limits.memory", "1Gi")}},
			"LC=4;LM=8", ""},
		{"configMap and secret keys", mk([]v1.EnvVar{cmKey("COLOR", "cfg", "color", nil), secKey("PW", "creds", "password", nil)}),
			"COLOR=blue;PW=s3cret", ""},
		{"optional missing keys and objects are skipped", mk([]v1.EnvVar{cmKey("A", "cfg", "nope", &yes), cmKey("B", "nocm", "x", &yes),
			secKey("C", "nosecret", "x", &yes), secKey("D", "creds", "nope", &yes)}), "", ""},
		{"missing configmap", mk([]v1.EnvVar{cmKey("A", "nocm", "x", &no)}), "", `configmap "nocm" not found`},
		{"missing key", mk([]v1.EnvVar{cmKey("A", "cfg", "nope", nil)}), "", "couldn't find key nope in ConfigMap default/cfg"},
		{"missing secret key", mk([]v1.EnvVar{secKey("A", "creds", "nope", nil)}), "", "couldn't find key nope in Secret default/creds"},
		{"envFrom with prefix, env overrides, invalid names skipped",
			mk([]v1.EnvVar{{Name: "CFG_color", Value: "red"}, {Name: "X", Value: "$(CFG_size)"}},
				v1.EnvFromSource{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}},
				v1.EnvFromSource{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}}}),
			"CFG_bad-key=x;CFG_color=red;CFG_size=L;password=s3cret;X=L", ""},
		{"later envFrom sources win, in the order of first definition",
			mk([]v1.EnvVar{{Name: "Y", Value: "$(password)"}},
				v1.EnvFromSource{Prefix: "pass", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}},
				v1.EnvFromSource{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "creds"}}},
				v1.EnvFromSource{Prefix: "pass", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "word"}}}),
			"passbad-key=x;passcolor=blue;passsize=L;password=over;Y=over", ""},
		{"envFrom optional missing", mk(nil, v1.EnvFromSource{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "gone"}, Optional: &yes}}), "", ""},
		{"envFrom missing", mk(nil, v1.EnvFromSource{SecretRef: &v1.SecretEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "gone"}}}), "", `secret "gone" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Environment(pod, tc.c, ec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range env {
				got = append(got, e.Name+"="+e.Value)
			}
			if g := strings.Join(got, ";"); g != tc.want {
				t.Errorf("env\n got  %s\n want %s", g, tc.want)
			}
		})
	}
}

func TestEnvironmentWithoutObjects(t *testing.T) {
	yes := true
	c := &v1.Container{
		EnvFrom: []v1.EnvFromSource{{ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}, Optional: &yes}}},
		Env: []v1.EnvVar{{Name: "A", Value: "a"}, {Name: "B", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{
			LocalObjectReference: v1.LocalObjectReference{Name: "s"}, Key: "k", Optional: &yes}}}},
	}
	env, err := Environment(&v1.Pod{}, c, Context{})
	if err != nil || len(env) != 1 || env[0] != (EnvVar{"A", "a"}) {
		t.Fatalf("env %v, %v", env, err)
	}
	c.Env[1].ValueFrom.SecretKeyRef.Optional = nil
	if _, err := Environment(&v1.Pod{}, c, Context{}); err == nil || !strings.Contains(err.Error(), `secret "s" not found`) {
		t.Fatalf("err %v", err)
	}
}

// Service links are the lowest precedence: envFrom and env override them,
// and env may expand them.
func TestEnvironmentServiceLinks(t *testing.T) {
	pod := &v1.Pod{}
	pod.Name, pod.Namespace = "web", "default"
	ec := Context{Services: []v1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "10.96.0.1"}, {Name: "DB_SERVICE_PORT", Value: "5432"}}}
	c := &v1.Container{Name: "app", Env: []v1.EnvVar{{Name: "DB_SERVICE_PORT", Value: "6543"}, {Name: "API", Value: "https://$(KUBERNETES_SERVICE_HOST)"}}}
	env, err := Environment(pod, c, ec)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range env {
		got = append(got, e.Name+"="+e.Value)
	}
	if g, want := strings.Join(got, ";"), "KUBERNETES_SERVICE_HOST=10.96.0.1;DB_SERVICE_PORT=6543;API=https://10.96.0.1"; g != want {
		t.Errorf("env\n got  %s\n want %s", g, want)
	}
}
