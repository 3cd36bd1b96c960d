package cluster

import (
	"bufio"
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

// webDeployment serves its pod's name over HTTP on 8080 and is Ready once
// it answers.
func webDeployment(name string, replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: %[3]s
        command: [sh, -c, 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www']
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
`, name, replicas, busybox)
}

func httpGet(url string) (string, error) {
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// podsOf returns "name ip ready" per pod with the label app=NAME that is
// not terminating.
func (k *kc) podsOf(app string) []string {
	out, _ := k.try("get", "pods", "-l", "app="+app, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status} {.metadata.deletionTimestamp}{"\n"}{end}`)
	var pods []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 { // a fourth field: terminating
			pods = append(pods, l)
		}
	}
	return pods
}

func (k *kc) allPods(app string) int {
	out, _ := k.try("get", "pods", "-l", "app="+app, "-o", "name")
	return len(strings.Fields(out))
}

func TestNodeReadyWithPeapod(t *testing.T) {
	k := &kc{t: t, c: cluster(t)}
	name, version, err := k.c.RuntimeVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := name + "://" + version
	if name != k.c.Runtime {
		t.Fatalf("runtime reports name %q, want %q", name, k.c.Runtime)
	}
	out := k.run("get", "nodes", "-o", "wide")
	t.Logf("kubectl get nodes -o wide:\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one node, got:\n%s", out)
	}
	f := strings.Fields(lines[1])
	if f[0] != k.c.NodeName || f[1] != "Ready" {
		t.Errorf("node %s status %s, want %s Ready", f[0], f[1], k.c.NodeName)
	}
	if got := f[len(f)-1]; got != want {
		t.Errorf("CONTAINER-RUNTIME %q, want %q", got, want)
	}
	if ip := k.jsonpath("node/"+k.c.NodeName, `{.status.addresses[?(@.type=="InternalIP")].address}`); ip != k.c.NodeIP {
		t.Errorf("InternalIP %q, want %q", ip, k.c.NodeIP)
	}
	if v := k.jsonpath("node/"+k.c.NodeName, "{.status.nodeInfo.kubeletVersion}"); v != "v1.37.2" {
		t.Errorf("kubeletVersion %q, want v1.37.2", v)
	}
}

func TestDeploymentScaleAndServe(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.apply(webDeployment("web", 3))
	k.run("rollout", "status", "deployment/web", "--timeout=180s")
	check := func(n int) {
		t.Helper()
		pods := k.podsOf("web")
		if len(pods) != n {
			t.Fatalf("want %d pods, got %d: %v", n, len(pods), pods)
		}
		for _, p := range pods {
			f := strings.Fields(p)
			if len(f) != 3 || f[2] != "True" {
				t.Fatalf("pod not Ready: %q", p)
			}
			body, err := httpGet("http://" + f[1] + ":8080/")
			if err != nil {
				t.Fatalf("pod %s at %s: %v", f[0], f[1], err)
			}
			if want := "hello from " + f[0]; strings.TrimSpace(body) != want {
				t.Fatalf("pod %s answered %q, want %q", f[0], body, want)
			}
		}
	}
	check(3)
	k.run("scale", "deployment/web", "--replicas=10")
	k.run("rollout", "status", "deployment/web", "--timeout=240s")
	check(10)
	k.run("scale", "deployment/web", "--replicas=1")
	k.eventually(120*time.Second, "scaled down to 1 pod", func() (bool, string) {
		n := k.allPods("web")
		return n == 1, fmt.Sprintf("%d pods", n)
	})
	check(1)
}

// counterPod crashes after every run, counting its runs in an emptyDir.
const counterPod = `apiVersion: v1
kind: Pod
metadata: {name: counter}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sh, -c, 'n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo "run $n"; i=0; while [ $i -lt 15 ]; do echo "line $n.$i"; i=$((i+1)); sleep 0.2; done; exit 3']
    volumeMounts: [{name: d, mountPath: /d}]
  volumes: [{name: d, emptyDir: {}}]
`

