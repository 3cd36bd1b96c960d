package cgroupfs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"peapod/hack/testenv"
)

// TestJoinAndRemove: a process joins a two-level cgroup path in every
// hierarchy (new cpuset levels get their parent's cpus and mems, or the
// join would fail), gets its cpu shares, and Remove leaves nothing once it
// is gone.
func TestJoinAndRemove(t *testing.T) {
	testenv.Integration(t)
	top := fmt.Sprintf("/peapod-cgroupfs-test-%d", os.Getpid())
	path := top + "/pod/ctr"
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
		Remove(path)
		Remove(top + "/pod")
		Remove(top)
	})

	if err := Join(path, cmd.Process.Pid, 2); err != nil {
		t.Fatalf("Join: %v", err)
	}
	dirs := Dirs(path)
	if len(dirs) == 0 {
		t.Fatal("no cgroup dirs after Join")
	}
	for _, d := range dirs {
		procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil || !strings.Contains(string(procs), strconv.Itoa(cmd.Process.Pid)) {
			t.Errorf("%s/cgroup.procs = %q (%v), want pid %d", d, procs, err, cmd.Process.Pid)
		}
	}
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		if !strings.HasSuffix(line, ":"+path) {
			t.Errorf("/proc/pid/cgroup line %q is not in %s", line, path)
		}
	}
	if b, err := os.ReadFile(filepath.Join(Root, "cpu", path, "cpu.shares")); err == nil && strings.TrimSpace(string(b)) != "2" {
		t.Errorf("cpu.shares = %q, want 2", b)
	}

	// While the process lives, Remove keeps its cgroup (best effort).
	Remove(path)
	if len(Dirs(path)) == 0 {
		t.Error("Remove removed a cgroup that still has a task")
	}
	cmd.Process.Kill()
	cmd.Wait()
	exited = true
	Remove(path)
	Remove(top + "/pod")
	Remove(top)
	if left := Dirs(top); len(left) != 0 {
		t.Errorf("left after Remove: %v", left)
	}
}
