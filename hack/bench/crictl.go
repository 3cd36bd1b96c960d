package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// crictl runs bin/crictl against one endpoint with an empty config file (no
// /etc/crictl.yaml can change what it does).
type crictl struct {
	bin, endpoint, config string
}

func newCrictl(o options, endpoint string) *crictl {
	cfg := filepath.Join(o.dir, "crictl-"+strings.NewReplacer("/", "_", ":", "_").Replace(endpoint)+".yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 120\n", endpoint, endpoint)), 0o644)
	return &crictl{bin: filepath.Join(o.repo, "bin/crictl"), endpoint: endpoint, config: cfg}
}

// run returns crictl's trimmed stdout.
func (c *crictl) run(ctx context.Context, args ...string) (string, error) {
	out, _, err := c.timed(ctx, args...)
	return out, err
}

// timed runs crictl once and says how long the whole invocation took
// (process start included: ~the same fixed cost for both runtimes).
func (c *crictl) timed(ctx context.Context, args ...string) (string, time.Duration, error) {
	full := append([]string{"--config", c.config, "--runtime-endpoint", c.endpoint, "--image-endpoint", c.endpoint, "--timeout", "120s"}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		return "", took, fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), took, nil
}
