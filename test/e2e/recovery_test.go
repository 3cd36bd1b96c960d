package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestKill9Recovery: kill -9 of peapod with pods running, then start it
// again: the sandbox stays READY, a running container kept running and its
// log kept flowing, and one that exited meanwhile shows its exit code.
func TestKill9Recovery(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	ctx := d.ctx()
	cfg := podConfig(d, "recover")
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	start := func(name string, cmd ...string) string {
		c, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig(name, cmd...), SandboxConfig: cfg})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		return c.ContainerId
	}
	ticker := start("ticker", "sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done")
	quitter := start("quitter", "sh", "-c", "sleep 2; exit 7")
	st := waitState(t, d, ticker, runtimeapi.ContainerState_CONTAINER_RUNNING)
	logPath := st.LogPath

	d.kill9()
	before, _ := os.ReadFile(logPath)
	time.Sleep(3 * time.Second) // the quitter exits while peapod is down
	after, _ := os.ReadFile(logPath)
	if len(after) <= len(before) {
		t.Errorf("log stopped flowing while peapod was down (%d -> %d bytes)", len(before), len(after))
	}
	d.start()
	ctx = d.ctx()

	ps, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	if ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || ps.Status.GetNetwork().GetIp() == "" {
		t.Errorf("after restart sandbox = %v, want READY with its IP", ps.Status)
	}
	waitState(t, d, ticker, runtimeapi.ContainerState_CONTAINER_RUNNING)
	q := waitState(t, d, quitter, runtimeapi.ContainerState_CONTAINER_EXITED)
	if q.ExitCode != 7 {
		t.Errorf("quitter exit code = %d, want 7", q.ExitCode)
	}
	// Exit monitoring is live again: a stop now is seen.
	if _, err := d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ticker, Timeout: 2}); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, ticker, runtimeapi.ContainerState_CONTAINER_EXITED)
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
}

// TestCrunRefusedCleanly: Debian's crun 1.8.1 refuses this machine kind's
// hybrid cgroups; a crun pod fails at once with that reason and leaves
// nothing behind.
func TestCrunRefusedCleanly(t *testing.T) {
	d := newDaemon(t, daemonOpts{})
	ctx := d.ctx()
	st, err := d.rt.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Info["runtimeHandlerStatus"], "hybrid") {
		t.Skipf("crun works on this host (%s); nothing to refuse", st.Info["runtimeHandlerStatus"])
	}
	netnsBefore, _ := os.ReadDir("/run/netns")
	_, err = d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, "crun"), RuntimeHandler: "crun"})
	if err == nil || !strings.Contains(err.Error(), "hybrid") {
		t.Fatalf("crun pod: err = %v, want the hybrid-cgroup reason", err)
	}
	pods, _ := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if len(pods.Items) != 0 {
		t.Errorf("a failed crun pod is listed: %v", pods.Items)
	}
	netnsAfter, _ := os.ReadDir("/run/netns")
	if len(netnsAfter) > len(netnsBefore) {
		t.Errorf("netns left behind: %d before, %d after", len(netnsBefore), len(netnsAfter))
	}
}

// TestNoLeaks: create/start/stop/remove cycles of a pod with two
// containers leave no netns, veth, mount, cgroup, conmon or IP behind.
func TestNoLeaks(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	cycles := 50
	if testing.Short() {
		cycles = 5
	}
	ctx := d.ctx()
	var uids []string
	for i := 0; i < cycles; i++ {
		cfg := podConfig(d, "leak")
		uids = append(uids, cfg.Metadata.Uid)
		run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("cycle %d: runp: %v", i, err)
		}
		for _, name := range []string{"a", "b"} {
			c, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: containerConfig(name, "sleep", "60"), SandboxConfig: cfg})
			if err != nil {
				t.Fatalf("cycle %d: create %s: %v", i, name, err)
			}
			if _, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				t.Fatalf("cycle %d: start %s: %v", i, name, err)
			}
		}
		if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
			t.Fatalf("cycle %d: stopp: %v", i, err)
		}
		if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
			t.Fatalf("cycle %d: rmp: %v", i, err)
		}
	}
	// netns pins.
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "peapod-") {
			if _, err := os.Stat(filepath.Join(d.dir, "run", "sandboxes", strings.TrimPrefix(e.Name(), "peapod-"))); err == nil {
				t.Errorf("netns %s left behind", e.Name())
			}
		}
	}
	// veths on our bridge.
	if links, err := os.ReadDir("/sys/class/net/" + d.bridge + "/brif"); err == nil && len(links) > 0 {
		t.Errorf("%d veths still on %s", len(links), d.bridge)
	}
	// mounts below the test dir.
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if n := bytes.Count(mounts, []byte(d.dir)); n > 0 {
		t.Errorf("%d mounts left below %s", n, d.dir)
	}
	// conmon or container processes of this daemon.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	agent := d.agentPID()
	for _, p := range procs {
		cmd, _ := os.ReadFile(p)
		if filepath.Base(filepath.Dir(p)) == strconv.Itoa(agent) {
			continue // the daemon's own peapod-agent child
		}
		if bytes.Contains(cmd, []byte(d.dir)) && !bytes.Contains(cmd, []byte("serve")) {
			t.Errorf("process left behind: %s", bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
		}
	}
	// pod cgroups.
	for _, uid := range uids {
		if _, err := os.Stat("/sys/fs/cgroup/memory/peapod/pod" + uid); err == nil {
			t.Errorf("cgroup of pod %s left behind", uid)
			break
		}
	}
	// IP allocations: host-local keeps only its last_reserved_ip marker.
	allocs, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "10.*"))
	if len(allocs) > 0 {
		t.Errorf("%d IP allocations left: %v", len(allocs), allocs)
	}
}
