package sandbox

import (
	"os"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestSandboxHostname(t *testing.T) {
	node, _ := os.Hostname()
	long := strings.Repeat("p", 80)
	for _, tt := range []struct {
		name string
		cfg  *runtimeapi.PodSandboxConfig
		want string
		err  bool
	}{
		{"set", &runtimeapi.PodSandboxConfig{Hostname: "web-0"}, "web-0", false},
		// critest's pod names are longer than the kernel's 64 bytes.
		{"unset: the node's, never the pod name", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: long}}, node, false},
		{"too long", &runtimeapi.PodSandboxConfig{Hostname: long}, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sandboxHostname(tt.cfg)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("got %q, %v; want %q (error %v)", got, err, tt.want, tt.err)
			}
		})
	}
}
