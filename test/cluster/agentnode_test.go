package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"

	"peapod/hack/cluster/harness"
	"peapod/hack/testenv"
)

// agentNodeName is the Node peapod-agent registers in TestAgentNode.
const agentNodeName = "peapod-agent-node"

// TestAgentNode brings up a cluster of its own whose node is peapod-agent
// itself, with no kubelet (harness Node "peapod-agent"): the agent
// registers the Node and its Lease with the kubelet's credentials, runs
// the pods bound to it through peapod's CRI socket, reports their status,
// admits or rejects them as the kubelet does, mirrors its static pods, and
// records the kubelet's events, serves kubectl logs, exec, attach,
// port-forward, cp and the node proxy through its kubelet API and feeds
// metrics-server (kubectl top), survives kill -9 of itself and of the
// runtime and a restart of the API server without restarting a container,
// and finishes after a restart what was deleted while it was down; made
// small by system_reserved, it evicts a BestEffort pod that eats its
// memory and keeps the Guaranteed one (agentnode_eviction_test.go). One
// cluster serves every subtest; the pods of the Deployment subtest are the
// ones the disruptive subtests watch.
func TestAgentNode(t *testing.T) {
	testenv.Integration(t)
	c := agentCluster(t)
	shared := newNSIn(t, c)

	t.Run("NodeReady", func(t *testing.T) { testAgentNodeReady(t, c) })
	t.Run("Deployment", func(t *testing.T) { testAgentDeployment(shared.on(t), c) })
	t.Run("Pods", func(t *testing.T) {
		t.Run("DeleteGrace", func(t *testing.T) { t.Parallel(); testAgentDeleteGrace(t, c) })
		t.Run("OutOfcpu", func(t *testing.T) { t.Parallel(); testAgentOutOfCPU(t, c) })
		t.Run("NodeAffinity", func(t *testing.T) { t.Parallel(); testAgentNodeAffinity(t, c) })
		t.Run("StaticPod", func(t *testing.T) { t.Parallel(); testAgentStaticPod(t, c) })
		t.Run("Volumes", func(t *testing.T) { t.Parallel(); testAgentVolumes(t, c) })
		t.Run("Events", func(t *testing.T) { t.Parallel(); testAgentEvents(t, c) })
		t.Run("MirrorRecreated", func(t *testing.T) { t.Parallel(); testAgentMirrorRecreated(t, c) })
		t.Run("TopPodAndNode", func(t *testing.T) { t.Parallel(); testAgentTop(t, c) })
		t.Run("KubectlStreams", func(t *testing.T) { t.Parallel(); testAgentKubectlStreams(t, c) })
		t.Run("RuntimeClass", func(t *testing.T) { t.Parallel(); testAgentRuntimeClass(t, c) })
		t.Run("CSI", func(t *testing.T) { t.Parallel(); testAgentCSI(t, c) }) // csi_test.go
	})
	// Disruptive: alone, after everything else.
	t.Run("DeletedWhileAgentDown", func(t *testing.T) { testAgentDeletedWhileDown(t, c, false) })
	t.Run("ForceDeletedWhileAgentDown", func(t *testing.T) { testAgentDeletedWhileDown(t, c, true) })
	t.Run("APIServerRestart", func(t *testing.T) { testAgentAPIServerRestart(shared.on(t), c) })
	t.Run("AgentKill9", func(t *testing.T) { testAgentKill9(shared.on(t), c) })
	t.Run("RuntimeKill9", func(t *testing.T) { testAgentRuntimeKill9(shared.on(t), c) })
	// Under memory pressure the node admits no BestEffort pod: alone too.
	t.Run("Eviction", func(t *testing.T) { testAgentEviction(t, c) })
}

// agentCluster brings up TestAgentNode's cluster, with metrics-server, and
// tears it down at the end of t; on a failure it logs the end of the
// agent's log first.
func agentCluster(t *testing.T) *harness.Cluster {
	t.Helper()
	repo := repoRoot()
	build := func(target string) string {
		out, err := exec.Command("bash", filepath.Join(repo, "hack/cluster/build.sh"), target).Output()
		if err != nil {
			t.Fatalf("hack/cluster/build.sh %s: %v", target, err)
		}
		return strings.TrimSpace(string(out))
	}
	bin := build("control-plane")
	metricsServer := filepath.Join(build("metrics-server"), "metrics-server")
	dir, err := os.MkdirTemp("", "peapod-cluster-agent.")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := harness.Up(ctx, harness.Options{
		Dir: dir, Repo: repo, BinDir: bin, Log: os.Stderr,
		Node: harness.NodePeapodAgent, NodeName: agentNodeName, MetricsServer: metricsServer,
		AgentExtraConfig: agentResourcesConfig(t), CSISidecars: build("csi-sidecars"),
	})
	if err != nil {
		_ = os.Remove(dir) // Up's teardown removed what was in it
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("peapod-agent's log ends:\n%s", fileTail(filepath.Join(c.Dir, "logs", harness.NodePeapodAgent+".log"), 40))
			t.Logf("metrics-server's log ends:\n%s", fileTail(filepath.Join(c.Dir, "logs", "metrics-server.log"), 15))
		}
		if err := c.Down(); err != nil {
			t.Errorf("cluster down: %v", err)
		}
	})
	return c
}

