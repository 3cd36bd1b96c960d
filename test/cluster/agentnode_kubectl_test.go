package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"peapod/hack/cluster/harness"
)

// The kubectl commands that go through the node's kubelet API (peapod-agent's
// kubeletapi/ on NodeIP:Ports.Kubelet): the API server proxies logs, exec,
// attach, port-forward and node proxy requests to it, and metrics-server
// scrapes its /metrics/resource for kubectl top.

// hogPod holds ~8 MB in a shell variable, so that kubectl top, which
// shows memory in whole Mi, has something above zero to show.
const hogPod = `apiVersion: v1
kind: Pod
metadata: {name: hog}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    command: [sh, -c, 'x=$(head -c 8000000 /dev/zero | tr "\0" a); trap "exit 0" TERM; while true; do sleep 1; done']
`

// topMi parses a kubectl top memory column ("123Mi").
func topMi(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "Mi"))
	return n, err == nil && strings.HasSuffix(s, "Mi")
}

var topCPU = regexp.MustCompile(`^\d+m$`)

// (n) kubectl top node and pod, through metrics-server (harness
// Options.MetricsServer) scraping the agent's /metrics/resource every 15 s:
// a pod's first figures need two scrapes.
func testAgentTop(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(fmt.Sprintf(hogPod, busybox))
	k.waitReady("hog", 90*time.Second)
	ready := time.Now()

	k.eventually(90*time.Second, "kubectl top node lists "+c.NodeName+" with CPU and memory", func() (bool, string) {
		out, err := k.try("top", "node", "--no-headers")
		if err != nil {
			return false, err.Error()
		}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			// NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%)
			f := strings.Fields(l)
			if len(f) != 5 || f[0] != c.NodeName {
				continue
			}
			mi, ok := topMi(f[3])
			if topCPU.MatchString(f[1]) && ok && mi > 0 {
				t.Logf("kubectl top node: %s", l)
				return true, ""
			}
		}
		return false, out
	})
	k.eventually(90*time.Second, "kubectl top pod lists hog with memory", func() (bool, string) {
		out, err := k.try("top", "pod", "--no-headers")
		if err != nil {
			return false, err.Error()
		}
		// NAME CPU(cores) MEMORY(bytes)
		f := strings.Fields(out)
		if len(f) != 3 || f[0] != "hog" {
			return false, out
		}
		mi, ok := topMi(f[2])
		if !topCPU.MatchString(f[1]) || !ok || mi == 0 {
			return false, out
		}
		t.Logf("kubectl top pod, %s after the pod was Ready: %s", time.Since(ready).Round(time.Second), strings.TrimSpace(out))
		return true, ""
	})
}

// streamsPod is KubectlStreams' pod: "shell" echoes its stdin ("got:LINE",
// for attach) and serves pf-ok over HTTP on 8080 (port-forward); "ticker"
// logs a numbered line every second (logs -f); "counter" logs "run N" and
// five lines, and exits 3 on its first run only (logs --previous), counting
// its runs in an emptyDir.
const streamsPod = `apiVersion: v1
kind: Pod
metadata: {name: streams}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: %[1]s
    stdin: true
    command: [sh, -c, 'mkdir -p /www && echo pf-ok > /www/index.html && httpd -p 8080 -h /www && while read l; do echo "got:$l"; done']
  - name: ticker
    image: %[1]s
    command: [sh, -c, 'trap "exit 0" TERM; i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 1; done']
  - name: counter
    image: %[1]s
    command: [sh, -c, 'n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo "run $n"; for i in 0 1 2 3 4; do echo "line $n.$i"; done; [ $n -gt 1 ] || exit 3; trap "exit 0" TERM; while true; do sleep 1; done']
    volumeMounts: [{name: d, mountPath: /d}]
  volumes: [{name: d, emptyDir: {}}]
`

// runLines is what counter logs on run n.
func runLines(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %d\n", n)
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&b, "line %d.%d\n", n, i)
	}
	return b.String()
}