func TestLogs(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.apply(fmt.Sprintf(counterPod, busybox))
	k.waitPodPhase("counter", "Running", 120*time.Second)

	// -f streams lines as they are written.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := k.cmd(ctx, "logs", "-f", "counter")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	seen := 0
	for sc.Scan() && seen < 5 {
		if strings.HasPrefix(sc.Text(), "line 1.") {
			seen++
		}
	}
	cancel()
	_ = cmd.Wait()
	if seen < 5 {
		t.Fatalf("logs -f: saw %d lines of the first run", seen)
	}

	// After the first run exits (code 3) the kubelet restarts it: --previous
	// shows run 1, the current log run 2; then it backs off.
	k.eventually(90*time.Second, "restartCount >= 1 and running again", func() (bool, string) {
		rc := k.jsonpath("pod/counter", "{.status.containerStatuses[0].restartCount}")
		run := k.jsonpath("pod/counter", "{.status.containerStatuses[0].state.running.startedAt}")
		return rc != "" && rc != "0" && run != "", rc
	})
	if code := k.jsonpath("pod/counter", "{.status.containerStatuses[0].lastState.terminated.exitCode}"); code != "3" {
		t.Errorf("lastState.terminated.exitCode %q, want 3", code)
	}
	prev := k.run("logs", "--previous", "counter")
	if !strings.HasPrefix(prev, "run 1\n") || !strings.Contains(prev, "line 1.14") {
		t.Errorf("logs --previous:\n%s", prev)
	}
	k.eventually(10*time.Second, "current log of run 2", func() (bool, string) {
		cur, _ := k.try("logs", "counter")
		return strings.HasPrefix(cur, "run 2\n"), cur
	})
	if out := k.run("logs", "--previous", "--tail=2", "counter"); out != "line 1.13\nline 1.14\n" {
		t.Errorf("logs --previous --tail=2 = %q", out)
	}
	time.Sleep(1500 * time.Millisecond)
	all := strings.Count(k.run("logs", "counter"), "\n")
	recent := strings.Count(k.run("logs", "--since=1s", "counter"), "\n")
	if recent == 0 || recent >= all {
		t.Errorf("logs --since=1s: %d lines of %d", recent, all)
	}

}

func TestCrashLoopBackOff(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.run("run", "crash", "--image="+busybox, "--command", "--", "sh", "-c", "sleep 1; exit 3")
	// The kubelet shows CrashLoopBackOff when it syncs the pod during a
	// back-off, which may be only for a moment before the next restart
	// (containerd shows the same): watch every status update, not a poll.
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := k.cmd(ctx, "get", "pod", "crash", "-w", "-o", `jsonpath={.status.containerStatuses[0].state.waiting.reason}{"\n"}`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if sc.Text() == "CrashLoopBackOff" {
			break
		}
	}
	cancel()
	_ = cmd.Wait()
	if len(seen) == 0 || seen[len(seen)-1] != "CrashLoopBackOff" {
		t.Fatalf("no CrashLoopBackOff within 150s; waiting reasons seen: %q", seen)
	}
	if code := k.jsonpath("pod/crash", "{.status.containerStatuses[0].lastState.terminated.exitCode}"); code != "3" {
		t.Errorf("lastState.terminated.exitCode %q, want 3", code)
	}
	ev := k.run("get", "events", "--field-selector=involvedObject.name=crash", "-o", "jsonpath={.items[*].reason}")
	if !strings.Contains(ev, "BackOff") {
		t.Errorf("no BackOff event: %q", ev)
	}
}

const shellPod = `apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    stdin: true
    command: [sh, -c, 'mkdir -p /www && echo pf-ok > /www/index.html && httpd -p 8080 -h /www && while read l; do echo "got:$l"; done']
`

func TestExecAttachPortForwardCp(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.apply(fmt.Sprintf(shellPod, busybox))
	k.waitReady("shell", 120*time.Second)

	t.Run("exec", func(t *testing.T) {
		if out := k.run("exec", "shell", "--", "sh", "-c", "echo $((6*7))"); out != "42\n" {
			t.Errorf("exec: %q", out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := k.tryCtx(ctx, []byte("from stdin\n"), "exec", "-i", "shell", "--", "cat")
		if err != nil || out != "from stdin\n" {
			t.Errorf("exec -i: %q %v", out, err)
		}
		if _, err := k.try("exec", "shell", "--", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
			t.Errorf("exec of a failing command: %v", err)
		}
	})

	t.Run("exec-it", func(t *testing.T) {
		// -t needs a terminal on kubectl's side: script(1) gives it one.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		kubectl := fmt.Sprintf("%s --kubeconfig %s -n %s exec -it shell -- sh -c 'tty; echo TTY-OK'", k.c.Kubectl, k.c.Kubeconfig, k.ns)
		cmd := exec.CommandContext(ctx, "script", "-qec", kubectl, "/dev/null")
		cmd.WaitDelay = 5 * time.Second // kubectl, script's child, may hold the pipe
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "TTY-OK") {
			t.Errorf("exec -it: %v\n%s", err, out)
		}
	})

	t.Run("attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := k.cmd(ctx, "attach", "-i", "shell")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		found := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if sc.Text() == "got:hello-attach" {
					found <- true
					return
				}
			}
			found <- false
		}()
		// kubectl attach may take a moment to connect: repeat the line.
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case ok := <-found:
				if !ok {
					t.Fatal("attach: output ended without the echoed line")
				}
				return
			case <-tick.C:
				fmt.Fprintln(stdin, "hello-attach")
			case <-ctx.Done():
				t.Fatal("attach: no echo within 30s")
			}
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := k.cmd(ctx, "port-forward", "pod/shell", ":8080")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
		port := ""
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port = m[1]
				break
			}
		}
		if port == "" {
			t.Fatal("port-forward printed no local port")
		}
		go func() { _, _ = io.Copy(io.Discard, stdout) }()
		for i := 0; i < 3; i++ { // several connections over one forward
			body, err := httpGet("http://127.0.0.1:" + port + "/")
			if err != nil || body != "pf-ok\n" {
				t.Fatalf("through port-forward: %q %v", body, err)
			}
		}
	})

	t.Run("cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.txt")
		data := strings.Repeat("peapod cp test\n", 1000)
		if err := os.WriteFile(src, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		k.run("cp", src, k.ns+"/shell:/tmp/in.txt")
		if out := k.run("exec", "shell", "--", "md5sum", "/tmp/in.txt"); !strings.HasPrefix(out, md5hex(data)) {
			t.Errorf("copied in: %q, want md5 %s", out, md5hex(data))
		}
		dst := filepath.Join(dir, "out.txt")
		k.run("cp", k.ns+"/shell:/tmp/in.txt", dst)
		if b, err := os.ReadFile(dst); err != nil || string(b) != data {
			t.Errorf("copied out: %d bytes, %v", len(b), err)
		}
	})
}

