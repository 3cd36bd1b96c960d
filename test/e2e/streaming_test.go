package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/spdy"
)

// spdyConnect upgrades a streaming URL to SPDY with the given protocol, as
// the kubelet's and crictl's clients do.
func spdyConnect(t *testing.T, url, protocol string) httpstream.Connection {
	t.Helper()
	rt, err := spdy.NewRoundTripper(nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Add(httpstream.HeaderProtocolVersion, protocol)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("upgrade %s: %v", url, err)
	}
	conn, err := rt.NewConnection(resp)
	if err != nil {
		t.Fatalf("upgrade %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func stream(t *testing.T, conn httpstream.Connection, kv ...string) httpstream.Stream {
	t.Helper()
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	s, err := conn.CreateStream(h)
	if err != nil {
		t.Fatalf("create stream %v: %v", kv, err)
	}
	return s
}

// execSession runs one v4 remotecommand session: stdin (if not nil) is
// sent and closed; it returns stdout, stderr and the status the server
// wrote on the error stream ("" for success).
func execSession(t *testing.T, url string, stdin string, tty bool, resize *[2]uint16) (string, string, string) {
	t.Helper()
	conn := spdyConnect(t, url, "v4.channel.k8s.io")
	errS := stream(t, conn, "streamType", "error")
	var in, out, errw, rs httpstream.Stream
	if stdin != "" {
		in = stream(t, conn, "streamType", "stdin")
	}
	out = stream(t, conn, "streamType", "stdout")
	if !tty {
		errw = stream(t, conn, "streamType", "stderr")
	} else {
		rs = stream(t, conn, "streamType", "resize")
	}
	if rs != nil && resize != nil {
		b, _ := json.Marshal(map[string]uint16{"Width": resize[0], "Height": resize[1]})
		rs.Write(b)
	}
	if in != nil {
		io.WriteString(in, stdin)
		if !tty {
			in.Close()
		}
	}
	var stdout, stderr bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&stdout, out); close(done) }()
	if errw != nil {
		io.Copy(&stderr, errw)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("exec session did not end")
	}
	status, _ := io.ReadAll(errS)
	return stdout.String(), stderr.String(), string(status)
}

func TestStreamingExecAttachPortForward(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	ctx := d.ctx()
	pod := podConfig(d, "stream")
	podID := runPod(t, d, pod)

	cc := containerConfig("web", "/bin/sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 80 -h /www")
	web := startContainer(t, d, podID, pod, cc)

	t.Run("exec", func(t *testing.T) {
		resp, err := d.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: web, Cmd: []string{"sh", "-c", "cat; echo err >&2; exit 3"}, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if !strings.HasPrefix(resp.Url, "http://127.0.0.1:") {
			t.Fatalf("Exec URL %q is not on loopback", resp.Url)
		}
		out, errOut, status := execSession(t, resp.Url, "piped-in\n", false, nil)
		if out != "piped-in\n" || errOut != "err\n" {
			t.Errorf("stdout %q stderr %q", out, errOut)
		}
		if !strings.Contains(status, "NonZeroExitCode") || !strings.Contains(status, `"message":"3"`) {
			t.Errorf("status %q does not report exit code 3", status)
		}
		// A URL is good for one session.
		if r, err := http.Post(resp.Url, "", nil); err == nil {
			if r.StatusCode != http.StatusNotFound {
				t.Errorf("reused URL: HTTP %d, want 404", r.StatusCode)
			}
			r.Body.Close()
		}
	})

	t.Run("exec-tty-resize", func(t *testing.T) {
		resp, err := d.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: web, Cmd: []string{"sh", "-c", "sleep 0.5; stty size; tty"}, Stdout: true, Tty: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		out, _, status := execSession(t, resp.Url, "", true, &[2]uint16{123, 45})
		if !strings.Contains(out, "45 123") || !strings.Contains(out, "/dev/pts/") || status != "" && !strings.Contains(status, "Success") {
			t.Errorf("tty exec: out %q status %q", out, status)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		resp, err := d.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{80}})
		if err != nil {
			t.Fatalf("PortForward: %v", err)
		}
		conn := spdyConnect(t, resp.Url, "portforward.k8s.io")
		var body string
		for try := 0; try < 50; try++ { // httpd may still be starting
			errS := stream(t, conn, "streamType", "error", "port", "80", "requestID", fmt.Sprint(try))
			data := stream(t, conn, "streamType", "data", "port", "80", "requestID", fmt.Sprint(try))
			io.WriteString(data, "GET /index.html HTTP/1.0\r\n\r\n")
			data.Close()
			b, _ := io.ReadAll(data)
			e, _ := io.ReadAll(errS)
			body = string(b)
			if strings.Contains(body, "hello-from-pod") {
				break
			}
			t.Logf("try %d: %q %q", try, b, e)
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(body, "hello-from-pod") {
			t.Fatalf("port-forward answer %q", body)
		}
	})

	t.Run("attach", func(t *testing.T) {
		ac := containerConfig("cat", "/bin/sh", "-c", "while read l; do echo got:$l; done")
		ac.Stdin = true
		cat := startContainer(t, d, podID, pod, ac)
		resp, err := d.rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: cat, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("Attach: %v", err)
		}
		conn := spdyConnect(t, resp.Url, "v4.channel.k8s.io")
		stream(t, conn, "streamType", "error")
		in := stream(t, conn, "streamType", "stdin")
		out := stream(t, conn, "streamType", "stdout")
		stream(t, conn, "streamType", "stderr")
		io.WriteString(in, "ping\n")
		buf := make([]byte, 64)
		got := ""
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(got, "got:ping") && time.Now().Before(deadline) {
			n, err := out.Read(buf)
			got += string(buf[:n])
			if err != nil {
				break
			}
		}
		if !strings.Contains(got, "got:ping") {
			t.Errorf("attach output %q", got)
		}
	})

	t.Run("errors", func(t *testing.T) {
		done := startContainer(t, d, podID, pod, containerConfig("done", "true"))
		waitState(t, d, done, runtimeapi.ContainerState_CONTAINER_EXITED)
		_, err := d.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: done, Cmd: []string{"ls"}, Stdout: true})
		if err == nil || !strings.Contains(err.Error(), "not RUNNING") {
			t.Errorf("Exec into an exited container: %v", err)
		}
		if _, err := d.rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "nope", Cmd: []string{"ls"}, Stdout: true}); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Errorf("Exec into an unknown container: %v", err)
		}
		p2 := podConfig(d, "stopped")
		p2ID := runPod(t, d, p2)
		if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p2ID}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: p2ID, Port: []int32{80}}); err == nil || !strings.Contains(err.Error(), "not READY") {
			t.Errorf("PortForward to a stopped pod: %v", err)
		}
	})
}
