package main

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestRuntimeLinksNoKubernetesAPI keeps the runtime binary lean: the
// Kubernetes API types, apimachinery, client-go and the kubelet's CRI
// client belong to peapod-agent (measured: they cost the idle runtime
// ~3.5 MiB RSS even with the agent off).
func TestRuntimeLinksNoKubernetesAPI(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	forbidden := regexp.MustCompile(`^k8s\.io/(api|apimachinery|client-go|cri-client)(/|$)`)
	var bad []string
	for _, p := range strings.Fields(string(out)) {
		if forbidden.MatchString(p) {
			bad = append(bad, p)
		}
	}
	if len(bad) > 0 {
		t.Errorf("cmd/peapod links %d Kubernetes API packages, first %s: move the code that needs them to peapod-agent", len(bad), bad[0])
	}
}
