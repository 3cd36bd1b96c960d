package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// writeManifest drops a static pod file into the daemon's manifests dir.
func (d *daemon) writeManifest(name, yaml string) {
	d.t.Helper()
	dir := filepath.Join(d.dir, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		d.t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		d.t.Fatal(err)
	}
}

// agentPods is GET /pods of the daemon. The agent is serve's child
// process: while it starts (or restarts) serve answers 503; wait that out.
func (d *daemon) agentPods() *v1.PodList {
	d.t.Helper()
	var body []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + d.httpAddr() + "/pods")
		if err != nil {
			d.t.Fatalf("GET /pods: %v", err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			d.t.Fatalf("GET /pods: %s: %s", resp.Status, body)
		}
	}
	var list v1.PodList
	if err := json.Unmarshal(body, &list); err != nil {
		d.t.Fatalf("GET /pods: %v\n%s", err, body)
	}
	return &list
}

// waitPod polls GET /pods until cond holds for the named pod.
func (d *daemon) waitPod(name string, timeout time.Duration, what string, cond func(p *v1.Pod) bool) *v1.Pod {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *v1.Pod
	for {
		for i := range d.agentPods().Items {
			p := &d.agentPods().Items[i]
			if p.Name == name {
				last = p
				if cond(p) {
					return p
				}
			}
		}
		if time.Now().After(deadline) {
			data, _ := json.MarshalIndent(last, "", " ")
			d.t.Fatalf("pod %s: %s not reached within %v; last status:\n%s", name, what, timeout, data)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func containerStatus(p *v1.Pod, name string) *v1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == name {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

func podCondition(p *v1.Pod, t v1.PodConditionType) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == t {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func restarts(name string) func(p *v1.Pod) int32 {
	return func(p *v1.Pod) int32 {
		if cs := containerStatus(p, name); cs != nil {
			return cs.RestartCount
		}
		return 0
	}
}

// TestAgentLivenessExample is the liveness example of the Kubernetes docs,
// as written there: peapod restarts it just as a kubelet would.
func TestAgentLivenessExample(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"registry.k8s.io": "http://" + reg, "docker.io": "http://" + reg}})
	d.writeManifest("liveness.yaml", `
apiVersion: v1
kind: Pod
metadata:
  labels:
    test: liveness
  name: liveness-exec
spec:
  containers:
  - name: liveness
    image: busybox
    args:
    - /bin/sh
    - -c
    - touch /tmp/healthy; sleep 30; rm -f /tmp/healthy; sleep 600
    livenessProbe:
      exec:
        command:
        - cat
        - /tmp/healthy
      initialDelaySeconds: 5
      periodSeconds: 5
`)
	p := d.waitPod("liveness-exec", 60*time.Second, "Running", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	start := time.Now()
	if p.Status.PodIP == "" {
		t.Errorf("no pod IP: %+v", p.Status)
	}
	// 30 s healthy, then 3 failures 5 s apart: restarted after ~45 s.
	p = d.waitPod("liveness-exec", 90*time.Second, "restartCount 1", func(p *v1.Pod) bool { return restarts("liveness")(p) >= 1 })
	took := time.Since(start)
	t.Logf("restarted after %v", took)
	if took < 25*time.Second {
		t.Errorf("restarted after %v: before the probe could have failed 3 times", took)
	}
	cs := containerStatus(p, "liveness")
	if cs.LastTerminationState.Terminated == nil {
		t.Errorf("lastState not recorded: %+v", cs)
	}
	out, err := exec.Command(filepath.Join(binDir, "peapod"), "pods", "--config", d.cfgPathWithHTTP()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "liveness-exec") {
		t.Errorf("peapod pods: %v\n%s", err, out)
	}
	t.Logf("peapod pods:\n%s", out)
}

// cfgPathWithHTTP writes a copy of the config whose http.address is the
// one the daemon really listens on (tests use port 0), for `peapod pods`.
func (d *daemon) cfgPathWithHTTP() string {
	data, err := os.ReadFile(d.cfgPath)
	if err != nil {
		d.t.Fatal(err)
	}
	p := filepath.Join(d.dir, "client.toml")
	out := strings.Replace(string(data), `address = "127.0.0.1:0"`, fmt.Sprintf("address = %q", d.httpAddr()), 1)
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// TestAgentProbesAndBackOff: httpGet readiness and tcpSocket liveness
// against busybox httpd; a crashing container goes into CrashLoopBackOff
// with growing delays; a fast-failing liveness probe makes restartCount climb.
func TestAgentProbesAndBackOff(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	d.writeManifest("web.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: probes
spec:
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"]
    ports:
    - name: http
      containerPort: 8080
    readinessProbe:
      httpGet:
        path: /healthz
        port: http
      periodSeconds: 1
    livenessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
`)
	d.writeManifest("crash.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: crash
  namespace: probes
spec:
  restartPolicy: Always
  containers:
  - name: crash
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo crashing; exit 1"]
`)
	d.writeManifest("flaky.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: flaky
  namespace: probes
spec:
  containers:
  - name: flaky
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm -f /tmp/healthy; sleep 600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      periodSeconds: 1
      failureThreshold: 1
`)
	p := d.waitPod("web", 60*time.Second, "Ready", func(p *v1.Pod) bool { return podCondition(p, v1.PodReady) })
	if cs := containerStatus(p, "httpd"); cs == nil || !cs.Ready || cs.RestartCount != 0 {
		t.Errorf("httpd status = %+v", cs)
	}

	// CrashLoopBackOff, with the delay growing: 10 s, then 20 s.
	var restartTimes []time.Time
	seen := int32(0)
	sawBackOff := false
	deadline := time.Now().Add(75 * time.Second)
	for time.Now().Before(deadline) && seen < 3 {
		for _, p := range d.agentPods().Items {
			if p.Name != "crash" {
				continue
			}
			cs := containerStatus(&p, "crash")
			if cs == nil {
				continue
			}
			if cs.State.Waiting != nil && cs.State.Waiting.Reason == "CrashLoopBackOff" {
				sawBackOff = true
			}
			if cs.RestartCount > seen {
				seen = cs.RestartCount
				restartTimes = append(restartTimes, time.Now())
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !sawBackOff {
		t.Errorf("never saw CrashLoopBackOff")
	}
	if len(restartTimes) >= 3 {
		d1, d2 := restartTimes[1].Sub(restartTimes[0]), restartTimes[2].Sub(restartTimes[1])
		t.Logf("delays between restarts: %v, %v", d1, d2)
		if d2 < d1+5*time.Second {
			t.Errorf("back-off does not grow: %v then %v", d1, d2)
		}
	} else {
		t.Errorf("only %d restarts of the crashing container in 75s", len(restartTimes))
	}

	// The flaky liveness probe restarted its container at least twice.
	p = d.waitPod("flaky", 60*time.Second, "restartCount 2", func(p *v1.Pod) bool { return restarts("flaky")(p) >= 2 })
	if cs := containerStatus(p, "flaky"); cs.LastTerminationState.Terminated == nil {
		t.Errorf("flaky lastState = %+v", cs.LastTerminationState)
	}
}

// TestAgentPodLifecycle: a changed file recreates the pod, a restart of
// peapod adopts running pods, a removed file terminates the pod.
func TestAgentPodLifecycle(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	manifest := `
apiVersion: v1
kind: Pod
metadata:
  name: steady
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    env:
    - name: VERSION
      value: "%s"
`
	d.writeManifest("steady.yaml", fmt.Sprintf(manifest, "1"))
	p := d.waitPod("steady", 60*time.Second, "Running", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	uid1 := p.UID
	cid1 := containerStatus(p, "main").ContainerID

	// Restart peapod: the pod is adopted, not restarted.
	d.stop()
	d.start()
	p = d.waitPod("steady", 30*time.Second, "Running after restart", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	if cs := containerStatus(p, "main"); cs.ContainerID != cid1 || cs.RestartCount != 0 || p.UID != uid1 {
		t.Errorf("after a peapod restart the pod was not adopted: %+v (was %s)", cs, cid1)
	}

	// A changed file recreates the pod.
	d.writeManifest("steady.yaml", fmt.Sprintf(manifest, "2"))
	p = d.waitPod("steady", 60*time.Second, "recreated", func(p *v1.Pod) bool {
		cs := containerStatus(p, "main")
		return p.UID != uid1 && cs != nil && cs.State.Running != nil
	})

	// A removed file terminates it: no sandbox left.
	os.Remove(filepath.Join(d.dir, "manifests", "steady.yaml"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if len(d.agentPods().Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod still listed 30s after its file was removed")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAgentHooksAndInit: init containers run in order, each to completion;
// postStart and preStop exec hooks run in the container; env from the
// downward API and $(VAR) expansion reach the process.
func TestAgentHooksAndInit(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	hostDir := filepath.Join(d.dir, "hooks")
	d.writeManifest("hooks.yaml", fmt.Sprintf(`
apiVersion: v1
kind: Pod
metadata:
  name: hooks
  namespace: lifecycle
spec:
  terminationGracePeriodSeconds: 10
  initContainers:
  - name: first
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo first >> /host/order"]
    volumeMounts: [{name: host, mountPath: /host}]
  - name: second
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "sleep 1; echo second >> /host/order"]
    volumeMounts: [{name: host, mountPath: /host}]
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo main $(POD_NS)/$(POD_NAME) >> /host/order; trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    lifecycle:
      postStart:
        exec: {command: ["sh", "-c", "echo poststart > /host/poststart"]}
      preStop:
        exec: {command: ["sh", "-c", "echo prestop > /host/prestop"]}
    volumeMounts: [{name: host, mountPath: /host}]
  volumes:
  - name: host
    hostPath: {path: %s, type: DirectoryOrCreate}
`, hostDir))
	d.waitPod("hooks", 60*time.Second, "main running", running("main"))
	waitFile := func(name, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			data, _ := os.ReadFile(filepath.Join(hostDir, name))
			if string(data) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %q, want %q", name, data, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFile("order", "first\nsecond\nmain lifecycle/hooks\n")
	waitFile("poststart", "poststart\n")
	os.Remove(filepath.Join(d.dir, "manifests", "hooks.yaml"))
	waitFile("prestop", "prestop\n")
}

// TestAgentDisabled: with agent.enabled = false peapod is a CRI runtime
// only: a manifest in the dir is not run, /pods and `peapod pods` say why.
func TestAgentDisabled(t *testing.T) {
	t.Parallel()
	d := newDaemon(t, daemonOpts{agentDisabled: true})
	d.writeManifest("ignored.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: ignored
spec:
  containers:
  - name: main
    image: 127.0.0.1:1/never-pulled:none
`)
	resp, err := http.Get("http://" + d.httpAddr() + "/pods")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "agent.enabled = false") {
		t.Errorf("GET /pods: %s %q", resp.Status, body)
	}
	out, err := exec.Command(filepath.Join(binDir, "peapod"), "pods", "--config", d.cfgPathWithHTTP()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "agent is disabled") {
		t.Errorf("peapod pods: %v\n%s", err, out)
	}
	// The agent polls its dir every 2 s at most: give it twice that.
	time.Sleep(4 * time.Second)
	pods, err := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("a disabled agent ran the manifest: %v", pods.Items)
	}
	if st, err := d.rt.Status(d.ctx(), &runtimeapi.StatusRequest{}); err != nil || st.GetStatus() == nil {
		t.Errorf("CRI Status with the agent disabled: %v", err)
	}
}

// agentPID finds the peapod-agent child of the daemon (0: none).
func (d *daemon) agentPID() int {
	d.t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// comm is in parentheses; ppid is the second field after it.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
		f := strings.Fields(rest)
		if len(f) > 1 && f[1] == strconv.Itoa(d.cmd.Process.Pid) && strings.Contains(string(stat), "(peapod-agent)") {
			return pid
		}
	}
	return 0
}