// on is k bound to another (sub)test: same cluster and namespace.
func (k *kc) on(t *testing.T) *kc { return &kc{t: t, c: k.c, ns: k.ns} }

// getJSON reads one object (kubectl get ARGS -o json) into v.
func (k *kc) getJSON(v any, args ...string) {
	k.t.Helper()
	out := k.run(append(append([]string{"get"}, args...), "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		k.t.Fatalf("kubectl get %s: %v", strings.Join(args, " "), err)
	}
}

// nodeReady is the Node's Ready condition status ("" when unreadable).
func (k *kc) nodeReady(name string) string {
	out, _ := k.try("get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	return out
}

// (a) The Node as the kubelet would register it, and its Lease renewed.
func testAgentNodeReady(t *testing.T, c *harness.Cluster) {
	k := &kc{t: t, c: c}
	var node corev1.Node
	k.getJSON(&node, "node", c.NodeName)
	if st := nodeCondition(node.Status.Conditions, corev1.NodeReady); st != corev1.ConditionTrue {
		t.Errorf("Ready condition %q, want True (conditions %+v)", st, node.Status.Conditions)
	}
	// The harness's kubelet gets --hostname-override=<node name>; the
	// agent's node_name stands for both.
	for label, want := range map[string]string{
		corev1.LabelHostname:   c.NodeName,
		corev1.LabelOSStable:   "linux",
		corev1.LabelArchStable: goruntime.GOARCH,
	} {
		if got := node.Labels[label]; got != want {
			t.Errorf("label %s = %q, want %q", label, got, want)
		}
	}
	if pods := node.Status.Capacity[corev1.ResourcePods]; pods.String() != "110" {
		t.Errorf("capacity pods = %q, want 110", pods.String())
	}
	var internal []string
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			internal = append(internal, a.Address)
		}
	}
	if len(internal) == 0 || internal[0] != c.NodeIP {
		t.Errorf("InternalIP %v, want %s (addresses %+v)", internal, c.NodeIP, node.Status.Addresses)
	}
	if v := node.Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(v, "peapod://") {
		t.Errorf("containerRuntimeVersion %q, want peapod://…", v)
	}

	var lease coordinationv1.Lease
	k.getJSON(&lease, "-n", "kube-node-lease", "lease", c.NodeName)
	if h := lease.Spec.HolderIdentity; h == nil || *h != c.NodeName {
		t.Errorf("lease holderIdentity %v, want %s", h, c.NodeName)
	}
	if lease.Spec.RenewTime == nil {
		t.Fatalf("lease has no renewTime: %+v", lease.Spec)
	}
	first := lease.Spec.RenewTime.Time
	// The agent renews every 10 s.
	k.eventually(30*time.Second, "lease renewed", func() (bool, string) {
		var l coordinationv1.Lease
		out, err := k.try("-n", "kube-node-lease", "get", "lease", c.NodeName, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil || l.Spec.RenewTime == nil {
			return false, out
		}
		return l.Spec.RenewTime.After(first), l.Spec.RenewTime.String()
	})
}

func nodeCondition(conds []corev1.NodeCondition, typ corev1.NodeConditionType) corev1.ConditionStatus {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

func podCondition(conds []corev1.PodCondition, typ corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// steadyDeployment is the Deployment the kill subtests watch: its
// containers leave on SIGTERM and never exit by themselves.
const steadyDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: steady}
spec:
  replicas: 3
  selector: {matchLabels: {app: steady}}
  template:
    metadata: {labels: {app: steady}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: %s
        command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
        resources:
          requests: {cpu: 10m, memory: 16Mi}
`

// (b) A Deployment turns 3/3 Ready, each pod's status complete.
func testAgentDeployment(k *kc, c *harness.Cluster) {
	t := k.t
	k.apply(fmt.Sprintf(steadyDeployment, busybox))
	k.eventually(120*time.Second, "deployment steady 3/3 Ready", func() (bool, string) {
		out := k.jsonpath("deployment/steady", "{.status.readyReplicas}/{.status.replicas}")
		return out == "3/3", out
	})
	_, podNet, err := net.ParseCIDR(c.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	var pods corev1.PodList
	k.getJSON(&pods, "pods", "-l", "app=steady")
	if len(pods.Items) != 3 {
		t.Errorf("%d pods, want 3", len(pods.Items))
	}
	for _, p := range pods.Items {
		st := p.Status
		errorf := func(format string, a ...any) { t.Errorf("pod %s: "+format, append([]any{p.Name}, a...)...) }
		if ip := net.ParseIP(st.PodIP); ip == nil || !podNet.Contains(ip) {
			errorf("podIP %q, want one in %s", st.PodIP, c.PodCIDR)
		}
		if st.HostIP != c.NodeIP {
			errorf("hostIP %q, want %s", st.HostIP, c.NodeIP)
		}
		if st.StartTime == nil {
			errorf("no startTime")
		}
		if st.QOSClass != corev1.PodQOSBurstable {
			errorf("qosClass %q, want Burstable", st.QOSClass)
		}
		for _, typ := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady, corev1.PodInitialized, corev1.PodScheduled, corev1.PodReadyToStartContainers} {
			if s := podCondition(st.Conditions, typ); s != corev1.ConditionTrue {
				errorf("condition %s %q, want True", typ, s)
			}
		}
		if len(st.ContainerStatuses) != 1 {
			errorf("%d container statuses, want 1", len(st.ContainerStatuses))
			continue
		}
		cs := st.ContainerStatuses[0]
		if !strings.HasPrefix(cs.ContainerID, "peapod://") {
			errorf("containerID %q, want peapod://…", cs.ContainerID)
		}
		if cs.ImageID == "" {
			errorf("no imageID")
		}
		if !cs.Ready || cs.Started == nil || !*cs.Started {
			errorf("ready %v, started %v", cs.Ready, cs.Started)
		}
		if cs.RestartCount != 0 {
			errorf("restartCount %d", cs.RestartCount)
		}
		if cs.State.Running == nil {
			errorf("state %+v, want running", cs.State)
		}
	}
}

// (c) A graceful delete: the container ignores SIGTERM (sleep as PID 1),
// so the agent waits out the 5 s, kills it, and deletes the pod.
func testAgentDeleteGrace(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.run("run", "graceful", "--image="+busybox, "--restart=Never", "--command", "--", "sleep", "3600")
	k.waitReady("graceful", 90*time.Second)
	uid := k.jsonpath("pod/graceful", "{.metadata.uid}")
	ctx := context.Background()
	if sb, err := c.PodSandboxes(ctx); err != nil || len(sb[uid]) == 0 {
		t.Fatalf("no sandbox for pod %s in the runtime: %v %v", uid, sb, err)
	}
	start := time.Now()
	k.run("delete", "pod", "graceful", "--grace-period=5", "--wait=false")
	k.eventually(30*time.Second, "pod graceful gone from the API server", func() (bool, string) {
		out, err := k.try("get", "pod", "graceful", "-o", "jsonpath={.status.phase} {.metadata.deletionTimestamp}")
		return err != nil && strings.Contains(err.Error(), "NotFound"), out
	})
	took := time.Since(start)
	t.Logf("pod gone from the API server %s after the delete", took.Round(100*time.Millisecond))
	if took < 4*time.Second {
		t.Errorf("pod gone after %s: the 5 s grace period was not waited out", took)
	}
	k.eventually(15*time.Second, "sandbox gone from the runtime", func() (bool, string) {
		sb, err := c.PodSandboxes(ctx)
		if err != nil {
			return false, err.Error()
		}
		return len(sb[uid]) == 0, fmt.Sprint(sb[uid])
	})
}

// boundPod is a Pod bound to the node directly (no scheduler), exiting at once.
const boundPod = `apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  nodeName: %s
  restartPolicy: Never
  %s
  containers:
  - name: c
    image: %s
    command: [sleep, "1"]
%s`

// waitRejected waits for the agent's admission to fail pod with reason.
func (k *kc) waitRejected(pod, reason string) {
	k.t.Helper()
	k.eventually(60*time.Second, "pod "+pod+" Failed "+reason, func() (bool, string) {
		out := k.jsonpath("pod/"+pod, "{.status.phase} {.status.reason}")
		return out == "Failed "+reason, out + " | " + k.jsonpath("pod/"+pod, "{.status.message}")
	})
	if cs := k.jsonpath("pod/"+pod, "{.status.containerStatuses[*].containerID}"); cs != "" {
		k.t.Errorf("rejected pod %s has containers: %s", pod, cs)
	}
}

// (d) More CPU than the node has, bound past the scheduler: OutOfcpu.
func testAgentOutOfCPU(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(fmt.Sprintf(boundPod, "greedy", c.NodeName, "", busybox, `    resources:
      requests: {cpu: "1000"}
`))
	k.waitRejected("greedy", "OutOfcpu")
}

// (e) A nodeSelector the node does not match, bound past the scheduler:
// NodeAffinity.
func testAgentNodeAffinity(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(fmt.Sprintf(boundPod, "elsewhere", c.NodeName, "nodeSelector: {peapod.test/no-such-label: \"true\"}", busybox, ""))
	k.waitRejected("elsewhere", "NodeAffinity")
}

// (h) A manifest in the agent's manifests dir runs and is mirrored as
// <name>-<node>.
func testAgentStaticPod(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	if c.ManifestsDir == "" {
		t.Fatal("the harness recorded no manifests dir for the agent")
	}
	manifest := filepath.Join(c.ManifestsDir, k.ns+".yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: static-web, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, k.ns, busybox)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })
	mirror := "static-web-" + c.NodeName
	k.eventually(90*time.Second, "mirror pod "+mirror+" Running", func() (bool, string) {
		out, err := k.try("get", "pod", mirror, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		var p corev1.Pod
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return false, err.Error()
		}
		ann := p.Annotations[corev1.MirrorPodAnnotationKey]
		return ann != "" && p.Status.Phase == corev1.PodRunning,
			fmt.Sprintf("%s=%q phase %s", corev1.MirrorPodAnnotationKey, ann, p.Status.Phase)
	})
}

// (i) ConfigMap and Secret as files and env, the service account token
// volume every pod gets, and the service env. The container reports what
// it sees in its termination message (a pod status field: this subtest
// needs no kubelet API).
func testAgentVolumes(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(`apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello-cm}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
stringData: {password: s3cret}
`)
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: vols}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %s
    command:
    - sh
    - -c
    - |
      sa=/var/run/secrets/kubernetes.io/serviceaccount
      {
        echo "cm_file=$(cat /etc/cm/greeting)"
        echo "secret_file=$(cat /etc/sec/password)"
        echo "cm_env=${CM_GREETING:-}"
        echo "secret_env=${SEC_password:-}"
        echo "token_len=$(cat $sa/token | wc -c)"
        echo "sa_namespace=$(cat $sa/namespace)"
        echo "kubernetes_service_host=${KUBERNETES_SERVICE_HOST:-}"
      } > /dev/termination-log
    env:
    - name: CM_GREETING
      valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}
    envFrom:
    - prefix: SEC_
      secretRef: {name: sec}
    volumeMounts:
    - {name: cm, mountPath: /etc/cm}
    - {name: sec, mountPath: /etc/sec}
  volumes:
  - name: cm
    configMap: {name: cfg}
  - name: sec
    secret: {secretName: sec}
`, busybox))
	k.eventually(90*time.Second, "pod vols Succeeded", func() (bool, string) {
		out := k.jsonpath("pod/vols", "{.status.phase}")
		return out == "Succeeded" || out == "Failed", out + " " + k.jsonpath("pod/vols", "{.status.containerStatuses}")
	})
	if p := k.jsonpath("pod/vols", "{.status.phase}"); p != "Succeeded" {
		t.Errorf("phase %s, want Succeeded", p)
	}
	msg := k.jsonpath("pod/vols", "{.status.containerStatuses[0].state.terminated.message}")
	t.Logf("the container saw:\n%s", msg)
	seen := map[string]string{}
	for _, l := range strings.Split(msg, "\n") {
		if key, val, ok := strings.Cut(l, "="); ok {
			seen[key] = strings.TrimSpace(val)
		}
	}
	if len(seen) == 0 {
		t.Fatalf("no termination message from the container (%q)", msg)
	}
	for key, want := range map[string]string{
		"cm_file": "hello-cm", "secret_file": "s3cret", "cm_env": "hello-cm", "secret_env": "s3cret", "sa_namespace": k.ns,
	} {
		if seen[key] != want {
			t.Errorf("%s = %q, want %q", key, seen[key], want)
		}
	}
	if n, err := strconv.Atoi(seen["token_len"]); err != nil || n <= 100 {
		t.Errorf("service account token: %q bytes, want > 100", seen["token_len"])
	}
	if seen["kubernetes_service_host"] == "" {
		t.Errorf("KUBERNETES_SERVICE_HOST not set")
	}
}

