package kubeletapi

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// echoStream stands in for the runtime's streaming server: it upgrades
// any request with "Upgrade: echo" and echoes what it is sent.
type echoStream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newEchoStream(t *testing.T) *echoStream {
	e := &echoStream{}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.reqs = append(e.reqs, r.Clone(r.Context()))
		e.mu.Unlock()
		if !strings.EqualFold(r.Header.Get("Upgrade"), "echo") {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *echoStream) last() *http.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reqs) == 0 {
		return nil
	}
	return e.reqs[len(e.reqs)-1]
}

// upgrade sends an upgrade request over conn and, on 101, checks that the
// stream echoes.
func upgrade(t *testing.T, conn net.Conn, method, path string, header map[string]string) (int, string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: node-a\r\n", method, path)
	h := map[string]string{"Connection": "Upgrade", "Upgrade": "echo"}
	for k, v := range header {
		h[k] = v
	}
	for k, v := range h {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if string(got) != "ping" {
		t.Fatalf("echo %q", got)
	}
	return resp.StatusCode, ""
}

func streamPods() *fakePods {
	return &fakePods{pods: []v1.Pod{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"},
		Spec: v1.PodSpec{
			InitContainers: []v1.Container{{Name: "init"}},
			Containers:     []v1.Container{{Name: "c"}, {Name: "tty", TTY: true, Stdin: true}, {Name: "down"}},
		},
		Status: v1.PodStatus{
			InitContainerStatuses: []v1.ContainerStatus{{Name: "init", ContainerID: "cri://i1", State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ContainerID: "cri://i1"}}}},
			ContainerStatuses: []v1.ContainerStatus{
				{Name: "c", ContainerID: "cri://c1", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
				{Name: "tty", ContainerID: "cri://t1", State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}},
				{Name: "down", State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}},
			},
		},
	}}}
}