// TestAgentOwnProcess: the agent is peapod serve's child process, not a
// part of the runtime. Killed, it is restarted and adopts its pods without
// restarting them; serve's /metrics still carries its series; stopping
// serve stops it.
func TestAgentOwnProcess(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	d.writeManifest("own.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: own
spec:
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`)
	p := d.waitPod("own", 60*time.Second, "Running", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	cid := containerStatus(p, "main").ContainerID
	// serve's /metrics carries the agent's series (its pod start
	// histogram) beside its own, one endpoint as before the split.
	if m := d.metricsText(); !strings.Contains(m, "peapod_pod_start_duration_seconds_count 1") || !strings.Contains(m, "go_goroutines") {
		t.Errorf("/metrics lacks the agent's pod start:\n%s", m)
	}
	pid := d.agentPID()
	if pid == 0 {
		t.Fatal("no peapod-agent child of peapod serve")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var newPID int
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if newPID = d.agentPID(); newPID != 0 && newPID != pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("peapod-agent not restarted within 20s of kill -9")
		}
	}
	p = d.waitPod("own", 30*time.Second, "Running after the agent's restart", func(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning })
	if cs := containerStatus(p, "main"); cs.ContainerID != cid || cs.RestartCount != 0 {
		t.Errorf("the restarted agent did not adopt the pod: %+v (was %s)", cs, cid)
	}
	// The restarted agent's own series reach serve's /metrics again.
	if m := d.metricsText(); !strings.Contains(m, "peapod_pod_start_duration_seconds_bucket") || !strings.Contains(m, "peapod_cri_pod_start_duration_seconds") {
		t.Errorf("/metrics after the agent's restart lacks the agent's or the runtime's series")
	}
	d.stop()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", newPID)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peapod-agent %d still running after serve stopped", newPID)
		}
	}
}

func (d *daemon) metricsText() string {
	d.t.Helper()
	resp, err := http.Get("http://" + d.httpAddr() + "/metrics")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
