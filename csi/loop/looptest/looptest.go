// Package looptest runs the real peapod-csi-loop binary for integration
// tests of its clients (the volume manager, the agent): built once per
// test into the test's temp dir, started and stopped by its PID.
package looptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Driver is one peapod-csi-loop process: Start runs it, Stop (also a
// cleanup Start registers) ends it by its PID.
type Driver struct {
	Bin      string // the binary (Build)
	Endpoint string // its CSI socket
	RegDir   string // where it puts its plugin-registration socket
	DiskDir  string // its disk files
	LogPath  string // its stdout and stderr, appended to
	NodeID   string // default "node1"
	Args     []string

	cmd *exec.Cmd
}

// Build compiles cmd/peapod-csi-loop into dir and returns its path.
func Build(t testing.TB, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "peapod-csi-loop")
	if out, err := exec.Command(goBin, "build", "-o", bin, "peapod/cmd/peapod-csi-loop").CombinedOutput(); err != nil {
		t.Fatalf("go build peapod-csi-loop: %v\n%s", err, out)
	}
	return bin
}

// Start runs the driver; a second Start after Stop runs a new process.
func (d *Driver) Start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	node := d.NodeID
	if node == "" {
		node = "node1"
	}
	args := append([]string{"--endpoint", "unix://" + d.Endpoint, "--node-id", node, "--root", d.DiskDir, "--registration-dir", d.RegDir}, d.Args...)
	cmd := exec.Command(d.Bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
}

// Stop ends the driver by its PID: SIGTERM (it removes its sockets), then
// SIGKILL after 15 s. Without a running driver it does nothing.
func (d *Driver) Stop(t testing.TB) {
	if d.cmd == nil {
		return
	}
	cmd := d.cmd
	d.cmd = nil
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Logf("SIGTERM driver %d: %v", cmd.Process.Pid, err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("driver %d ignored SIGTERM; killing it", cmd.Process.Pid)
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Log is what the driver wrote so far.
func (d *Driver) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}
