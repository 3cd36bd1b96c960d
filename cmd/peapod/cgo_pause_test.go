package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"peapod/hack/testenv"
)

// TestCgoBuildWithoutPauseSaysSo: peapod built as a Go user builds it
// (`go build`, cgo on wherever gcc is) and without peapod-pause beside it
// cannot confine its own pause; `peapod check` fails naming the fix, where
// serve used to report ready and fail every RunPodSandbox.
func TestCgoBuildWithoutPauseSaysSo(t *testing.T) {
	testenv.Integration(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc: a cgo build cannot be made here")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "peapod")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build with cgo: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "peapod.toml")
	if err := os.WriteFile(cfg, []byte("root = \""+dir+"/root\"\nstate = \""+dir+"/run\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("peapod check passed for a cgo build without peapod-pause:\n%s", out)
	}
	if !strings.Contains(string(out), "built with cgo") || !strings.Contains(string(out), "CGO_ENABLED=0") {
		t.Errorf("peapod check does not say why or how to fix it:\n%s", out)
	}
}
