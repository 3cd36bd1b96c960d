package harness

import (
	"path/filepath"
	"strings"
	"testing"

	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"
)

func TestCSIObjects(t *testing.T) {
	kinds := map[string]int{}
	for _, doc := range strings.Split(csiObjects, "\n---\n") {
		var obj struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.UnmarshalStrict([]byte(doc), &map[string]any{}); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj.Kind == "" || obj.Metadata.Name == "" {
			t.Fatalf("no kind or name (%v):\n%s", err, doc)
		}
		kinds[obj.Kind]++
		switch obj.Kind {
		case "StorageClass":
			var sc storagev1.StorageClass
			if err := yaml.UnmarshalStrict([]byte(doc), &sc); err != nil {
				t.Fatal(err)
			}
			if sc.Name != CSIStorageClass || sc.Provisioner != CSIDriverName ||
				sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" ||
				sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
				sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion {
				t.Errorf("StorageClass %+v", sc)
			}
		case "CSIDriver":
			var d storagev1.CSIDriver
			if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
				t.Fatal(err)
			}
			if d.Name != CSIDriverName || d.Spec.AttachRequired == nil || !*d.Spec.AttachRequired ||
				d.Spec.PodInfoOnMount == nil || *d.Spec.PodInfoOnMount {
				t.Errorf("CSIDriver %+v", d)
			}
		}
	}
	want := map[string]int{"CSIDriver": 1, "StorageClass": 1, "ClusterRole": 3, "ClusterRoleBinding": 3}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
}

func TestCSIPlaces(t *testing.T) {
	c := &Cluster{Dir: "/run/c", Node: NodeKubelet}
	if got := c.csiRegistrationDir(); got != "/run/c/kubelet/root/plugins_registry" {
		t.Errorf("kubelet node: registration dir %s", got)
	}
	if c.csiSteps() != nil {
		t.Errorf("steps without Options.CSISidecars")
	}
	c.opts.CSISidecars = "/x"
	if len(c.csiSteps()) != 1 {
		t.Errorf("no CSI step with Options.CSISidecars")
	}
	c.opts.Hosts = 2
	if c.csiSteps() != nil {
		t.Errorf("CSI step on a multi-node cluster")
	}
	a := &Cluster{Dir: "/run/c", Node: NodePeapodAgent}
	if got := a.csiRegistrationDir(); got != filepath.Join("/run/c", NodePeapodAgent, "root", "plugins_registry") {
		t.Errorf("agent node: registration dir %s", got)
	}
	if a.KubeletRootDir() != "" {
		t.Errorf("agent node: kubelet root dir %q", a.KubeletRootDir())
	}
}
