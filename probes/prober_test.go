package probes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// closedPort returns a 127.0.0.1 port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, p := hostPort(t, l.Addr().String())
	l.Close()
	return p
}

func TestHTTPGet(t *testing.T) {
	var mu sync.Mutex
	var got *http.Request
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
		fmt.Fprint(w, "body")
	})
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Clone(context.Background())
		mu.Unlock()
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/redirect-here", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/status/500", http.StatusFound)
	})
	mux.HandleFunc("/redirect-away", func(w http.ResponseWriter, r *http.Request) {
		// Another host name: not followed, so nothing is sent there.
		http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1<<20)))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tls := httptest.NewTLSServer(mux)
	defer tls.Close()
	host, port := hostPort(t, srv.Listener.Addr().String())
	_, tlsPort := hostPort(t, tls.Listener.Addr().String())
	container := &v1.Container{Ports: []v1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}

	tests := []struct {
		name    string
		action  v1.HTTPGetAction
		timeout time.Duration
		want    Result
		wantMsg string
		wantErr bool
	}{
		{name: "200", action: v1.HTTPGetAction{Path: "/status/200", Port: intstr.FromInt(port)}, want: Success, wantMsg: "body"},
		{name: "204", action: v1.HTTPGetAction{Path: "/status/204", Port: intstr.FromInt(port)}, want: Success},
		{name: "399", action: v1.HTTPGetAction{Path: "/status/399", Port: intstr.FromInt(port)}, want: Success},
		{name: "400", action: v1.HTTPGetAction{Path: "/status/400", Port: intstr.FromInt(port)}, want: Failure, wantMsg: "statuscode: 400"},
		{name: "404", action: v1.HTTPGetAction{Path: "/nothing", Port: intstr.FromInt(port)}, want: Failure},
		{name: "503", action: v1.HTTPGetAction{Path: "/status/503", Port: intstr.FromInt(port)}, want: Failure},
		{name: "named port", action: v1.HTTPGetAction{Path: "/status/200", Port: intstr.FromString("http")}, want: Success},
		{name: "numeric string port", action: v1.HTTPGetAction{Path: "/status/200", Port: intstr.FromString(strconv.Itoa(port))}, want: Success},
		{name: "unknown port name", action: v1.HTTPGetAction{Port: intstr.FromString("nope")}, wantErr: true},
		{name: "explicit host", action: v1.HTTPGetAction{Host: host, Path: "/status/200", Port: intstr.FromInt(port)}, want: Success},
		{name: "https skips verification", action: v1.HTTPGetAction{Scheme: v1.URISchemeHTTPS, Path: "/status/200", Port: intstr.FromInt(tlsPort)}, want: Success},
		{name: "same-host redirect followed", action: v1.HTTPGetAction{Path: "/redirect-here", Port: intstr.FromInt(port)}, want: Failure, wantMsg: "statuscode: 500"},
		{name: "other-host redirect is success with warning", action: v1.HTTPGetAction{Path: "/redirect-away", Port: intstr.FromInt(port)}, want: Success, wantMsg: "Probe terminated redirects, Response body: "},
		{name: "big body bounded", action: v1.HTTPGetAction{Path: "/big", Port: intstr.FromInt(port)}, want: Success},
		{name: "timeout", action: v1.HTTPGetAction{Path: "/slow", Port: intstr.FromInt(port)}, timeout: 50 * time.Millisecond, want: Failure, wantMsg: "deadline exceeded"},
		{name: "refused", action: v1.HTTPGetAction{Path: "/", Port: intstr.FromInt(closedPort(t))}, want: Failure, wantMsg: "refused"},
		{name: "bad scheme", action: v1.HTTPGetAction{Scheme: "ftp", Port: intstr.FromInt(port)}, wantErr: true},
	}
	p := newProber(nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = time.Second
			}
			start := time.Now()
			r, msg, err := p.httpGet(context.Background(), &tt.action, target{podIP: "127.0.0.1", container: container}, timeout)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if r != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("got %v %q, want %v containing %q", r, msg, tt.want, tt.wantMsg)
			}
			if len(msg) > maxBody+200 {
				t.Errorf("message of %d bytes not bounded", len(msg))
			}
			if d := time.Since(start); d > timeout+500*time.Millisecond {
				t.Errorf("probe took %v with timeout %v", d, timeout)
			}
		})
	}

	t.Run("headers", func(t *testing.T) {
		a := &v1.HTTPGetAction{Path: "/headers?x=1", Port: intstr.FromInt(port), HTTPHeaders: []v1.HTTPHeader{
			{Name: "X-Custom", Value: "a"}, {Name: "X-Custom", Value: "b"}, {Name: "Host", Value: "example.test"},
		}}
		if r, msg, err := p.httpGet(context.Background(), a, target{podIP: "127.0.0.1"}, time.Second); r != Success || err != nil {
			t.Fatalf("got %v %q %v", r, msg, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if ua := got.Header.Get("User-Agent"); ua != userAgent {
			t.Errorf("User-Agent = %q", ua)
		}
		if acc := got.Header.Get("Accept"); acc != "*/*" {
			t.Errorf("Accept = %q", acc)
		}
		if v := got.Header.Values("X-Custom"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
			t.Errorf("X-Custom = %q", v)
		}
		if got.Host != "example.test" {
			t.Errorf("Host = %q", got.Host)
		}
		if got.URL.RawQuery != "x=1" {
			t.Errorf("query = %q", got.URL.RawQuery)
		}
		if !got.Close {
			t.Errorf("request did not ask to close the connection")
		}
	})
	t.Run("user agent override", func(t *testing.T) {
		a := &v1.HTTPGetAction{Path: "/headers", Port: intstr.FromInt(port), HTTPHeaders: []v1.HTTPHeader{{Name: "User-Agent", Value: "mine"}}}
		p.httpGet(context.Background(), a, target{podIP: "127.0.0.1"}, time.Second)
		mu.Lock()
		defer mu.Unlock()
		if ua := got.Header.Get("User-Agent"); ua != "mine" {
			t.Errorf("User-Agent = %q", ua)
		}
	})
}

func TestTCPSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port := hostPort(t, l.Addr().String())
	container := &v1.Container{Ports: []v1.ContainerPort{{Name: "tcp", ContainerPort: int32(port)}}}
	p := newProber(nil)
	tests := []struct {
		name   string
		action v1.TCPSocketAction
		want   Result
	}{
		{"open", v1.TCPSocketAction{Port: intstr.FromInt(port)}, Success},
		{"named", v1.TCPSocketAction{Port: intstr.FromString("tcp")}, Success},
		{"explicit host", v1.TCPSocketAction{Host: "127.0.0.1", Port: intstr.FromInt(port)}, Success},
		{"closed", v1.TCPSocketAction{Port: intstr.FromInt(closedPort(t))}, Failure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, msg, err := p.tcp(context.Background(), &tt.action, target{podIP: "127.0.0.1", container: container}, time.Second)
			if err != nil || r != tt.want {
				t.Errorf("got %v %q %v, want %v", r, msg, err, tt.want)
			}
		})
	}
}

