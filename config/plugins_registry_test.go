package config

import (
	"strings"
	"testing"
)

func TestPluginsRegistryDir(t *testing.T) {
	c := Default()
	if got := c.PluginsRegistry(); got != "/var/lib/peapod/plugins_registry" {
		t.Fatalf("default %s", got)
	}
	if err := Parse([]byte("root = \"/r\"\n[agent]\nplugins_registry_dir = \"/var/lib/kubelet/plugins_registry\"\n"), c); err != nil {
		t.Fatal(err)
	}
	if got := c.PluginsRegistry(); got != "/var/lib/kubelet/plugins_registry" {
		t.Fatalf("configured %s", got)
	}
	c = Default()
	if err := Parse([]byte("[agent]\nplugins_registry_dir = \"rel\"\n"), c); err == nil || !strings.Contains(err.Error(), "agent.plugins_registry_dir") {
		t.Fatalf("relative dir: %v", err)
	}
}
