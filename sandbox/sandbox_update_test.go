package sandbox

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/store"
)

// setConfig persists the new config: a sandbox loaded from the store (as
// after a restart) has it.
func TestSandboxSetConfigPersists(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "peapod.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Uid: "u"}}
	b, _ := proto.Marshal(cfg)
	sb, err := newSandbox(SandboxRecord{ID: "sb1", ConfigProto: b})
	if err != nil {
		t.Fatal(err)
	}
	next := proto.Clone(cfg).(*runtimeapi.PodSandboxConfig)
	next.Linux = &runtimeapi.LinuxPodSandboxConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512}}
	if err := sb.setConfig(st, next); err != nil {
		t.Fatal(err)
	}
	if got := sb.Config().GetLinux().GetResources().GetCpuShares(); got != 512 {
		t.Errorf("in memory: cpu shares %d", got)
	}
	var rec SandboxRecord
	if err := st.Get(store.BucketSandboxes, "sb1", &rec); err != nil {
		t.Fatal(err)
	}
	loaded, err := newSandbox(rec)
	if err != nil {
		t.Fatal(err)
	}
	if got := loaded.Config().GetLinux().GetResources().GetCpuShares(); got != 512 {
		t.Errorf("after reload: cpu shares %d", got)
	}
	sb.removed = true
	if err := sb.setConfig(st, cfg); err == nil {
		t.Error("setConfig on a removed sandbox succeeded")
	}
}
