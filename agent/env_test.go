package agent

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"peapod/agent/objects"
)

// The rules of the environment are tested with downward.Environment; these
// check the agent's use of it: its objects, and the CRI KeyValues in the
// order of first definition.
func TestMakeEnvironment(t *testing.T) {
	objs := objects.New()
	objs.ConfigMaps["default/cfg"] = &v1.ConfigMap{Data: map[string]string{"color": "blue", "size": "L"}}
	objs.Secrets["default/creds"] = &v1.Secret{Data: map[string][]byte{"password": []byte("s3cret")}}
	pod := &v1.Pod{}
	pod.Name, pod.Namespace = "web", "default"
	ec := envContext{PodIPs: []string{"10.88.0.5"}, HostIPs: []string{"192.168.1.2"}, Objects: objs}
	cmRef := v1.EnvFromSource{Prefix: "CFG_", ConfigMapRef: &v1.ConfigMapEnvSource{LocalObjectReference: v1.LocalObjectReference{Name: "cfg"}}}
	pw := v1.EnvVar{Name: "PW", ValueFrom: &v1.EnvVarSource{SecretKeyRef: &v1.SecretKeySelector{
		LocalObjectReference: v1.LocalObjectReference{Name: "creds"}, Key: "password"}}}
	ip := v1.EnvVar{Name: "IP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "status.podIP"}}}
	for _, tc := range []struct {
		name      string
		c         *v1.Container
		ec        envContext
		want, err string
	}{
		{"objects and IPs", &v1.Container{EnvFrom: []v1.EnvFromSource{cmRef},
			Env: []v1.EnvVar{{Name: "Z", Value: "$(CFG_size)"}, pw, ip, {Name: "CFG_color", Value: "red"}}}, ec,
			"CFG_color=red;CFG_size=L;Z=L;PW=s3cret;IP=10.88.0.5", ""},
		{"nil objects", &v1.Container{Env: []v1.EnvVar{pw}}, envContext{Objects: (*Objects)(nil)}, "", `secret "creds" not found`},
		{"no objects", &v1.Container{EnvFrom: []v1.EnvFromSource{cmRef}}, envContext{}, "", `configmap "cfg" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := makeEnvironment(pod, tc.c, tc.ec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, kv := range env {
				got = append(got, kv.Key+"="+string(kv.Value))
			}
			if g := strings.Join(got, ";"); g != tc.want {
				t.Errorf("env\n got  %s\n want %s", g, tc.want)
			}
		})
	}
}

func TestExpandCommand(t *testing.T) {
	c := &v1.Container{Command: []string{"sh", "-c", "echo $(MSG) $$(MSG) $(NOPE)"}, Args: []string{"$(MSG)"}}
	env, _ := makeEnvironment(&v1.Pod{}, &v1.Container{Env: []v1.EnvVar{{Name: "MSG", Value: "hi"}}}, envContext{})
	cmd, args := expandCommand(c, env)
	if strings.Join(cmd, "|") != "sh|-c|echo hi $(MSG) $(NOPE)" || strings.Join(args, "|") != "hi" {
		t.Errorf("cmd %q args %q", cmd, args)
	}
}
