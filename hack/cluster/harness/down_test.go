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