// timeWait counts sockets in TIME_WAIT with port as either end, on either
// side (the probe's ephemeral end or the server's listening end). The
// tests compare with the count from before their probes: a listener may
// be given a port that an earlier connection of another test (or
// process) used as its ephemeral end and left in TIME_WAIT, which binding
// with SO_REUSEADDR allows; no new connection can take the port while the
// listener holds it.
func timeWait(t *testing.T, port int) int {
	t.Helper()
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "06" { // 06: TCP_TIME_WAIT
				continue
			}
			for _, addr := range fields[1:3] {
				if i := strings.LastIndexByte(addr, ':'); i >= 0 {
					if p, err := strconv.ParseInt(addr[i+1:], 16, 32); err == nil && int(p) == port {
						n++
						break
					}
				}
			}
		}
		fh.Close()
	}
	return n
}

func TestNoTimeWait(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp")
	}
	p := newProber(nil)
	t.Run("tcpSocket", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				// Like a real server: wait for the peer, then close.
				go func() { c.Read(make([]byte, 1)); c.Close() }()
			}
		}()
		_, port := hostPort(t, l.Addr().String())
		before := timeWait(t, port)
		for range 50 {
			if r, msg, _ := p.tcp(context.Background(), &v1.TCPSocketAction{Port: intstr.FromInt(port)}, target{podIP: "127.0.0.1"}, time.Second); r != Success {
				t.Fatalf("probe: %v %s", r, msg)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if n := timeWait(t, port) - before; n > 0 {
			t.Errorf("%d new sockets in TIME_WAIT after 50 tcp probes", n)
		}
	})
	t.Run("httpGet", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		_, port := hostPort(t, srv.Listener.Addr().String())
		before := timeWait(t, port)
		for range 50 {
			if r, msg, _ := p.httpGet(context.Background(), &v1.HTTPGetAction{Port: intstr.FromInt(port)}, target{podIP: "127.0.0.1"}, time.Second); r != Success {
				t.Fatalf("probe: %v %s", r, msg)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if n := timeWait(t, port) - before; n > 0 {
			t.Errorf("%d new sockets in TIME_WAIT after 50 http probes", n)
		}
	})
	t.Run("grpc", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, health.NewServer())
		go s.Serve(l)
		defer s.Stop()
		_, port := hostPort(t, l.Addr().String())
		before := timeWait(t, port)
		for range 50 {
			if r, msg, _ := p.grpc(context.Background(), &v1.GRPCAction{Port: int32(port)}, target{podIP: "127.0.0.1"}, time.Second); r != Success {
				t.Fatalf("probe: %v %s", r, msg)
			}
		}
		time.Sleep(50 * time.Millisecond)
		if n := timeWait(t, port) - before; n > 0 {
			t.Errorf("%d new sockets in TIME_WAIT after 50 grpc probes", n)
		}
	})
	t.Run("control: without linger 0 TIME_WAIT does appear", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { c.Read(make([]byte, 1)); c.Close() }()
			}
		}()
		for range 5 {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		_, port := hostPort(t, l.Addr().String())
		time.Sleep(50 * time.Millisecond)
		if n := timeWait(t, port); n == 0 {
			t.Errorf("no TIME_WAIT from plain closes: the counter cannot see them")
		}
	})
}