// (o) kubectl logs (--tail, --timestamps, --previous, -f), exec, attach,
// run -i --rm, port-forward, cp and the node's /stats/summary through the
// API server's node proxy: every one of them reaches the agent's kubelet
// API through the API server.
func testAgentKubectlStreams(t *testing.T, c *harness.Cluster) {
	k := newNSIn(t, c)
	k.apply(fmt.Sprintf(streamsPod, busybox))
	k.eventually(120*time.Second, "pod streams Ready, counter restarted once", func() (bool, string) {
		var p corev1.Pod
		out, err := k.try("get", "pod", "streams", "-o", "json")
		if err != nil {
			return false, err.Error()
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return false, err.Error()
		}
		restarts := int32(-1)
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == "counter" {
				restarts = cs.RestartCount
			}
		}
		return podCondition(p.Status.Conditions, corev1.PodReady) == corev1.ConditionTrue && restarts >= 1,
			fmt.Sprintf("phase %s, counter restarts %d, statuses %+v", p.Status.Phase, restarts, p.Status.ContainerStatuses)
	})

	t.Run("logs", func(t *testing.T) {
		k := k.on(t)
		if out := k.run("logs", "streams", "-c", "counter"); out != runLines(2) {
			t.Errorf("logs -c counter = %q, want %q", out, runLines(2))
		}
		if out := k.run("logs", "streams", "-c", "counter", "--tail=2"); out != "line 2.3\nline 2.4\n" {
			t.Errorf("logs --tail=2 = %q", out)
		}
		if out := k.run("logs", "streams", "-c", "counter", "--previous"); out != runLines(1) {
			t.Errorf("logs --previous = %q, want %q", out, runLines(1))
		}
		if out := k.run("logs", "streams", "-c", "counter", "--previous", "--tail=1"); out != "line 1.4\n" {
			t.Errorf("logs --previous --tail=1 = %q", out)
		}
		if code := k.jsonpath("pod/streams", `{.status.containerStatuses[?(@.name=="counter")].lastState.terminated.exitCode}`); code != "3" {
			t.Errorf("counter's lastState.terminated.exitCode %q, want 3", code)
		}
		out := k.run("logs", "streams", "-c", "counter", "--timestamps")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		want := strings.Split(strings.TrimSuffix(runLines(2), "\n"), "\n")
		if len(lines) != len(want) {
			t.Fatalf("logs --timestamps = %q", out)
		}
		for i, l := range lines {
			ts, rest, _ := strings.Cut(l, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || rest != want[i] {
				t.Errorf("logs --timestamps line %q: want <RFC 3339 time> %q (%v)", l, want[i], err)
				continue
			}
			if d := time.Since(at); d < -time.Minute || d > 5*time.Minute {
				t.Errorf("logs --timestamps line %q: time %s ago", l, d.Round(time.Second))
			}
		}
	})

	t.Run("logs-follow", func(t *testing.T) {
		last := tickOf(strings.TrimSpace(k.on(t).run("logs", "streams", "-c", "ticker", "--tail=1")))
		if last < 0 {
			t.Fatal("no tick line in ticker's log")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := k.cmd(ctx, "logs", "-f", "streams", "-c", "ticker", "--tail=1")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		var seen []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			// A line the ticker wrote after -f began (two past the last
			// one read before: the one in between may predate it).
			if tickOf(sc.Text()) >= last+2 {
				return
			}
		}
		t.Fatalf("logs -f: no line written after it started (last tick before: %d); saw %q", last, seen)
	})

	t.Run("exec", func(t *testing.T) {
		k := k.on(t)
		if out := k.run("exec", "streams", "-c", "shell", "--", "sh", "-c", "echo $((6*7))"); out != "42\n" {
			t.Errorf("exec: %q", out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := k.cmd(ctx, "exec", "streams", "-c", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 7 {
			t.Errorf("exec of a command exiting 7: %v (stderr %q)", err, stderr.String())
		}
		if stdout.String() != "out\n" || !strings.Contains(stderr.String(), "err\n") {
			t.Errorf("exec: stdout %q, stderr %q; want out on stdout, err on stderr", stdout.String(), stderr.String())
		}
		out, err := k.tryCtx(ctx, []byte("from stdin\nsecond line\n"), "exec", "-i", "streams", "-c", "shell", "--", "cat")
		if err != nil || out != "from stdin\nsecond line\n" {
			t.Errorf("exec -i: %q %v", out, err)
		}
	})

	t.Run("attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := k.cmd(ctx, "attach", "-i", "streams", "-c", "shell")
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
		for done := false; !done; {
			select {
			case ok := <-found:
				if !ok {
					t.Fatal("attach: output ended without the echoed line")
				}
				done = true
			case <-tick.C:
				fmt.Fprintln(stdin, "hello-attach")
			case <-ctx.Done():
				t.Fatal("attach: no echo within 30s")
			}
		}
		// What the container wrote while attached is in its log as well.
		if out := k.on(t).run("logs", "streams", "-c", "shell"); !strings.Contains(out, "got:hello-attach\n") {
			t.Errorf("logs -c shell after attach: %q", out)
		}
	})

	t.Run("run-i-rm", func(t *testing.T) {
		k := k.on(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := k.tryCtx(ctx, []byte("hello-run\n"), "run", "once", "-i", "--rm", "--restart=Never",
			"--image="+busybox, "--command", "--", "sh", "-c", `read x; echo "got:$x"`)
		if err != nil || !strings.Contains(out, "got:hello-run\n") {
			t.Fatalf("run -i --rm: %q %v", out, err)
		}
		k.eventually(30*time.Second, "pod once deleted by --rm", func() (bool, string) {
			out, err := k.try("get", "pod", "once", "-o", "name")
			return err != nil && strings.Contains(err.Error(), "NotFound"), out
		})
	})

	t.Run("port-forward", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := k.cmd(ctx, "port-forward", "pod/streams", ":8080")
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
				t.Fatalf("GET #%d through port-forward: %q %v", i+1, body, err)
			}
		}
	})

	t.Run("cp", func(t *testing.T) {
		k := k.on(t)
		dir := t.TempDir()
		src := filepath.Join(dir, "in.txt")
		data := strings.Repeat("peapod cp test\n", 1000)
		if err := os.WriteFile(src, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		k.run("cp", src, k.ns+"/streams:/tmp/in.txt", "-c", "shell")
		if out := k.run("exec", "streams", "-c", "shell", "--", "md5sum", "/tmp/in.txt"); !strings.HasPrefix(out, md5hex(data)) {
			t.Errorf("copied in: %q, want md5 %s", out, md5hex(data))
		}
		dst := filepath.Join(dir, "out.txt")
		k.run("cp", k.ns+"/streams:/tmp/in.txt", dst, "-c", "shell")
		if b, err := os.ReadFile(dst); err != nil || string(b) != data {
			t.Errorf("copied out: %d bytes, %v", len(b), err)
		}
	})

	t.Run("stats-summary", func(t *testing.T) {
		k := k.on(t)
		out := k.run("get", "--raw", "/api/v1/nodes/"+c.NodeName+"/proxy/stats/summary")
		var s statsapi.Summary
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("stats/summary: %v: %.500s", err, out)
		}
		if s.Node.NodeName != c.NodeName {
			t.Errorf("node.nodeName %q, want %s", s.Node.NodeName, c.NodeName)
		}
		var pod *statsapi.PodStats
		for i, p := range s.Pods {
			if p.PodRef.Namespace == k.ns && p.PodRef.Name == "streams" {
				pod = &s.Pods[i]
			}
		}
		if pod == nil {
			t.Fatalf("pod %s/streams not in stats/summary (%d pods)", k.ns, len(s.Pods))
		}
		uid := k.jsonpath("pod/streams", "{.metadata.uid}")
		if pod.PodRef.UID != uid {
			t.Errorf("podRef.uid %q, want %s", pod.PodRef.UID, uid)
		}
		names := map[string]bool{}
		for _, cs := range pod.Containers {
			names[cs.Name] = true
		}
		for _, n := range []string{"shell", "ticker", "counter"} {
			if !names[n] {
				t.Errorf("container %s not in the pod's stats (%v)", n, names)
			}
		}
		if pod.Memory != nil && pod.Memory.WorkingSetBytes != nil {
			t.Logf("stats/summary: pod streams, %d containers, working set %d bytes", len(pod.Containers), *pod.Memory.WorkingSetBytes)
		}
	})
}

// tickOf is N of a ticker line "tick N", or -1.
func tickOf(line string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(line, "tick "))
	if err != nil || !strings.HasPrefix(line, "tick ") {
		return -1
	}
	return n
}
