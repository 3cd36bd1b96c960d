package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/containerdref"
	"peapod/hack/testimages/imagebuild"
)

// TestAgentOnContainerd runs peapod-agent by itself against Debian's
// containerd: the agent is a CRI client like the kubelet and needs nothing
// of peapod's runtime. A static pod runs, shows Running with its IP in
// the agent's /pods, and goes when its file does.
func TestAgentOnContainerd(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ctrd, err := containerdref.Debian()
	if err != nil {
		t.Fatalf("Debian's containerd (make test-deps installs it): %v", err)
	}
	// containerd's sandbox image (pause:3.6 under registry.k8s.io, which its
	// mirror sends to the test registry): peapod-pause alone.
	pause, err := imagebuild.Pause(filepath.Join(binDir, "peapod-pause"))
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	_, err = imagebuild.PushNamed(pctx, []imagebuild.Named{pause}, reg, "")
	pcancel()
	if err != nil {
		t.Fatalf("push pause:3.6: %v", err)
	}
	dir := t.TempDir()
	// containerd's dir: short, its sockets must fit sun_path.
	cdir, err := os.MkdirTemp("/run", "pa-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	bridge := "pac" + randHex(4)
	subnet := freeSubnet(t)
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "agent-ctrd", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}}]}`, bridge, subnet, filepath.Join(cdir, "ipam"))
	os.MkdirAll(filepath.Join(cdir, "cni"), 0o755)
	if err := os.WriteFile(filepath.Join(cdir, "cni", "10-agent.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(cdir, "containerd.sock")
	cfgPath, err := ctrd.Write(containerdref.Options{Dir: cdir, Socket: sock, CNIConfDir: filepath.Join(cdir, "cni"), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	madeDirs := ctrd.TrackHostDirs(cdir)
	cgroupsBefore, _ := filepath.Glob("/sys/fs/cgroup/memory/*")
	// The agent's QoS tree, which containerd's pods go below.
	agentCgroupRoot := "/peapod-e2e-ctrd-" + bridge
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cd := ctrd.Command(cfgPath)
	cd.Stdout, cd.Stderr = logFile, logFile
	cd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cd.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, p := range list.Items {
				rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
				rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
		}
		conn.Close()
		cd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cd.Process.Kill()
			<-done
		}
		logFile.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logFile.Name())
			t.Logf("containerd log tail:\n%s", tail(string(data), 3000))
		}
		exec.Command("ip", "link", "del", bridge).Run()
		unmountBelow(t, cdir)
		os.RemoveAll(cdir)
		madeDirs()
		// Cgroups containerd's pods made at the hierarchy roots (no
		// cgroup parent given: the runtime's default), now empty.
		after, _ := filepath.Glob("/sys/fs/cgroup/memory/*")
		for _, p := range after {
			// peapod's own parent and the other daemons' QoS trees
			// belong to the daemons of other tests.
			base := filepath.Base(p)
			if !slices.Contains(cgroupsBefore, p) && base != "peapod" && (!strings.HasPrefix(base, "peapod-e2e-") || base == strings.TrimPrefix(agentCgroupRoot, "/")) {
				if fi, err := os.Stat(p); err == nil && fi.IsDir() {
					for _, h := range hierarchies() {
						removeTree(filepath.Join("/sys/fs/cgroup", h, filepath.Base(p)))
					}
				}
			}
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer: %v", err)
		}
	}

	// peapod-agent by itself: its own root and state, containerd's socket.
	manifests := filepath.Join(dir, "manifests")
	os.MkdirAll(manifests, 0o755)
	agentState := filepath.Join(dir, "run")
	agentConf := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(agentConf, []byte(fmt.Sprintf("root = %q\nstate = %q\n[agent]\nmanifests_dir = %q\npod_logs_dir = %q\nvolume_plugin_dir = %q\nnode_name = \"agent-on-containerd\"\ncgroup_root = %q\n",
		filepath.Join(dir, "root"), agentState, manifests, filepath.Join(dir, "podlogs"), filepath.Join(dir, "plugins"), agentCgroupRoot)), 0o644); err != nil {
		t.Fatal(err)
	}
	agentLog, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	ag := exec.Command(filepath.Join(binDir, "peapod-agent"), "--config", agentConf, "--runtime-endpoint", "unix://"+sock, "-v", "2")
	ag.Stdout, ag.Stderr = agentLog, agentLog
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	agentSock := filepath.Join(agentState, "agent.sock")
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", agentSock)
	}}}
	pods := func() *v1.PodList {
		resp, err := client.Get("http://agent/pods")
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var l v1.PodList
		if json.NewDecoder(resp.Body).Decode(&l) != nil {
			return nil
		}
		return &l
	}
	// Registered after containerd's: runs first, so the agent removes its
	// pod (file gone) and stops before containerd does.
	t.Cleanup(func() {
		os.Remove(filepath.Join(manifests, "web.yaml"))
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if l := pods(); l == nil || len(l.Items) == 0 {
				break
			}
		}
		ag.Process.Signal(syscall.SIGTERM)
		ag.Wait()
		agentLog.Close()
		if t.Failed() {
			data, _ := os.ReadFile(agentLog.Name())
			t.Logf("agent log tail:\n%s", tail(string(data), 4000))
		}
		unmountBelow(t, dir)
	})

	if err := os.WriteFile(filepath.Join(manifests, "web.yaml"), []byte(`
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello from containerd; exec sleep 3600"]
    readinessProbe:
      exec: {command: ["true"]}
      periodSeconds: 1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var pod *v1.Pod
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if l := pods(); l != nil {
			for i := range l.Items {
				if p := &l.Items[i]; p.Name == "web" && p.Status.Phase == v1.PodRunning && podCondition(p, v1.PodReady) {
					pod = p
				}
			}
		}
		if pod != nil {
			break
		}
		if time.Now().After(deadline) {
			data, _ := json.MarshalIndent(pods(), "", " ")
			t.Fatalf("pod web not Running and Ready on containerd within 90s:\n%s", data)
		}
	}
	if !strings.HasPrefix(pod.Status.PodIP, strings.TrimSuffix(subnet, "0/24")) {
		t.Errorf("pod IP %q not in containerd's CNI subnet %s", pod.Status.PodIP, subnet)
	}
	cs := containerStatus(pod, "main")
	if cs == nil || !strings.HasPrefix(cs.ContainerID, "containerd://") {
		t.Errorf("container status does not name containerd: %+v", cs)
	}
	// The runtime in use is containerd, as the CRI says.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil || v.RuntimeName != "containerd" {
		t.Errorf("runtime = %v, %v", v, err)
	}
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 1 || list.Items[0].Metadata.Name != "web" {
		t.Errorf("containerd's sandboxes = %v, %v", list, err)
	}
	// Its log in the kubelet's layout.
	logs, _ := filepath.Glob(filepath.Join(dir, "podlogs", "default_web_*", "main", "0.log"))
	if len(logs) != 1 {
		t.Errorf("pod log files: %v", logs)
	} else if data, _ := os.ReadFile(logs[0]); !strings.Contains(string(data), "hello from containerd") {
		t.Errorf("pod log: %q", data)
	}
}

func unmountBelow(t *testing.T, dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
}

// hierarchies are the cgroup mounts below /sys/fs/cgroup.
func hierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// removeTree removes a cgroup dir and its children, deepest first.
func removeTree(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
