package lxcfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lxcfsProc is an lxcfs this test started on a private mount point.
type lxcfsProc struct {
	t   *testing.T
	dir string
	cmd *exec.Cmd
}

func startLXCFS(t *testing.T, dir string) *lxcfsProc {
	t.Helper()
	cmd := exec.Command("/usr/bin/lxcfs", "--foreground", "--enable-cfs", "-p", filepath.Join(filepath.Dir(dir), "lxcfs.pid"), dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &lxcfsProc{t: t, dir: dir, cmd: cmd}
	t.Cleanup(p.stop)
	for deadline := time.Now().Add(10 * time.Second); !Probe(dir).Up; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lxcfs did not come up at %s: %+v", dir, Probe(dir))
		}
	}
	return p
}

// kill9 kills lxcfs by its PID, leaving its mount disconnected, as a
// crash does.
func (p *lxcfsProc) kill9() {
	if p.cmd != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

// stop ends lxcfs by its PID and unmounts what it leaves.
func (p *lxcfsProc) stop() {
	if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		p.cmd = nil
	}
	for unix.Unmount(p.dir, unix.MNT_DETACH) == nil {
	}
}

func needLXCFS(t *testing.T) {
	t.Helper()
	if os.Getenv("PEAPOD_INTEGRATION") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and PEAPOD_INTEGRATION=1")
	}
	if _, err := os.Stat("/usr/bin/lxcfs"); err != nil {
		t.Skip("lxcfs is not installed (make deps)")
	}
}

// TestSyncFollowsLXCFS: a process in a mount namespace of its own (a
// container without the runtime) gets lxcfs's files bound in; lxcfs is
// killed and the dead binds are taken off, so reads work again with the
// host's figures; lxcfs comes back and the new mount's files go in.
func TestSyncFollowsLXCFS(t *testing.T) {
	needLXCFS(t)
	dir := filepath.Join(t.TempDir(), "lxcfs")
	os.MkdirAll(dir, 0o755)
	lx := startLXCFS(t, dir)

	ctr := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "300")
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctr.Process.Kill(); ctr.Wait() })
	tgt := Target{Pid: ctr.Process.Pid}
	read := func(p string) (string, error) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", tgt.Pid, p))
		return string(data), err
	}
	// unshare has exec'd sleep once the namespace differs from ours.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		a, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", tgt.Pid))
		b, _ := os.Readlink("/proc/self/ns/mnt")
		if a != b && a != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare did not make a mount namespace")
		}
	}
	sync := func(s State) Plan {
		t.Helper()
		mounts, err := tgt.Mounts()
		if err != nil {
			t.Fatal(err)
		}
		plan := Decide(mounts, s, nil)
		if err := Sync(tgt, dir, plan); err != nil {
			t.Fatalf("Sync %+v: %v", plan, err)
		}
		return plan
	}
	lxcfsAt := func(p string) uint64 {
		mounts, _ := tgt.Mounts()
		var dev uint64
		for _, m := range mounts {
			if m.Point == p && m.FSType == fsType {
				dev = m.Dev
			}
		}
		return dev
	}

	s1 := Probe(dir)
	if !s1.Up || len(s1.Paths) != len(Paths) {
		t.Fatalf("probe = %+v, want every path served", s1)
	}
	if p := sync(s1); len(p.Attach) != len(Paths) {
		t.Fatalf("first sync = %+v", p)
	}
	for _, p := range Paths {
		if dev := lxcfsAt(p); dev != s1.Dev {
			t.Errorf("%s: lxcfs device %d, want %d", p, dev, s1.Dev)
		}
	}
	if _, err := read("/proc/meminfo"); err != nil {
		t.Fatalf("read through lxcfs: %v", err)
	}
	if p := sync(s1); !p.Empty() {
		t.Fatalf("second sync is not a no-op: %+v", p)
	}

	lx.kill9()
	if _, err := read("/proc/meminfo"); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("read with lxcfs killed: %v, want ENOTCONN (what a container sees until the binds go)", err)
	}
	s2 := Probe(dir)
	if s2.Up || s2.Reason != ReasonDisconnected {
		t.Fatalf("probe after kill = %+v", s2)
	}
	if p := sync(s2); len(p.Detach) != len(Paths) || len(p.Attach) != 0 {
		t.Fatalf("sync after kill = %+v", p)
	}
	host, _ := os.ReadFile("/proc/meminfo")
	got, err := read("/proc/meminfo")
	if err != nil || strings.SplitN(got, "\n", 2)[0] != strings.SplitN(string(host), "\n", 2)[0] {
		t.Fatalf("after detach: %q, %v; want the host's %q", got, err, strings.SplitN(string(host), "\n", 2)[0])
	}

	// Restarted as a supervisor would: the dead mount off, a new lxcfs.
	lx.stop()
	lx = startLXCFS(t, dir)
	s3 := Probe(dir)
	if s3.Dev == s1.Dev {
		t.Fatalf("restarted lxcfs kept device %d", s1.Dev)
	}
	if p := sync(s3); len(p.Attach) != len(Paths) || len(p.Detach) != 0 {
		t.Fatalf("sync after restart = %+v", p)
	}
	for _, p := range Paths {
		if dev := lxcfsAt(p); dev != s3.Dev {
			t.Errorf("%s after restart: lxcfs device %d, want %d", p, dev, s3.Dev)
		}
		if _, err := read(p); err != nil {
			t.Errorf("read %s after restart: %v", p, err)
		}
	}
	// The binds are read-only, as the spec's are.
	mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", tgt.Pid))
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, " /proc/meminfo ") && !strings.Contains(line, " ro,nosuid,nodev,noexec") {
			t.Errorf("bind options: %s", line)
		}
	}

	// A pid that is not the container's is refused.
	if err := Sync(Target{Pid: tgt.Pid, Cgroup: "/not-its-cgroup"}, dir, Plan{Detach: []string{"/proc/meminfo"}}); err == nil || !strings.Contains(err.Error(), "not in cgroup") {
		t.Errorf("Sync with the wrong cgroup: %v", err)
	}
	// So is peapod's own namespace.
	if err := Sync(Target{Pid: os.Getpid()}, dir, Plan{Detach: []string{"/proc/meminfo"}}); err == nil || !strings.Contains(err.Error(), "shares peapod's mount namespace") {
		t.Errorf("Sync into our own namespace: %v", err)
	}
}