func TestGRPC(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	go s.Serve(l)
	defer s.Stop()
	_, port := hostPort(t, l.Addr().String())

	// A gRPC server without the health service.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s2 := grpc.NewServer()
	go s2.Serve(l2)
	defer s2.Stop()
	_, port2 := hostPort(t, l2.Addr().String())

	str := func(s string) *string { return &s }
	tests := []struct {
		name    string
		action  v1.GRPCAction
		want    Result
		wantMsg string
	}{
		{"overall serving", v1.GRPCAction{Port: int32(port)}, Success, ""},
		{"service serving", v1.GRPCAction{Port: int32(port), Service: str("up")}, Success, ""},
		{"service not serving", v1.GRPCAction{Port: int32(port), Service: str("down")}, Failure, "NOT_SERVING"},
		{"unknown service", v1.GRPCAction{Port: int32(port), Service: str("nope")}, Failure, "NotFound"},
		{"no health service", v1.GRPCAction{Port: int32(port2)}, Failure, "does not implement"},
		{"refused", v1.GRPCAction{Port: int32(closedPort(t))}, Failure, ""},
	}
	p := newProber(nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, msg, err := p.grpc(context.Background(), &tt.action, target{podIP: "127.0.0.1"}, time.Second)
			if err != nil || r != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("got %v %q %v, want %v containing %q", r, msg, err, tt.want, tt.wantMsg)
			}
		})
	}
}

type exitErr int

func (e exitErr) Error() string   { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitStatus() int { return int(e) }

// fakeRuntime runs exec probes through fn and counts calls per container.
type fakeRuntime struct {
	mu    sync.Mutex
	calls map[string]int
	first map[string]time.Time
	fn    func(ctx context.Context, id string, call int, timeout time.Duration) ([]byte, []byte, error)
}

func (f *fakeRuntime) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls, f.first = map[string]int{}, map[string]time.Time{}
	}
	f.calls[id]++
	n := f.calls[id]
	if n == 1 {
		f.first[id] = time.Now()
	}
	f.mu.Unlock()
	if f.fn == nil {
		return nil, nil, nil
	}
	return f.fn(ctx, id, n, timeout)
}

func (f *fakeRuntime) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func TestExec(t *testing.T) {
	tests := []struct {
		name    string
		fn      func(ctx context.Context, id string, call int, timeout time.Duration) ([]byte, []byte, error)
		want    Result
		wantMsg string
		wantErr bool
	}{
		{name: "exit 0 nil error", fn: func(context.Context, string, int, time.Duration) ([]byte, []byte, error) {
			return []byte("ok"), nil, nil
		}, want: Success, wantMsg: "ok"},
		{name: "exit 0 as error", fn: func(context.Context, string, int, time.Duration) ([]byte, []byte, error) { return nil, nil, exitErr(0) }, want: Success},
		{name: "exit 1", fn: func(context.Context, string, int, time.Duration) ([]byte, []byte, error) {
			return []byte("out"), []byte("err"), fmt.Errorf("wrapped: %w", exitErr(1))
		}, want: Failure, wantMsg: "exited with 1: outerr"},
		{name: "timeout in runtime", fn: func(_ context.Context, _ string, _ int, timeout time.Duration) ([]byte, []byte, error) {
			time.Sleep(timeout)
			return nil, nil, fmt.Errorf("%w: after %s", ErrExecTimeout, timeout)
		}, want: Failure, wantMsg: "timed out"},
		{name: "timeout as cri-client words it", fn: func(context.Context, string, int, time.Duration) ([]byte, []byte, error) {
			return nil, nil, errors.New(`command timed out: "sleep 10" timed out after 1s`)
		}, want: Failure, wantMsg: "timed out"},
		{name: "runtime ignores timeout: backstop deadline", fn: func(ctx context.Context, _ string, _ int, _ time.Duration) ([]byte, []byte, error) {
			<-ctx.Done()
			return nil, nil, ctx.Err()
		}, want: Failure, wantMsg: "timed out"},
		{name: "runtime error is unknown", fn: func(context.Context, string, int, time.Duration) ([]byte, []byte, error) {
			return nil, nil, errors.New("container not found")
		}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotTimeout time.Duration
			rt := &fakeRuntime{fn: func(ctx context.Context, id string, call int, timeout time.Duration) ([]byte, []byte, error) {
				gotTimeout = timeout
				return tt.fn(ctx, id, call, timeout)
			}}
			p := newProber(rt)
			p.execBackstop = 10 * time.Millisecond
			r, msg, err := p.exec(context.Background(), &v1.ExecAction{Command: []string{"check"}}, target{containerID: "c1"}, 20*time.Millisecond)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tt.wantErr && (r != tt.want || !strings.Contains(msg, tt.wantMsg)) {
				t.Errorf("got %v %q, want %v containing %q", r, msg, tt.want, tt.wantMsg)
			}
			if gotTimeout != 20*time.Millisecond {
				t.Errorf("ExecSync timeout = %v", gotTimeout)
			}
		})
	}
}