func TestVolumesFromTheAPIServer(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	k.run("create", "configmap", "cm", "--from-literal=a=one")
	k.run("create", "secret", "generic", "sec", "--from-literal=p=s3cret")
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {tier: test}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sh, -c, 'exec sleep 3600']
    volumeMounts:
    - {name: cm, mountPath: /cm}
    - {name: sec, mountPath: /sec}
    - {name: proj, mountPath: /proj}
    - {name: down, mountPath: /down}
  volumes:
  - {name: cm, configMap: {name: cm}}
  - {name: sec, secret: {secretName: sec}}
  - name: proj
    projected:
      sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
  - name: down
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
`, busybox))
	k.waitReady("vols", 120*time.Second)
	cat := func(p string) string { return k.run("exec", "vols", "--", "cat", p) }
	if got := cat("/cm/a"); got != "one" {
		t.Errorf("/cm/a = %q", got)
	}
	if got := cat("/sec/p"); got != "s3cret" {
		t.Errorf("/sec/p = %q", got)
	}
	if got := cat("/down/name"); got != "vols" {
		t.Errorf("/down/name = %q", got)
	}
	if got := cat("/down/labels"); got != `tier="test"` {
		t.Errorf("/down/labels = %q", got)
	}
	if got := cat("/proj/ca.crt"); !strings.Contains(got, "BEGIN CERTIFICATE") {
		t.Errorf("/proj/ca.crt = %q", got)
	}
	tok := cat("/proj/token")
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("/proj/token is no JWT: %q", tok)
	}
	// The token authenticates as the pod's service account.
	tokenKC := filepath.Join(t.TempDir(), "token.kubeconfig")
	if err := os.WriteFile(tokenKC, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, k.c.APIServerURL(), k.c.CAFile(), tok)), 0o600); err != nil {
		t.Fatal(err)
	}
	whoOut, err := exec.Command(k.c.Kubectl, "--kubeconfig", tokenKC, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
	who := string(whoOut)
	if err != nil || who != "system:serviceaccount:"+k.ns+":default" {
		t.Errorf("token is %q (%v)", who, err)
	}
	// A secret's files sit on tmpfs, never on the node's disk.
	if mnt := k.run("exec", "vols", "--", "sh", "-c", "grep ' /sec ' /proc/mounts"); !strings.Contains(mnt, "tmpfs") {
		t.Errorf("/sec is not tmpfs: %q", mnt)
	}
	k.run("patch", "configmap", "cm", "-p", `{"data":{"a":"two"}}`)
	k.eventually(180*time.Second, "ConfigMap update in the mounted file", func() (bool, string) {
		out, _ := k.try("exec", "vols", "--", "cat", "/cm/a")
		return out == "two", out
	})
}

func TestPodLifecycleStates(t *testing.T) {
	t.Parallel()
	k := newNS(t)
	hostDir := filepath.Join(k.c.Dir, "test-"+k.ns)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	k.apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: prestop}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.2; done']
    volumeMounts: [{name: h, mountPath: /h}]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, 'echo prestop-ran > /h/marker']}
  volumes: [{name: h, hostPath: {path: %[2]s}}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: job}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: %[1]s, command: [sh, -c, 'echo job-done']}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: %[1]s
    command: [sh, -c, 'dd if=/dev/zero of=/dev/null bs=128M count=1']
    resources: {limits: {memory: 32Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers:
  - {name: c, image: registry.k8s.io/e2e-test-images/does-not-exist:1.0}
`, busybox, hostDir))

	t.Run("job", func(t *testing.T) {
		k.run("wait", "--for=condition=Complete", "job/job", "--timeout=120s")
		if out := k.run("logs", "job/job"); out != "job-done\n" {
			t.Errorf("job log %q", out)
		}
	})
	t.Run("oom", func(t *testing.T) {
		k.eventually(120*time.Second, "OOMKilled", func() (bool, string) {
			r := k.jsonpath("pod/oom", "{.status.containerStatuses[0].state.terminated.reason}")
			return r == "OOMKilled", r
		})
		if code := k.jsonpath("pod/oom", "{.status.containerStatuses[0].state.terminated.exitCode}"); code != "137" {
			t.Errorf("exit code %q, want 137", code)
		}
	})
	t.Run("image-pull-backoff", func(t *testing.T) {
		seen := map[string]bool{}
		k.eventually(120*time.Second, "ErrImagePull then ImagePullBackOff", func() (bool, string) {
			r := k.jsonpath("pod/noimage", "{.status.containerStatuses[0].state.waiting.reason}")
			if r != "" {
				seen[r] = true
			}
			return seen["ImagePullBackOff"], fmt.Sprint(seen)
		})
		ev := k.run("get", "events", "--field-selector=involvedObject.name=noimage", "-o", "jsonpath={.items[*].reason}")
		if !strings.Contains(ev, "Failed") || !strings.Contains(ev, "BackOff") {
			t.Errorf("events of the pod: %q", ev)
		}
	})
	t.Run("prestop", func(t *testing.T) {
		k.waitReady("prestop", 120*time.Second)
		start := time.Now()
		k.run("delete", "pod", "prestop", "--timeout=60s")
		took := time.Since(start)
		b, err := os.ReadFile(filepath.Join(hostDir, "marker"))
		if err != nil || string(b) != "prestop-ran\n" {
			t.Errorf("preStop marker: %q %v", b, err)
		}
		// The container exits on SIGTERM right after the hook: the delete
		// takes far less than the 20 s grace period.
		if took > 15*time.Second {
			t.Errorf("delete took %s", took)
		}
	})
}

