package infra

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

	"peapod/hack/testenv"
)

// buildPause builds the static pause helper: its confinement needs a
// binary without cgo (AllThreadsSyscall).
func buildPause(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "peapod-pause")
	cmd := exec.Command("go", "build", "-o", out, "peapod/cmd/peapod-pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, b)
	}
	return out
}

func emptyRoot(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pause-root")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testNetNS pins a fresh netns and removes it at cleanup.
func testNetNS(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("peapod-infra-test-%d", os.Getpid())
	if b, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, b)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return "/run/netns/" + name
}

func status(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

func nsLink(t *testing.T, pid, kind string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%s/ns/%s", pid, kind))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func nsenter(t *testing.T, pid int, flag string, args ...string) string {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"-t", fmt.Sprint(pid), flag, "--"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter %s %v: %v: %s", flag, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func stopAtCleanup(t *testing.T, p *Process) {
	t.Cleanup(func() {
		if err := p.Stop(time.Second); err != nil {
			t.Errorf("stop pause %d: %v", p.Pid, err)
		}
	})
}

func TestStartConfinedInPodNamespaces(t *testing.T) {
	testenv.Integration(t)
	testenv.Require(t, "/usr/bin/nsenter", "util-linux")
	pause, root, netns := buildPause(t), emptyRoot(t), testNetNS(t)
	hostPortStart, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	own := map[string]string{}
	for _, kind := range []string{"uts", "ipc", "net"} {
		own[kind] = nsLink(t, "self", kind)
	}

	p, err := Start(Options{
		Path: pause, Root: root, NetNS: netns,
		NewUTS: true, Hostname: "infra-test", NewIPC: true, NewPID: true,
		UID: 65534, GID: 65534, Groups: []uint32{1234, 65534},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	if err := p.SetSysctls(map[string]string{"net.ipv4.ip_unprivileged_port_start": "81", "kernel.shmmni": "2048"}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetSysctls(map[string]string{"kernel.no_such_sysctl": "1"}); err == nil || !strings.Contains(err.Error(), "kernel.no_such_sysctl") {
		t.Errorf("unknown sysctl: %v", err)
	}
	if p.StartTime == 0 {
		t.Error("no start time recorded")
	}
	// No thread of ours stays in the pod's namespaces.
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		for kind, want := range own {
			if got := nsLink(t, "self/task/"+task.Name(), kind); got != want {
				t.Errorf("thread %s left in %s (want %s)", task.Name(), got, want)
			}
		}
	}

	// Start returned after the pause reported itself confined.
	st := status(t, p.Pid)
	want := map[string]string{
		"Uid": "65534 65534 65534 65534", "Gid": "65534 65534 65534 65534", "Groups": "1234 65534",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapAmb": "0000000000000000", "NoNewPrivs": "1",
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("%s = %q, want %q", k, st[k], v)
		}
	}
	if !strings.HasSuffix(st["NSpid"], " 1") {
		t.Errorf("NSpid = %q: not PID 1 of a new PID namespace", st["NSpid"])
	}
	if r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", p.Pid)); err != nil || r != root {
		t.Errorf("root = %q (%v), want %q", r, err, root)
	}

	pid := fmt.Sprint(p.Pid)
	var fi syscall.Stat_t
	if err := syscall.Stat(netns, &fi); err != nil {
		t.Fatal(err)
	}
	if got, want := nsLink(t, pid, "net"), fmt.Sprintf("net:[%d]", fi.Ino); got != want {
		t.Errorf("net ns = %s, want the pinned %s", got, want)
	}
	for _, kind := range []string{"uts", "ipc", "pid"} {
		if nsLink(t, pid, kind) == nsLink(t, "self", kind) {
			t.Errorf("%s namespace is the host's", kind)
		}
	}
	if h := nsenter(t, p.Pid, "-u", "hostname"); h != "infra-test" {
		t.Errorf("hostname in the pod = %q", h)
	}
	if h, _ := os.Hostname(); h == "infra-test" {
		t.Error("the host's hostname changed")
	}
	if v := nsenter(t, p.Pid, "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); v != "81" {
		t.Errorf("net sysctl in the pod = %q", v)
	}
	if v := nsenter(t, p.Pid, "-i", "cat", "/proc/sys/kernel/shmmni"); v != "2048" {
		t.Errorf("ipc sysctl in the pod = %q", v)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); string(now) != string(hostPortStart) {
		t.Errorf("host sysctl changed: %q -> %q", hostPortStart, now)
	}

	// A later peapod adopts it by pid and start time; a wrong start time is
	// a recycled pid.
	if _, err := Adopt(p.Pid, p.StartTime+1); !errors.Is(err, ErrGone) {
		t.Errorf("Adopt with another start time: %v, want ErrGone", err)
	}
	a, err := Adopt(p.Pid, p.StartTime)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("adopted process not seen exiting")
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid)); !os.IsNotExist(err) {
		t.Errorf("pause %d not reaped: %v", p.Pid, err)
	}
	if _, err := Adopt(p.Pid, p.StartTime); !errors.Is(err, ErrGone) {
		t.Errorf("Adopt after exit: %v, want ErrGone", err)
	}
}

