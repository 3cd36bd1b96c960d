package agent

import (
	"testing"

	"peapod/agent/objects"
)

// FuzzParseManifest: whatever a manifest file holds, parsing never panics;
// every pod it accepts is valid (validatePod), named, namespaced, has the
// static pod identity and names the file it came from.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		"apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
		"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: c, image: busybox}]}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {k: v}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: ../../etc, namespace: ../x}\nspec: {containers: [{name: c, image: busybox}]}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: v}\nspec:\n  volumes: [{name: h, hostPath: {path: /}}]\n  containers: [{name: c, image: busybox, volumeMounts: [{name: h, mountPath: /host, subPath: ../../}]}]\n",
		"apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv}\nspec: {capacity: {storage: 1Gi}, hostPath: {path: /tmp}}\n",
		"{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"j\"},\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"b\"}]}}",
		"kind: Pod\n", "---\n---\n", "a: [", "\x00\xff\xfe", "apiVersion: v1\nkind: List\nitems: [{kind: List, items: [{kind: List}]}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set := &manifestSet{Objects: objects.New()}
		parseManifest(set, "/etc/peapod/manifests/f.yaml", data, "node")
		for _, p := range set.Pods {
			if p.Name == "" || p.Namespace == "" || p.UID == "" {
				t.Fatalf("accepted pod without identity: %q/%q uid %q", p.Namespace, p.Name, p.UID)
			}
			if err := validatePod(p); err != nil {
				t.Fatalf("accepted an invalid pod %s/%s: %v", p.Namespace, p.Name, err)
			}
			if p.Annotations[annotationManifest] != "/etc/peapod/manifests/f.yaml" {
				t.Fatalf("pod %s/%s does not name its file: %v", p.Namespace, p.Name, p.Annotations)
			}
		}
		for _, e := range set.Errors {
			if e.Error() == "" {
				t.Fatal("empty manifest error")
			}
		}
	})
}