// TestRuntimeKill9 kills peapod under running pods and starts it again: the
// kubelet must see the same sandboxes and containers and recreate nothing.
// It is not parallel: it runs alone, before the parallel tests start.
func TestRuntimeKill9(t *testing.T) {
	k := newNS(t)
	k.apply(webDeployment("survivor", 3))
	k.run("rollout", "status", "deployment/survivor", "--timeout=180s")
	type podState struct{ ip, restarts, uid string }
	snapshot := func() map[string]podState {
		out := k.run("get", "pods", "-l", "app=survivor", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].restartCount} {.metadata.uid}{"\n"}{end}`)
		m := map[string]podState{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) == 4 {
				m[f[0]] = podState{f[1], f[2], f[3]}
			}
		}
		return m
	}
	before := snapshot()
	ctx := context.Background()
	sbBefore, err := k.c.PodSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.c.KillRuntime(); err != nil {
		t.Fatal(err)
	}
	// Let the kubelet notice (its relist runs every second) before the
	// runtime is back.
	time.Sleep(3 * time.Second)
	if err := k.c.RestartRuntime(ctx); err != nil {
		t.Fatal(err)
	}
	// Several relists and pod syncs.
	time.Sleep(15 * time.Second)
	after := snapshot()
	if len(after) != len(before) {
		t.Fatalf("pods before %v, after %v", before, after)
	}
	for name, b := range before {
		a, ok := after[name]
		if !ok || a != b {
			t.Errorf("pod %s: before %+v, after %+v", name, b, a)
		}
	}
	sbAfter, err := k.c.PodSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range before {
		if strings.Join(sbBefore[p.uid], ",") != strings.Join(sbAfter[p.uid], ",") {
			t.Errorf("pod %s: sandboxes %v before, %v after", p.uid, sbBefore[p.uid], sbAfter[p.uid])
		}
	}
	for _, p := range k.podsOf("survivor") {
		f := strings.Fields(p)
		if len(f) != 3 || f[2] != "True" {
			t.Errorf("pod not Ready after the restart: %q", p)
			continue
		}
		if _, err := httpGet("http://" + f[1] + ":8080/"); err != nil {
			t.Errorf("pod %s: %v", f[0], err)
		}
	}
	k.run("delete", "deployment", "survivor")
}

func md5hex(s string) string {
	return fmt.Sprintf("%x", md5.Sum([]byte(s)))
}
