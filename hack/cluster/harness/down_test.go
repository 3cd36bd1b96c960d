package harness

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveLogLinksInto(t *testing.T) {
	links, cluster, other := t.TempDir(), t.TempDir(), t.TempDir()
	for name, target := range map[string]string{
		"ours.log":   filepath.Join(cluster, "pod-logs/ns_pod_uid/c/0.log"),
		"theirs.log": filepath.Join(other, "x.log"),
		"prefix.log": cluster + "-other/x.log", // same prefix, another dir
	} {
		if err := os.Symlink(target, filepath.Join(links, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(links, "file.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeLogLinksInto(links, cluster); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"ours.log": false, "theirs.log": true, "prefix.log": true, "file.log": true} {
		_, err := os.Lstat(filepath.Join(links, name))
		if got := err == nil; got != want {
			t.Errorf("%s kept = %v, want %v", name, got, want)
		}
	}
	if err := removeLogLinksInto(filepath.Join(links, "absent"), cluster); err != nil {
		t.Errorf("absent dir: %v", err)
	}
}

func TestPodCgroup(t *testing.T) {
	for _, tt := range []struct{ info, want string }{
		{`{"pid":1,"cgroupParent":"/peapod/pod1234-ab"}`, "/peapod/pod1234-ab"},
		{`{"cgroupParent":"/peapod-cluster-pk120/kubepods/besteffort/podx"}`, "/peapod-cluster-pk120/kubepods/besteffort/podx"},
		{`{"cgroupParent":"/peapod"}`, ""},             // a shared parent, never a pod's
		{`{"cgroupParent":"/kubepods/burstable"}`, ""}, // a QoS level
		{`{"cgroupParent":"/podtop"}`, ""},             // top level: too close to the root to touch
		{`{"cgroupParent":"kubepods/podx"}`, ""},       // relative
		{`{"cgroupParent":"/a/../../podx"}`, ""},       // cleans to /podx
		{`{"cgroupParent":""}`, ""},
		{`{"config":{}}`, ""}, // containerd's info has no such key
		{`not json`, ""},
	} {
		if got := podCgroup(tt.info); got != tt.want {
			t.Errorf("podCgroup(%s) = %q, want %q", tt.info, got, tt.want)
		}
	}
}

func TestRemoveEmptyDirs(t *testing.T) {
	root := t.TempDir()
	empty, full, gone := filepath.Join(root, "empty"), filepath.Join(root, "full"), filepath.Join(root, "gone")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "kubelet.sock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if kept := removeEmptyDirs([]string{empty, full, gone}); len(kept) != 1 {
		t.Errorf("kept %v, want only %s", kept, full)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Errorf("%s: %v, want removed", empty, err)
	}
	if _, err := os.Stat(filepath.Join(full, "kubelet.sock")); err != nil {
		t.Errorf("another's file removed: %v", err)
	}
}
