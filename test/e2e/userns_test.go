package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// usernsRunc is the current runc hack/runc.sh builds (make runc), the only
// runtime here that makes idmapped mounts; Debian's 1.1.5 cannot.
func usernsRunc(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("PEAPOD_CACHE")
	if cache == "" {
		cache = "/var/cache/peapod"
	}
	p := filepath.Join(cache, "runc-v1.5.3", "bin", "runc")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no current runc at %s (build it with `make runc` or hack/runc.sh): user namespaces need idmapped mounts, which Debian's runc 1.1.5 lacks", p)
	}
	return p
}

// newUsernsDaemon is a daemon with the handler runc-userns (the current
// runc) beside Debian's runc, pulling from a local registry.
func newUsernsDaemon(t *testing.T) *daemon {
	t.Helper()
	runc := usernsRunc(t)
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{
		mirrors:     map[string]string{"docker.io": "http://" + reg},
		extraConfig: fmt.Sprintf("[runtimes.runc-userns]\npath = %q\nroot = %q\n", runc, filepath.Join(t.TempDir(), "runc-userns")),
	})
	// The pod's root (an unprivileged host uid) walks to its bundle and
	// volumes: the daemon's temp dir is 0700 (/run/peapod and
	// /var/lib/peapod are 0711 or wider in production).
	if err := os.Chmod(d.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUsernsPod: a pod with its own user namespace (`hostUsers: false`)
// on the handler whose runc supports it. Inside, container root is uid 0
// and /proc/self/uid_map shows the kubelet's mapping; on the host the
// container's process runs as the mapped unprivileged uid; the rootfs is
// container root's (idmapped layers, upper owned by the mapped root); a
// hostPath volume with the mapping is idmapped (host root's files are
// root's inside, and what container root writes is host root's on disk);
// namespaced sysctls, sysfs, exec and a non-root container work; a container
// created after peapod's kill -9 joins the same namespace; the netns pin
// goes with the pod. Status reports the feature per handler, and Debian's
// runc refuses such a pod naming the field and the handler. Skips when the
// current runc is not built.
func TestUsernsPod(t *testing.T) {
	usernsRunc(t) // skips before Parallel
	t.Parallel()
	d := newUsernsDaemon(t)
	pullBusybox(t, d)
	ctx := d.ctx()

	// Status: per handler.
	st, err := d.rt.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, h := range st.RuntimeHandlers {
		got[h.Name] = h.GetFeatures().GetUserNamespaces()
	}
	if !got["runc-userns"] || got["runc"] || got[""] {
		t.Errorf("user_namespaces per handler = %v, want only runc-userns", got)
	}

	const hostBase, size = 300000, 65536
	mapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: hostBase, Length: size}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mapping, Gids: mapping}
	cfg := podConfig(d, "userns")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns},
	}
	// Namespaced sysctls land in the pod's own net and IPC namespaces
	// (made inside its user namespace).
	cfg.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "100", "kernel.shm_rmid_forced": "1"}

	// Debian's runc: refused before any work, naming field and handler.
	_, err = d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "runc"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "userns_options") || !strings.Contains(err.Error(), `"runc"`) {
		t.Fatalf("userns pod on runc 1.1.5: want FailedPrecondition naming userns_options and the handler, got %v", err)
	}
	// Bad mappings are the request's fault.
	bad := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: []*runtimeapi.IDMapping{{ContainerId: 1, HostId: hostBase, Length: size}}, Gids: mapping}
	badCfg := podConfig(d, "userns-bad")
	badCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: bad}}
	if _, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: badCfg, RuntimeHandler: "runc-userns"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("container id 1 mapped first: want InvalidArgument, got %v", err)
	}

	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: "runc-userns"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	podID := run.PodSandboxId
	pst, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || pst.Status.GetNetwork().GetIp() == "" {
		t.Fatalf("sandbox status = %v, %v", pst.GetStatus(), err)
	}

	// A hostPath volume: a file of host root's, one of uid 1234's.
	vol := filepath.Join(d.dir, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(vol, "root-file"), []byte("r\n"), 0o644)
	os.WriteFile(filepath.Join(vol, "user-file"), []byte("u\n"), 0o644)
	if err := os.Chown(filepath.Join(vol, "user-file"), 1234, 1234); err != nil {
		t.Fatal(err)
	}

	cc := containerConfig("main", "sh", "-c",
		"id; cat /proc/self/uid_map; ls -ln /vol; echo w > /vol/written; echo x > /rootfs-file && echo rootfs-writable; "+
			"ls -ldn / /bin/busybox; cat /etc/hostname; echo sysctls $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shm_rmid_forced); "+
			"grep -q ' /sys sysfs ' /proc/mounts && echo sysfs-mounted; echo done; exec sleep 300")
	cc.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns},
	}}
	// What the kubelet sends for a volume of a pod with a user namespace.
	cc.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, UidMappings: mapping, GidMappings: mapping}}
	created, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: cfg})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	cid := created.ContainerId
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	cst := waitState(t, d, cid, runtimeapi.ContainerState_CONTAINER_RUNNING)
	var logs []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		logs, _ = os.ReadFile(cst.LogPath)
		if bytes.Contains(logs, []byte(" done\n")) {
			break
		}
	}
	t.Logf("container output:\n%s", logs)
	for _, re := range []string{
		`stdout F uid=0\(root\) gid=0\(root\)`,
		fmt.Sprintf(`stdout F\s+0\s+%d\s+%d\n`, hostBase, size),
		`stdout F -rw-r--r--\s+1 0\s+0\s+\d+ .* root-file\n`,
		`stdout F -rw-r--r--\s+1 1234\s+1234\s+\d+ .* user-file\n`,
		`stdout F rootfs-writable\n`,
		`stdout F d\S+\s+\d+ 0\s+0\s+.* /\n`,
		`stdout F -\S+\s+\d+ 0\s+0\s+.* /bin/busybox\n`,
		`stdout F userns\n`,
		`stdout F sysctls 100 1\n`,
		`stdout F sysfs-mounted\n`,
	} {
		if !regexp.MustCompile(re).Match(logs) {
			t.Errorf("container output lacks %s", re)
		}
	}

	// On the host: the process runs as the mapped unprivileged uid.
	v, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cid, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(v.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("container pid from verbose status %q: %v", v.Info["info"], err)
	}
	procStatus, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
	if err != nil {
		t.Fatal(err)
	}
	wantIDs := fmt.Sprintf("%d\t%d\t%d\t%d", hostBase, hostBase, hostBase, hostBase)
	if !regexp.MustCompile(`(?m)^Uid:\t`+wantIDs+`$`).Match(procStatus) || !regexp.MustCompile(`(?m)^Gid:\t`+wantIDs+`$`).Match(procStatus) {
		t.Errorf("container process on the host, want uid/gid %d:\n%s", hostBase, procStatus)
	}
	// So does the pause, whose netns (made inside the pod's user
	// namespace) is the pinned one.
	pid, netns := pauseInfo(t, d, podID)
	if pid > 0 {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid)); !regexp.MustCompile(fmt.Sprintf(`^\s+0\s+%d\s+%d\n`, hostBase, size)).Match(b) {
			t.Errorf("pause uid_map = %q", b)
		}
		var pin, own syscall.Stat_t
		if err := syscall.Stat(netns, &pin); err != nil {
			t.Errorf("netns pin %q: %v", netns, err)
		} else if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &own); pin.Ino != own.Ino {
			t.Errorf("netns pin %s is not the pause's netns", netns)
		}
	}
	// What container root wrote to the idmapped volume is host root's.
	if fi, err := os.Stat(filepath.Join(vol, "written")); err != nil {
		t.Errorf("file written in the volume: %v", err)
	} else if s := fi.Sys().(*syscall.Stat_t); s.Uid != 0 || s.Gid != 0 {
		t.Errorf("file written by container root in the idmapped volume is %d:%d on the host, want 0:0", s.Uid, s.Gid)
	}

	// runc exec joins the container's user namespace too.
	ex, err := d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "id -u; cat /proc/self/uid_map"}, Timeout: 10})
	if err != nil || ex.ExitCode != 0 || !regexp.MustCompile(fmt.Sprintf(`^0\n\s+0\s+%d\s+%d\n$`, hostBase, size)).Match(ex.Stdout) {
		t.Errorf("exec in the pod: %v, exit %d, stdout %q, stderr %q", err, ex.GetExitCode(), ex.GetStdout(), ex.GetStderr())
	}

	// A second container, as uid 1000 in the pod: host uid hostBase+1000.
	uid := &runtimeapi.Int64Value{Value: 1000}
	cc2 := containerConfig("second", "sleep", "300")
	cc2.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		RunAsUser: uid, RunAsGroup: uid, NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns},
	}}
	c2, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc2, SandboxConfig: cfg})
	if err != nil {
		t.Fatalf("CreateContainer second: %v", err)
	}
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c2.ContainerId}); err != nil {
		t.Fatalf("StartContainer second: %v", err)
	}
	waitState(t, d, c2.ContainerId, runtimeapi.ContainerState_CONTAINER_RUNNING)
	v2, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c2.ContainerId, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(v2.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("second container pid: %v", err)
	}
	procStatus, _ = os.ReadFile(fmt.Sprintf("/proc/%d/status", info.Pid))
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^Uid:\t%d\t`, hostBase+1000)).Match(procStatus) {
		t.Errorf("uid 1000 in the pod, want host uid %d:\n%s", hostBase+1000, procStatus)
	}

	// kill -9 of peapod: the pod keeps running, and a container created
	// after the restart joins the same user namespace.
	d.kill9()
	d.start()
	ctx = d.ctx()
	cc3 := containerConfig("after-restart", "sleep", "300")
	cc3.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: userns},
	}}
	c3, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc3, SandboxConfig: cfg})
	if err != nil {
		t.Fatalf("CreateContainer after restart: %v", err)
	}
	if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c3.ContainerId}); err != nil {
		t.Fatalf("StartContainer after restart: %v", err)
	}
	waitState(t, d, c3.ContainerId, runtimeapi.ContainerState_CONTAINER_RUNNING)
	ex, err = d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c3.ContainerId, Cmd: []string{"cat", "/proc/self/uid_map"}, Timeout: 10})
	if err != nil || !regexp.MustCompile(fmt.Sprintf(`^\s+0\s+%d\s+%d\n$`, hostBase, size)).Match(ex.GetStdout()) {
		t.Errorf("container created after a restart: uid_map %q, %v", ex.GetStdout(), err)
	}

	if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(netns); netns != "" && !os.IsNotExist(err) {
		t.Errorf("netns pin %s left after RemovePodSandbox (%v)", netns, err)
	}
}

// pauseInfo is the pause's pid and netns pin from the sandbox's verbose
// status.
func pauseInfo(t *testing.T, d *daemon, podID string) (int, string) {
	t.Helper()
	st, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid   int    `json:"pid"`
		NetNS string `json:"netns"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Errorf("pause pid from verbose status %q: %v", st.Info["info"], err)
		return 0, ""
	}
	return info.Pid, info.NetNS
}