// steadyPod is what must not change across a crash of the agent or the
// runtime.
type steadyPod struct {
	uid, containerID string
	restarts         int32
	sandboxes        string
}

// steadySnapshot reads the Deployment's pods and their sandboxes.
func (k *kc) steadySnapshot() map[string]steadyPod {
	k.t.Helper()
	var pods corev1.PodList
	k.getJSON(&pods, "pods", "-l", "app=steady")
	sb, err := k.c.PodSandboxes(context.Background())
	if err != nil {
		k.t.Fatal(err)
	}
	m := map[string]steadyPod{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || len(p.Status.ContainerStatuses) != 1 {
			continue
		}
		ids := sb[string(p.UID)]
		sort.Strings(ids)
		cs := p.Status.ContainerStatuses[0]
		m[p.Name] = steadyPod{uid: string(p.UID), containerID: cs.ContainerID, restarts: cs.RestartCount, sandboxes: strings.Join(ids, ",")}
	}
	return m
}

// checkSteady compares the Deployment's pods after a crash with before:
// all Ready again, nothing restarted or recreated.
func (k *kc) checkSteady(before map[string]steadyPod) {
	k.t.Helper()
	k.eventually(60*time.Second, "steady's pods Ready again", func() (bool, string) {
		out := k.jsonpath("deployment/steady", "{.status.readyReplicas}/{.status.replicas}")
		pods := k.podsOf("steady")
		ready := 0
		for _, p := range pods {
			if f := strings.Fields(p); len(f) == 3 && f[2] == "True" {
				ready++
			}
		}
		return ready == len(before) && len(pods) == len(before), fmt.Sprintf("%s %s (want the %d of before: %v)", out, strings.Join(pods, "; "), len(before), before)
	})
	after := k.steadySnapshot()
	if len(after) != len(before) {
		k.t.Errorf("pods before %v, after %v", before, after)
	}
	for name, b := range before {
		a, ok := after[name]
		if !ok {
			k.t.Errorf("pod %s gone", name)
			continue
		}
		if a != b {
			k.t.Errorf("pod %s: before %+v, after %+v", name, b, a)
		}
		if a.restarts != 0 {
			k.t.Errorf("pod %s: restartCount %d", name, a.restarts)
		}
	}
}

