package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

const multiDoc = `# a config map and a pod
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: prod
stringData:
  password: s3cret
data:
  user: YWRtaW4=
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  hostNetwork: true
  initContainers:
  - name: init
    image: busybox:1.36
  containers:
  - name: app
    image: nginx
    bogusField: 1
    ports:
    - containerPort: 8080
    resources:
      limits: {cpu: 500m, memory: 64Mi}
    livenessProbe:
      httpGet: {port: 8080}
    env:
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
  volumes:
  - name: scratch
---
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestManifestMultiDocAndDefaults(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "web.yaml", multiDoc)
	set := readManifestDir(dir, "node1")
	if len(set.Errors) != 0 {
		t.Fatalf("errors: %v", set.Errors)
	}
	if len(set.Pods) != 1 || set.Objects.ConfigMap("default", "cfg") == nil {
		t.Fatalf("pods %d, configmap %v", len(set.Pods), set.Objects.ConfigMaps)
	}
	s := set.Objects.Secret("prod", "creds")
	if s == nil || string(s.Data["password"]) != "s3cret" || string(s.Data["user"]) != "admin" || s.Type != v1.SecretTypeOpaque {
		t.Fatalf("secret: %+v", s)
	}
	if len(set.Warnings) != 1 || !strings.Contains(set.Warnings[0], "bogusField") {
		t.Errorf("warnings: %q, want one about bogusField", set.Warnings)
	}
	p := set.Pods[0]
	if p.Namespace != "default" || p.Spec.RestartPolicy != v1.RestartPolicyAlways || p.Spec.DNSPolicy != v1.DNSClusterFirst ||
		*p.Spec.TerminationGracePeriodSeconds != 30 || p.Spec.NodeName != "node1" {
		t.Errorf("pod defaults: %+v", p.Spec)
	}
	app := p.Spec.Containers[0]
	if app.ImagePullPolicy != v1.PullAlways || p.Spec.InitContainers[0].ImagePullPolicy != v1.PullIfNotPresent {
		t.Errorf("pull policies %s %s", app.ImagePullPolicy, p.Spec.InitContainers[0].ImagePullPolicy)
	}
	if app.TerminationMessagePath != "/dev/termination-log" || app.TerminationMessagePolicy != v1.TerminationMessageReadFile {
		t.Errorf("termination message defaults: %q %q", app.TerminationMessagePath, app.TerminationMessagePolicy)
	}
	if app.Ports[0].Protocol != v1.ProtocolTCP || app.Ports[0].HostPort != 8080 {
		t.Errorf("port defaults: %+v", app.Ports[0])
	}
	lp := app.LivenessProbe
	if lp.PeriodSeconds != 10 || lp.TimeoutSeconds != 1 || lp.SuccessThreshold != 1 || lp.FailureThreshold != 3 || lp.HTTPGet.Path != "/" || lp.HTTPGet.Scheme != v1.URISchemeHTTP {
		t.Errorf("probe defaults: %+v", lp)
	}
	if app.Resources.Requests.Cpu().MilliValue() != 500 || app.Resources.Requests.Memory().Value() != 64<<20 {
		t.Errorf("requests default to limits: %v", app.Resources.Requests)
	}
	if app.Env[0].ValueFrom.FieldRef.APIVersion != "v1" {
		t.Errorf("fieldRef apiVersion not defaulted")
	}
	if p.Spec.Volumes[0].EmptyDir == nil {
		t.Errorf("volume without source is not an emptyDir")
	}
	if len(p.UID) != 32 || p.Annotations[annotationManifest] != path || p.Annotations[annotationConfigSource] != "file" {
		t.Errorf("identity: uid %q annotations %v", p.UID, p.Annotations)
	}

	// Same content → same UID; changed content → another UID.
	again := readManifestDir(dir, "node1")
	if again.Pods[0].UID != p.UID {
		t.Errorf("UID not stable: %s then %s", p.UID, again.Pods[0].UID)
	}
	writeFile(t, dir, "web.yaml", strings.Replace(multiDoc, "image: nginx", "image: nginx:1.25", 1))
	changed := readManifestDir(dir, "node1")
	if changed.Pods[0].UID == p.UID {
		t.Errorf("UID unchanged after a spec change")
	}
	if changed.Pods[0].Spec.Containers[0].ImagePullPolicy != v1.PullIfNotPresent {
		t.Errorf("tagged image pull policy %s", changed.Pods[0].Spec.Containers[0].ImagePullPolicy)
	}
}

func TestManifestInvalidDocsDoNotStopOthers(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a-good.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  containers: [{name: c, image: busybox}]\n")
	writeFile(t, dir, "b-bad.yaml", `apiVersion: v1
kind: Pod
metadata: {name: nocontainers}
spec: {containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: badyaml}
spec:
  containers: [{name: c, image: busybox, ports: "notalist"}]
---
apiVersion: v1
kind: Pod
metadata: {name: second-good}
spec:
  restartPolicy: Never
  containers: [{name: c, image: busybox}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
`)
	writeFile(t, dir, "c-garbage.yml", "{{{ not yaml")
	writeFile(t, dir, "d-dup.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: good}\nspec:\n  containers: [{name: x, image: busybox}]\n")
	writeFile(t, dir, "README.txt", "not a manifest")
	set := readManifestDir(dir, "n")
	var names []string
	for _, p := range set.Pods {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "good,second-good" {
		t.Errorf("pods %v", names)
	}
	if len(set.Errors) != 4 {
		t.Fatalf("want 4 errors (no containers, bad yaml, garbage, duplicate), got %d: %v", len(set.Errors), set.Errors)
	}
	if set.Errors[0].Name != "nocontainers" || !strings.Contains(set.Errors[0].Error(), "at least one container") {
		t.Errorf("first error: %v", set.Errors[0])
	}
	if !strings.Contains(set.Errors[3].Error(), "already defined") {
		t.Errorf("duplicate error: %v", set.Errors[3])
	}
	if len(set.Warnings) != 1 || !strings.Contains(set.Warnings[0], "Deployment") {
		t.Errorf("warnings %v", set.Warnings)
	}
}

func TestManifestListAndJSON(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "list.json", `{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x"},"spec":{"containers":[{"name":"c","image":"busybox@sha256:abc"}]}},
 {"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"data"},"spec":{}}]}`)
	set := readManifestDir(dir, "n")
	if len(set.Errors) != 0 || len(set.Pods) != 1 || set.Objects.PersistentVolumeClaim("default", "data") == nil {
		t.Fatalf("errors %v pods %d pvcs %v", set.Errors, len(set.Pods), set.Objects.PersistentVolumeClaims)
	}
	if set.Pods[0].Spec.Containers[0].ImagePullPolicy != v1.PullIfNotPresent {
		t.Errorf("digest image pull policy %s", set.Pods[0].Spec.Containers[0].ImagePullPolicy)
	}
}
