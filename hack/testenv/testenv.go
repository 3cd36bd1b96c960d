// Package testenv gives peapod's integration tests what they need from the
// machine: a local docker-registry loaded with the test images, a busybox
// rootfs on disk, and one switch for tests that need root and real kernel
// features.
//
// The switch is the environment variable PEAPOD_INTEGRATION. Unset, a test
// whose tools are missing is skipped with the reason and the fix
// (hack/install-deps.sh test). PEAPOD_INTEGRATION=1 (as CI sets it) turns
// every such skip into a failure, so a CI machine that lacks a package cannot
// pass by skipping.
//
// Every process started here is stopped by its PID in t.Cleanup, and every
// directory is under t.TempDir(). No traffic leaves 127.0.0.1.
//
//	func TestPull(t *testing.T) {
//		addr := testenv.Registry(t) // "127.0.0.1:41234", images pushed
//		ref := testenv.Ref(addr, imagebuild.RepoBusybox) // "127.0.0.1:41234/library/busybox:latest"
//		...
//	}
package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"peapod/hack/testimages/imagebuild"
	"peapod/internal/freeport"
)

// IntegrationEnv is the variable that makes missing prerequisites fatal.
const IntegrationEnv = "PEAPOD_INTEGRATION"

// RegistryBinary is Debian's docker-registry (package docker-registry).
var RegistryBinary = "/usr/bin/docker-registry"

// IntegrationEnabled reports whether PEAPOD_INTEGRATION=1.
func IntegrationEnabled() bool { return os.Getenv(IntegrationEnv) == "1" }

// Integration skips t unless PEAPOD_INTEGRATION=1 and the test runs as root.
// Use it first in tests that create namespaces, mounts, cgroups or run runc.
func Integration(t testing.TB) {
	t.Helper()
	if !IntegrationEnabled() {
		t.Skipf("integration test: set %s=1 (and run as root) to run it", IntegrationEnv)
	}
	if os.Geteuid() != 0 {
		t.Skipf("integration test needs root (euid %d)", os.Geteuid())
	}
}

// Require checks that the file at path exists. When it does not, t is skipped
// (or, with PEAPOD_INTEGRATION=1, failed) with a message naming the Debian
// package that provides it.
func Require(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	msg := fmt.Sprintf("%s not found: install Debian package %s (hack/install-deps.sh test)", path, debianPackage)
	if IntegrationEnabled() {
		t.Fatalf("%s=1 but %s", IntegrationEnv, msg)
	}
	t.Skip(msg)
}

func busybox() string {
	if p := os.Getenv(imagebuild.BusyboxEnv); p != "" {
		return p
	}
	return imagebuild.DefaultBusybox
}

// Images returns the test images, built once per test binary.
func Images(t testing.TB) *imagebuild.Set {
	t.Helper()
	Require(t, busybox(), "busybox-static")
	set, err := imagebuild.Cached(imagebuild.Options{})
	if err != nil {
		t.Fatalf("build test images: %v", err)
	}
	return set
}

// Ref is the reference of repo (e.g. imagebuild.RepoBusybox) with tag
// "latest" in the registry at addr.
func Ref(addr, repo string) string { return addr + "/" + repo + ":" + imagebuild.Tag }

// Registry starts a docker-registry on a free 127.0.0.1 port with its storage
// in t.TempDir(), pushes every test image (see package imagebuild for names
// and contents) and returns its address, "127.0.0.1:PORT". The registry is
// stopped, by PID, when the test ends.
func Registry(t testing.TB) string {
	t.Helper()
	set := Images(t)
	addr := EmptyRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := imagebuild.Push(ctx, set, addr, ""); err != nil {
		t.Fatalf("push test images to %s: %v", addr, err)
	}
	return addr
}

// EmptyRegistry is Registry without the images.
func EmptyRegistry(t testing.TB) string {
	t.Helper()
	Require(t, RegistryBinary, "docker-registry")
	dir := t.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between probe and bind
		addr, err := startRegistry(t, dir)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	t.Fatalf("start docker-registry: %v", lastErr)
	return ""
}

// RegistryConfig is the docker-registry configuration for a local test
// registry listening on addr with its storage in dataDir: no proxy
// (pull-through) section, no notifications, no auth, no health checks, so the
// registry never connects anywhere.
func RegistryConfig(addr, dataDir string) string {
	return fmt.Sprintf(`# written by peapod hack/testenv: local test registry, no outbound connections
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: peapod-local-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
`, dataDir, addr)
}

func freePort() (string, error) {
	p, err := freeport.Get()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", p), nil
}

func startRegistry(t testing.TB, dir string) (string, error) {
	addr, err := freePort()
	if err != nil {
		return "", err
	}
	port := addr[strings.LastIndex(addr, ":")+1:]
	rdir := filepath.Join(dir, "registry-"+port)
	if err := os.MkdirAll(filepath.Join(rdir, "data"), 0o755); err != nil {
		return "", err
	}
	cfg := filepath.Join(rdir, "config.yml")
	if err := os.WriteFile(cfg, []byte(RegistryConfig(addr, filepath.Join(rdir, "data"))), 0o644); err != nil {
		return "", err
	}
	logPath := filepath.Join(rdir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()

	cmd := exec.Command(RegistryBinary, "serve", cfg)
	cmd.Env = []string{"HOME=/nonexistent"} // no REGISTRY_* overrides, no proxies
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies without running its cleanups, take the registry along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return "", err
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(pid, syscall.SIGKILL)
			<-exited
		}
	}

	client := &http.Client{Transport: imagebuild.Transport(), Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("docker-registry on %s exited at start:\n%s", addr, tail(log, 2000))
		default:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", fmt.Errorf("docker-registry on %s: /v2/ did not answer within 10s (last error %v)", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("docker-registry pid %d on %s (up in %v, dir %s)", pid, addr, time.Since(start).Round(time.Millisecond), rdir)
	t.Cleanup(stop)
	return addr, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// BusyboxRootfs lays the busybox rootfs (the same tree as library/busybox's
// layer: /bin/busybox with hard-linked applets, /etc/passwd, /etc/group, /tmp
// 1777, ...) out under dir and returns dir. An empty dir means a new
// t.TempDir(). Ownership is applied only when the test runs as root.
func BusyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	Require(t, busybox(), "busybox-static")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := imagebuild.WriteRootfs(dir, imagebuild.Options{}); err != nil {
		t.Fatalf("busybox rootfs in %s: %v", dir, err)
	}
	return dir
}