func (k *kc) steadyBefore() map[string]steadyPod {
	k.t.Helper()
	before := k.steadySnapshot()
	if len(before) == 0 {
		k.t.Fatal("no running pods of deployment steady (see the Deployment subtest)")
	}
	for name, p := range before {
		if p.sandboxes == "" {
			k.t.Fatalf("pod %s has no sandbox in the runtime", name)
		}
	}
	return before
}

// (f) kill -9 of the agent: the node goes NotReady (the controller
// manager's grace, 20 s in this mode), comes back Ready after a restart,
// and the pods ran on untouched.
func testAgentKill9(k *kc, c *harness.Cluster) {
	t := k.t
	before := k.steadyBefore()
	stopWatch := k.watchSteadyStatus()
	if err := c.KillNode(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	k.eventually(60*time.Second, "node NotReady after the agent's death", func() (bool, string) {
		s := k.nodeReady(c.NodeName)
		return s != "True" && s != "", s
	})
	t.Logf("node NotReady %s after the kill", time.Since(killed).Round(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.RestartNode(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	k.eventually(60*time.Second, "node Ready after the agent's restart", func() (bool, string) {
		s := k.nodeReady(c.NodeName)
		return s == "True", s
	})
	t.Logf("node Ready %s after the restart", time.Since(restarted).Round(time.Second))
	k.checkSteady(before)
	if bad := stopWatch(); len(bad) > 0 {
		t.Errorf("the restarted agent wrote statuses without the pods' containers:\n%s", strings.Join(bad, "\n"))
	}
}

// (g) kill -9 of peapod under the agent: the same pods, containers and
// sandboxes once it is back.
func testAgentRuntimeKill9(k *kc, c *harness.Cluster) {
	t := k.t
	before := k.steadyBefore()
	if err := c.KillRuntime(); err != nil {
		t.Fatal(err)
	}
	// Let the agent notice (a pod sync or two) before the runtime is back.
	time.Sleep(3 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.RestartRuntime(ctx); err != nil {
		t.Fatal(err)
	}
	// Several pod syncs.
	time.Sleep(10 * time.Second)
	k.eventually(60*time.Second, "node Ready after the runtime's restart", func() (bool, string) {
		s := k.nodeReady(c.NodeName)
		return s == "True", s
	})
	k.checkSteady(before)
}

// trapPod is a pod whose container leaves on SIGTERM and never exits by
// itself; the last %s adds lines to its container.
const trapPod = `apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  terminationGracePeriodSeconds: %d
  containers:
  - name: c
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
%s`

// podEvents lists the events about pod (kubectl get events
// --field-selector involvedObject.name=POD).
func (k *kc) podEvents(pod string) ([]corev1.Event, error) {
	out, err := k.try("get", "events", "--field-selector", "involvedObject.name="+pod, "-o", "json")
	if err != nil {
		return nil, err
	}
	var l corev1.EventList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, err
	}
	return l.Items, nil
}

// eventsByReason indexes events by reason and renders them for a message.
func eventsByReason(evs []corev1.Event) (map[string][]corev1.Event, string) {
	m := map[string][]corev1.Event{}
	var lines []string
	for _, e := range evs {
		m[e.Reason] = append(m[e.Reason], e)
		lines = append(lines, fmt.Sprintf("%s %s (source %s/%s, reporting %s/%s): %s",
			e.Type, e.Reason, e.Source.Component, e.Source.Host, e.ReportingController, e.ReportingInstance, e.Message))
	}
	return m, strings.Join(lines, "\n")
}

// (j) Events as the kubelet records them: a new pod gets the scheduler's
// Scheduled, then Pulled (Pulling first when the image is not there yet),
// Created and Started from component kubelet on this node; a container
// whose liveness probe fails gets Unhealthy and Killing and is restarted.
func testAgentEvents(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(fmt.Sprintf(trapPod, "evented", 2, busybox, ""))
	k.apply(fmt.Sprintf(trapPod, "unhealthy", 2, busybox, `    livenessProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
      failureThreshold: 1
`))
	k.waitReady("evented", 90*time.Second)

	want := []string{"Scheduled", "Pulled", "Created", "Started"}
	var byReason map[string][]corev1.Event
	k.eventually(30*time.Second, "events of pod evented", func() (bool, string) {
		evs, err := k.podEvents("evented")
		if err != nil {
			return false, err.Error()
		}
		m, all := eventsByReason(evs)
		byReason = m
		for _, r := range want {
			if len(m[r]) == 0 {
				return false, "no " + r + " in:\n" + all
			}
		}
		return true, ""
	})
	_, all := eventsByReason(append(append(append(byReason["Scheduled"], byReason["Pulling"]...), byReason["Pulled"]...),
		append(byReason["Created"], byReason["Started"]...)...))
	t.Logf("events of pod evented:\n%s", all)
	if s := byReason["Scheduled"][0]; !strings.Contains(s.Message, c.NodeName) {
		t.Errorf("Scheduled: %q does not name node %s", s.Message, c.NodeName)
	}
	for _, r := range []string{"Pulling", "Pulled", "Created", "Started"} {
		for _, e := range byReason[r] {
			if e.Source.Component != "kubelet" || e.Source.Host != c.NodeName {
				t.Errorf("%s event from %s/%s, want kubelet/%s", r, e.Source.Component, e.Source.Host, c.NodeName)
			}
			if e.Type != corev1.EventTypeNormal {
				t.Errorf("%s event of type %s, want Normal", r, e.Type)
			}
		}
	}

	start := time.Now()
	k.eventually(60*time.Second, "pod unhealthy restarted, with Unhealthy and Killing events", func() (bool, string) {
		restarts := k.jsonpath("pod/unhealthy", "{.status.containerStatuses[0].restartCount}")
		evs, err := k.podEvents("unhealthy")
		if err != nil {
			return false, err.Error()
		}
		m, all := eventsByReason(evs)
		n, _ := strconv.Atoi(restarts)
		return n > 0 && len(m["Unhealthy"]) > 0 && len(m["Killing"]) > 0, "restartCount " + restarts + ", events:\n" + all
	})
	t.Logf("pod unhealthy restarted %s after pod evented was Ready", time.Since(start).Round(100*time.Millisecond))
	evs, err := k.podEvents("unhealthy")
	if err != nil {
		t.Fatal(err)
	}
	m, all := eventsByReason(evs)
	t.Logf("events of pod unhealthy:\n%s", all)
	for _, r := range []string{"Unhealthy", "Killing"} {
		for _, e := range m[r] {
			if e.Source.Component != "kubelet" || e.Source.Host != c.NodeName {
				t.Errorf("%s event from %s/%s, want kubelet/%s", r, e.Source.Component, e.Source.Host, c.NodeName)
			}
		}
	}
	if e := m["Unhealthy"][0]; e.Type != corev1.EventTypeWarning || !strings.Contains(e.Message, "Liveness") {
		t.Errorf("Unhealthy: %s %q, want a Warning about the liveness probe", e.Type, e.Message)
	}
}

// mirrorState is a mirror pod as MirrorRecreated compares it.
type mirrorState struct {
	uid, phase, containers string
	restarts               int32
	deleting               bool
}

func (k *kc) mirror(name string) (mirrorState, error) {
	out, err := k.try("get", "pod", name, "-o", "json")
	if err != nil {
		return mirrorState{}, err
	}
	var p corev1.Pod
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		return mirrorState{}, err
	}
	if p.Annotations[corev1.MirrorPodAnnotationKey] == "" {
		return mirrorState{}, fmt.Errorf("pod %s is no mirror pod (annotations %v)", name, p.Annotations)
	}
	m := mirrorState{uid: string(p.UID), phase: string(p.Status.Phase), deleting: p.DeletionTimestamp != nil}
	var ids []string
	for _, cs := range p.Status.ContainerStatuses {
		ids = append(ids, cs.ContainerID)
		m.restarts += cs.RestartCount
	}
	m.containers = strings.Join(ids, ",")
	return m, nil
}

// (k) The static pod's mirror pod deleted with kubectl: the agent puts a
// new one (another UID) in its place, and the static pod runs on
// untouched.
func testAgentMirrorRecreated(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	manifest := filepath.Join(c.ManifestsDir, k.ns+".yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: static-keep, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
`, k.ns, busybox)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })
	name := "static-keep-" + c.NodeName
	var before mirrorState
	k.eventually(90*time.Second, "mirror pod "+name+" Running", func() (bool, string) {
		m, err := k.mirror(name)
		if err != nil {
			return false, err.Error()
		}
		before = m
		return m.phase == "Running" && m.containers != "", fmt.Sprintf("%+v", m)
	})
	deleted := time.Now()
	k.run("delete", "pod", name, "--wait=false")
	var after mirrorState
	k.eventually(20*time.Second, "a new mirror pod "+name+" Running", func() (bool, string) {
		m, err := k.mirror(name)
		if err != nil {
			return false, err.Error()
		}
		after = m
		return m.uid != before.uid && !m.deleting && m.phase == "Running" && m.containers != "", fmt.Sprintf("%+v", m)
	})
	t.Logf("new mirror pod Running %s after the delete (uid %s, was %s)", time.Since(deleted).Round(100*time.Millisecond), after.uid, before.uid)
	if after.containers != before.containers || after.restarts != 0 {
		t.Errorf("static pod's containers %s (restarts %d), before the delete %s (restarts %d)",
			after.containers, after.restarts, before.containers, before.restarts)
	}
}

// (l) A pod deleted while the agent is down: graceful, it sits Terminating
// (nobody finishes it) until the agent is back, which then stops it and
// removes it from the API server and the runtime; forced, it is gone from
// the API server at once and the agent, once back, reaps its sandbox as an
// orphan when its pod list has synced.
func testAgentDeletedWhileDown(t *testing.T, c *harness.Cluster, force bool) {
	k := newNSIn(t, c)
	ctx := context.Background()
	k.apply(fmt.Sprintf(trapPod, "doomed", 5, busybox, ""))
	k.waitReady("doomed", 90*time.Second)
	uid := k.jsonpath("pod/doomed", "{.metadata.uid}")
	sandboxes := func() []string {
		sb, err := c.PodSandboxes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return sb[uid]
	}
	if len(sandboxes()) == 0 {
		t.Fatalf("no sandbox for pod %s in the runtime", uid)
	}

	if err := c.KillNode(); err != nil {
		t.Fatal(err)
	}
	down := true
	restart := func() {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		down = false
		if err := c.RestartNode(rctx); err != nil {
			t.Fatal(err)
		}
	}
	// A failure below must not leave the later subtests without a node.
	t.Cleanup(func() {
		if down {
			restart()
		}
	})

	if force {
		k.run("delete", "pod", "doomed", "--grace-period=0", "--force")
		if out, err := k.try("get", "pod", "doomed", "-o", "jsonpath={.metadata.uid}"); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("pod still in the API server after a forced delete: %s %v", out, err)
		}
	} else {
		k.run("delete", "pod", "doomed", "--wait=false")
		// Past the 5 s grace period: with no agent nothing finishes it.
		time.Sleep(7 * time.Second)
		if ts := k.jsonpath("pod/doomed", "{.metadata.deletionTimestamp}"); ts == "" {
			t.Fatalf("pod doomed not Terminating with the agent down: %s", k.jsonpath("pod/doomed", "{.metadata}"))
		}
	}
	if len(sandboxes()) == 0 {
		t.Fatal("the pod's sandbox is gone with the agent down")
	}

	restart()
	restarted := time.Now()
	limit := 30 * time.Second
	if force {
		limit = 90 * time.Second
	} else {
		k.eventually(limit, "pod doomed gone from the API server", func() (bool, string) {
			out, err := k.try("get", "pod", "doomed", "-o", "jsonpath={.status.phase} {.metadata.deletionTimestamp}")
			return err != nil && strings.Contains(err.Error(), "NotFound"), out
		})
		t.Logf("pod gone from the API server %s after the agent's restart", time.Since(restarted).Round(100*time.Millisecond))
	}
	k.eventually(limit-time.Since(restarted), "sandbox gone from the runtime", func() (bool, string) {
		ids := sandboxes()
		return len(ids) == 0, fmt.Sprint(ids)
	})
	t.Logf("sandbox gone from the runtime %s after the agent's restart", time.Since(restarted).Round(100*time.Millisecond))
}

// (m) The API server restarted under the agent: the node stays (or comes
// back) Ready, its Lease is renewed again, a pod created afterwards runs
// (the agent's pod informer listed again and went on), and the running
// pods were left alone.
func testAgentAPIServerRestart(k *kc, c *harness.Cluster) {
	t := k.t
	before := k.steadyBefore()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("API server ready again %s after the restart began", back.Sub(start).Round(100*time.Millisecond))

	k.eventually(60*time.Second, "node Ready after the API server's restart", func() (bool, string) {
		s := k.nodeReady(c.NodeName)
		return s == "True", s
	})
	var node corev1.Node
	k.getJSON(&node, "node", c.NodeName)
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.LastTransitionTime.Time.After(start.Add(-time.Second)) {
				t.Logf("node went NotReady and came back: Ready since %s (restart began %s)", cond.LastTransitionTime.Format(time.RFC3339), start.Format(time.RFC3339))
			} else {
				t.Logf("node stayed Ready across the restart (Ready since %s)", cond.LastTransitionTime.Format(time.RFC3339))
			}
		}
	}
	k.eventually(30*time.Second, "lease renewed after the API server's restart", func() (bool, string) {
		var l coordinationv1.Lease
		out, err := k.try("-n", "kube-node-lease", "get", "lease", c.NodeName, "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil || l.Spec.RenewTime == nil {
			return false, out
		}
		return l.Spec.RenewTime.After(back), l.Spec.RenewTime.String()
	})
	t.Logf("lease renewed %s after the API server was back", time.Since(back).Round(100*time.Millisecond))

	fresh := newNSIn(t, c)
	fresh.apply(fmt.Sprintf(trapPod, "after-restart", 2, busybox, ""))
	fresh.waitReady("after-restart", 90*time.Second)
	if p := fresh.jsonpath("pod/after-restart", "{.status.phase}"); p != "Running" {
		t.Errorf("pod after-restart: phase %s, want Running", p)
	}
	t.Logf("pod created after the restart Ready %s after the API server was back", time.Since(back).Round(100*time.Millisecond))
	k.checkSteady(before)
}

// fileTail is the last n lines of a file.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// watchSteadyStatus watches the Deployment's pods (kubectl get -w, a real
// watch) from now until the returned stop, and reports every update that
// took a live pod's container statuses away: an agent that has just
// (re)started must not write a status before it has looked at the runtime.
func (k *kc) watchSteadyStatus() (stop func() []string) {
	k.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := k.cmd(ctx, "get", "pods", "-l", "app=steady", "--watch-only", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		k.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	var bad []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(out)
		for {
			var p corev1.Pod
			if err := dec.Decode(&p); err != nil {
				return
			}
			if p.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
				bad = append(bad, fmt.Sprintf("%s (rv %s): %d container statuses, phase %q, %d conditions",
					p.Name, p.ResourceVersion, len(p.Status.ContainerStatuses), p.Status.Phase, len(p.Status.Conditions)))
			}
		}
	}()
	return func() []string {
		cancel()
		_ = cmd.Wait()
		<-done
		return bad
	}
}