func TestStreams(t *testing.T) {
	echo := newEchoStream(t)
	tests := []struct {
		name      string
		method    string
		path      string
		header    map[string]string
		streamErr error
		code      int
		body      string
		// check the CRI request made and the path the stream went to.
		check func(*testing.T, *fakeRuntime)
		proxy string
	}{
		{
			name: "exec", method: http.MethodPost,
			path: "/exec/ns/p/c?command=sh&command=-c&command=echo+hi&input=1&output=1&error=1",
			code: 101, proxy: "/exec/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"sh", "-c", "echo hi"}, Stdin: true, Stdout: true, Stderr: true}
				if !reflect.DeepEqual(rt.exec, want) {
					t.Errorf("exec request %v, want %v", rt.exec, want)
				}
			},
		},
		{
			name: "exec with uid and tty: no stderr with a terminal", method: http.MethodGet,
			path: "/exec/ns/p/u1/c?command=ls&output=1&error=1&tty=1",
			code: 101, proxy: "/exec/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.ExecRequest{ContainerId: "c1", Cmd: []string{"ls"}, Stdout: true, Tty: true}
				if !reflect.DeepEqual(rt.exec, want) {
					t.Errorf("exec request %v, want %v", rt.exec, want)
				}
			},
		},
		{name: "exec without streams", method: http.MethodPost, path: "/exec/ns/p/c?command=ls", code: 400, body: "you must specify at least 1 of stdin, stdout, stderr"},
		{name: "exec in no pod", method: http.MethodPost, path: "/exec/ns/nope/c?command=ls&output=1", code: 404, body: "pod does not exist"},
		{name: "exec in a stopped container", method: http.MethodPost, path: "/exec/ns/p/down?command=ls&output=1", code: 500, body: `container not found ("down")`},
		{name: "exec in an exited init container", method: http.MethodPost, path: "/exec/ns/p/init?command=ls&output=1", code: 500, body: `container not found ("init")`},
		{name: "exec with another pod's uid", method: http.MethodPost, path: "/exec/ns/p/u2/c?command=ls&output=1", code: 500, body: `container not found ("c")`},
		{
			name: "exec the runtime does not find", method: http.MethodPost, path: "/exec/ns/p/c?command=ls&output=1",
			streamErr: status.Error(codes.NotFound, "no such container"), code: 404, body: "rpc error: code = NotFound desc = no such container",
		},
		{name: "exec that is no upgrade", method: http.MethodPost, path: "/exec/ns/p/c?command=ls&output=1", header: map[string]string{"Connection": "close", "Upgrade": ""}, code: 500, body: "Upgrade request required\n"},
		{
			name: "attach: tty from the spec", method: http.MethodPost, path: "/attach/ns/p/tty?input=1&output=1",
			code: 101, proxy: "/attach/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.AttachRequest{ContainerId: "t1", Stdin: true, Stdout: true, Tty: true}
				if !reflect.DeepEqual(rt.attach, want) {
					t.Errorf("attach request %v, want %v", rt.attach, want)
				}
			},
		},
		{
			name: "attach with uid, no tty in the spec", method: http.MethodGet, path: "/attach/ns/p/u1/c?output=1&error=1&tty=1",
			code: 101, proxy: "/attach/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.AttachRequest{ContainerId: "c1", Stdout: true}
				if !reflect.DeepEqual(rt.attach, want) {
					t.Errorf("attach request %v, want %v", rt.attach, want)
				}
			},
		},
		{name: "attach to a stopped container", method: http.MethodPost, path: "/attach/ns/p/down?output=1", code: 500, body: "container down not found in pod p_ns"},
		{name: "attach in no pod", method: http.MethodPost, path: "/attach/ns/nope/c?output=1", code: 404, body: "pod does not exist"},
		{
			name: "port-forward: the newest ready sandbox", method: http.MethodPost, path: "/portForward/ns/p?port=80&port=8080,9090",
			code: 101, proxy: "/portforward/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.PortForwardRequest{PodSandboxId: "sb-new", Port: []int32{80, 8080, 9090}}
				if !reflect.DeepEqual(rt.portForward, want) {
					t.Errorf("port-forward request %v, want %v", rt.portForward, want)
				}
				wantFilter := &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}, LabelSelector: map[string]string{"io.kubernetes.pod.uid": "u1"}}
				if !reflect.DeepEqual(rt.sbFilter, wantFilter) {
					t.Errorf("sandbox filter %v, want %v", rt.sbFilter, wantFilter)
				}
			},
		},
		{
			name: "port-forward with uid, ports on the streams", method: http.MethodGet, path: "/portForward/ns/p/u1",
			code: 101, proxy: "/portforward/tok",
			check: func(t *testing.T, rt *fakeRuntime) {
				want := &runtimeapi.PortForwardRequest{PodSandboxId: "sb-new"}
				if !reflect.DeepEqual(rt.portForward, want) {
					t.Errorf("port-forward request %v, want %v", rt.portForward, want)
				}
			},
		},
		{name: "port-forward with another uid", method: http.MethodPost, path: "/portForward/ns/p/u2?port=80", code: 404, body: "pod not found"},
		{name: "port-forward in no pod", method: http.MethodPost, path: "/portForward/ns/nope?port=80", code: 404, body: "pod does not exist"},
		{name: "port-forward to port 0", method: http.MethodPost, path: "/portForward/ns/p?port=0", code: 400, body: `port "0" must be > 0`},
		{name: "port-forward to a bad port", method: http.MethodPost, path: "/portForward/ns/p?port=http", code: 400},
		{
			name: "websocket port-forward needs ports", method: http.MethodGet, path: "/portForward/ns/p",
			header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, code: 400, body: `query parameter "port" is required`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &fakeRuntime{streamURL: echo.URL, streamErr: tt.streamErr, sandboxes: []*runtimeapi.PodSandbox{
				{Id: "sb-old", CreatedAt: 1, State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: map[string]string{podUIDLabel: "u1"}},
				{Id: "sb-new", CreatedAt: 2, State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: map[string]string{podUIDLabel: "u1"}},
				{Id: "sb-gone", CreatedAt: 3, State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, Labels: map[string]string{podUIDLabel: "u1"}},
				{Id: "sb-other", CreatedAt: 4, State: runtimeapi.PodSandboxState_SANDBOX_READY, Labels: map[string]string{podUIDLabel: "u2"}},
			}}
			s, err := newTestServer(rt, streamPods(), nil)
			if err != nil {
				t.Fatal(err)
			}
			h := httptest.NewServer(s.handler)
			defer h.Close()
			conn, err := net.Dial("tcp", h.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			code, body := upgrade(t, conn, tt.method, tt.path, tt.header)
			if code != tt.code || (tt.body != "" && body != tt.body) {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.code, tt.body)
			}
			if tt.check != nil {
				tt.check(t, rt)
			}
			if tt.proxy != "" {
				r := echo.last()
				if r == nil || r.URL.Path != tt.proxy || r.URL.RawQuery != "" {
					t.Errorf("stream proxied to %v, want %s", r.URL, tt.proxy)
				}
			}
		})
	}
	t.Run("no ready sandbox", func(t *testing.T) {
		s, err := newTestServer(&fakeRuntime{streamURL: echo.URL}, streamPods(), nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/portForward/ns/p?port=80", nil)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", "SPDY/3.1")
		s.handler.ServeHTTP(rec, r)
		if rec.Code != 500 || rec.Body.String() != "failed to find sandboxID for pod p_ns(u1)" {
			t.Errorf("got %d %q", rec.Code, rec.Body.String())
		}
	})
}

// TestStreamOverTLS: exec through the whole server, TLS and token
// authentication included; the token does not travel on to the runtime.
func TestStreamOverTLS(t *testing.T) {
	echo := newEchoStream(t)
	rt := &fakeRuntime{streamURL: echo.URL}
	ts := newTLSTestServer(t, tlsTestOptions{rt: rt, pods: streamPods()})
	conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.servingCAs, ServerName: "node-a", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	code, body := upgrade(t, conn, http.MethodPost, "/exec/ns/p/c?command=id&output=1", map[string]string{"Authorization": "Bearer good-token"})
	if code != 101 {
		t.Fatalf("got %d %q", code, body)
	}
	r := echo.last()
	if got := r.Header.Get("Authorization"); got != "" {
		t.Errorf("the runtime got Authorization %q", got)
	}
	if a := ts.authz.lastAsked(); a.Verb != "create" || a.Subresource != "proxy" || a.User.Name != "system:serviceaccount:ns:sa" {
		t.Errorf("authorized %+v", a)
	}
}