func TestStartAsRootDropsCapabilities(t *testing.T) {
	testenv.Integration(t)
	p, err := Start(Options{Path: buildPause(t), Root: emptyRoot(t), NewUTS: true, NewIPC: true, NewPID: true})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	st := status(t, p.Pid)
	for _, k := range []string{"CapPrm", "CapEff", "CapBnd"} {
		if st[k] != "0000000000000000" {
			t.Errorf("uid 0 pause keeps %s = %s", k, st[k])
		}
	}
	if st["Uid"] != "0 0 0 0" || st["NoNewPrivs"] != "1" {
		t.Errorf("Uid %q NoNewPrivs %q", st["Uid"], st["NoNewPrivs"])
	}
	// Host network: the same netns as ours.
	if nsLink(t, fmt.Sprint(p.Pid), "net") != nsLink(t, "self", "net") {
		t.Error("no NetNS given, yet the pause is not in the host's network namespace")
	}
	// It exits on SIGTERM by itself, and Done says so.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("pause did not exit on SIGTERM")
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("signal after exit: %v", err)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	testenv.Integration(t)
	pause, root := buildPause(t), emptyRoot(t)
	for name, o := range map[string]Options{
		"missing binary": {Path: "/nonexistent/pause", Root: root, NewUTS: true},
		"missing netns":  {Path: pause, Root: root, NetNS: "/run/netns/peapod-no-such-netns"},
		"no root":        {Path: pause},
		// The pause itself fails to confine itself: Start must say why.
		"chroot fails": {Path: pause, Root: "/nonexistent/pause-root", NewUTS: true},
	} {
		t.Run(name, func(t *testing.T) {
			before := children(t)
			p, err := Start(o)
			if err == nil {
				p.Stop(time.Second)
				t.Fatal("Start succeeded")
			}
			if name == "chroot fails" && !strings.Contains(err.Error(), "chroot /nonexistent/pause-root") {
				t.Errorf("error does not name the failed step: %v", err)
			}
			if after := children(t); after != before {
				t.Errorf("children before %d, after %d", before, after)
			}
		})
	}
}

// children counts this process's child processes (a failed start must not
// leave one, running or zombie).
func children(t *testing.T) int {
	t.Helper()
	n := 0
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		n += len(strings.Fields(string(b)))
	}
	return n
}

// TestStartInUserNamespace: with mappings the pause runs in a new user
// namespace (as the mapped uid on the host), in new net/UTS/IPC/PID
// namespaces owned by it, with its hostname set from outside; net and IPC
// sysctls are written (the IPC ones as the namespace's root); the binary
// and root are reached through fds, so a 0700 dir on the way is no bar.
func TestStartInUserNamespace(t *testing.T) {
	testenv.Integration(t)
	testenv.Require(t, "/usr/bin/nsenter", "util-linux")
	pause, root := buildPause(t), emptyRoot(t)
	// Both live below 0700 test dirs: the mapped root cannot walk there.
	const base, size = 400000, 65536
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: size}}
	p, err := Start(Options{
		Path: pause, Root: root, NewUTS: true, Hostname: "userns-test", NewIPC: true, NewPID: true,
		UID: 65535, GID: 65535, UIDMappings: m, GIDMappings: m,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	if err := p.SetSysctls(map[string]string{"net.ipv4.ip_unprivileged_port_start": "82", "kernel.shm_rmid_forced": "1"}); err != nil {
		t.Fatal(err)
	}
	st := status(t, p.Pid)
	if want := fmt.Sprintf("%d %d %d %d", base+65535, base+65535, base+65535, base+65535); st["Uid"] != want || st["Gid"] != want {
		t.Errorf("Uid %q Gid %q, want %q", st["Uid"], st["Gid"], want)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", p.Pid)); strings.Join(strings.Fields(string(b)), " ") != fmt.Sprintf("0 %d %d", base, size) {
		t.Errorf("uid_map %q", b)
	}
	pid := fmt.Sprint(p.Pid)
	for _, kind := range []string{"user", "net", "uts", "ipc", "pid"} {
		if nsLink(t, pid, kind) == nsLink(t, "self", kind) {
			t.Errorf("%s namespace is the host's", kind)
		}
	}
	if got := nsenter(t, p.Pid, "-u", "hostname"); got != "userns-test" {
		t.Errorf("hostname %q", got)
	}
	if got := nsenter(t, p.Pid, "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); got != "82" {
		t.Errorf("net sysctl %q", got)
	}
	if got := nsenter(t, p.Pid, "-i", "cat", "/proc/sys/kernel/shm_rmid_forced"); got != "1" {
		t.Errorf("IPC sysctl %q", got)
	}
	// The daemon's own threads keep root's euid.
	if st := status(t, os.Getpid()); !strings.HasPrefix(st["Uid"], "0 0 ") {
		t.Errorf("peapod's uid changed: %q", st["Uid"])
	}
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if !strings.Contains(string(b), "\nUid:\t0\t0\t0\t0\n") {
			t.Errorf("thread %s runs with another uid", task.Name())
		}
	}
	// Without a netns of the caller's.
	if _, err := Start(Options{Path: pause, Root: root, NetNS: "/run/netns/x", UIDMappings: m, GIDMappings: m}); err == nil {
		t.Error("a netns to join with a user namespace must be refused")
	}
}
