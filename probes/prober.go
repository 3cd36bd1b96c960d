package probes

// The four probe actions. Each returns (Success|Failure, message, nil) for a
// definite outcome, or (Unknown, "", err) when the prober itself could not
// run the probe; the worker throws such a result away, as the kubelet does.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// userAgent is what the kubelet of the Kubernetes release matching
// k8s.io/api v0.37 sends; probed servers may special-case "kube-probe/".
const userAgent = "kube-probe/1.37"

// maxBody bounds how much of an HTTP response (and of exec output) is read
// and kept as the probe message.
const maxBody = 10 << 10

// maxMessage bounds an Update's message.
const maxMessage = 1 << 10

// probeDialer returns a dialer whose connections close with SO_LINGER 0:
// Close sends RST and leaves no TIME_WAIT, so hundreds of probes a second
// do not exhaust ephemeral ports. The kubelet's probe.ProbeDialer does the
// same.
func probeDialer() *net.Dialer {
	return &net.Dialer{
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

// prober runs probe actions. One per Manager; safe for concurrent use.
type prober struct {
	runtime Runtime
	// execBackstop is added (with the timeout again) to an exec probe's
	// timeout as the deadline of the ExecSync call itself.
	execBackstop time.Duration
	dialer       *net.Dialer
	http         *http.Client
}

func newProber(rt Runtime) *prober {
	d := probeDialer()
	tr := &http.Transport{
		Proxy:              nil, // never through a proxy, as the kubelet
		DialContext:        d.DialContext,
		DisableKeepAlives:  true, // no idle connections held per probe target
		DisableCompression: true,
		// The kubelet does not verify probe targets' certificates.
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        -1,
	}
	return &prober{
		runtime:      rt,
		execBackstop: time.Second,
		dialer:       d,
		http: &http.Client{
			Transport:     tr,
			CheckRedirect: redirectChecker,
		},
	}
}

// redirectChecker follows redirects on the same host only (at most 10); a
// redirect elsewhere ends the probe with the 3xx response, which counts as
// success with a warning, as the kubelet does.
func redirectChecker(req *http.Request, via []*http.Request) error {
	if req.URL.Hostname() != via[0].URL.Hostname() {
		return http.ErrUseLastResponse
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// target is what a probe needs to know about its container besides the
// probe spec.
type target struct {
	containerID string
	podIP       string
	container   *v1.Container
}

func (p *prober) run(ctx context.Context, pr *v1.Probe, t target, timeout time.Duration) (Result, string, error) {
	switch {
	case pr.Exec != nil:
		return p.exec(ctx, pr.Exec, t, timeout)
	case pr.HTTPGet != nil:
		return p.httpGet(ctx, pr.HTTPGet, t, timeout)
	case pr.TCPSocket != nil:
		return p.tcp(ctx, pr.TCPSocket, t, timeout)
	case pr.GRPC != nil:
		return p.grpc(ctx, pr.GRPC, t, timeout)
	}
	return Unknown, "", errors.New("probe has no handler")
}

// exec runs the command through ExecSync; the runtime kills it when the
// timeout passes, so a hung probe command is not left behind.
func (p *prober) exec(ctx context.Context, a *v1.ExecAction, t target, timeout time.Duration) (Result, string, error) {
	if p.runtime == nil {
		return Unknown, "", errors.New("no runtime for exec probes")
	}
	// A backstop in case the runtime ignores the timeout: it, not this
	// deadline, is what kills the command.
	ctx, cancel := context.WithTimeout(ctx, 2*timeout+p.execBackstop)
	defer cancel()
	stdout, stderr, err := p.runtime.ExecSync(ctx, t.containerID, a.Command, timeout)
	out := combine(stdout, stderr)
	if err == nil {
		return Success, out, nil
	}
	if code, ok := exitCode(err); ok {
		if code == 0 {
			return Success, out, nil
		}
		if out == "" {
			out = err.Error()
		}
		return Failure, fmt.Sprintf("command %q exited with %d: %s", strings.Join(a.Command, " "), code, out), nil
	}
	if isTimeout(err) {
		return Failure, fmt.Sprintf("command %q timed out after %s", strings.Join(a.Command, " "), timeout), nil
	}
	return Unknown, "", err
}

func exitCode(err error) (int, bool) {
	var es interface{ ExitStatus() int } // k8s.io/utils/exec.ExitError (cri-client)
	if errors.As(err, &es) {
		return es.ExitStatus(), true
	}
	var ec interface{ ExitCode() int } // os/exec.ExitError and the like
	if errors.As(err, &ec) {
		return ec.ExitCode(), true
	}
	return 0, false
}

func isTimeout(err error) bool {
	if errors.Is(err, ErrExecTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.DeadlineExceeded {
		return true
	}
	// k8s.io/cri-client wraps its own ErrCommandTimedOut ("command timed
	// out"); matched by text so probes/ need not import cri-client.
	return strings.Contains(err.Error(), "timed out")
}

func combine(stdout, stderr []byte) string {
	b := make([]byte, 0, len(stdout)+len(stderr))
	b = append(b, stdout...)
	b = append(b, stderr...)
	return truncate(string(b), maxBody)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// resolvePort returns the port number of an IntOrString: a number, or the
// name of one of the container's ports (or a number written as a string).
func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	port := 0
	switch p.Type {
	case intstr.Int:
		port = p.IntValue()
	case intstr.String:
		found := false
		if c != nil {
			for _, cp := range c.Ports {
				if cp.Name == p.StrVal {
					port, found = int(cp.ContainerPort), true
					break
				}
			}
		}
		if !found {
			n, err := strconv.Atoi(p.StrVal)
			if err != nil {
				return 0, fmt.Errorf("port %q not found in container's ports", p.StrVal)
			}
			port = n
		}
	}
	if port <= 0 || port > 65535 {
		return 0, fmt.Errorf("invalid port number: %d", port)
	}
	return port, nil
}

func (p *prober) httpGet(ctx context.Context, a *v1.HTTPGetAction, t target, timeout time.Duration) (Result, string, error) {
	req, err := newHTTPRequest(a, t)
	if err != nil {
		return Unknown, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := p.http.Do(req.WithContext(ctx))
	if err != nil {
		// Refused, reset, timed out: the target is unhealthy.
		return Failure, err.Error(), nil
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return Failure, fmt.Sprintf("reading the response body: %v", err), nil
	}
	if res.StatusCode >= http.StatusOK && res.StatusCode < http.StatusBadRequest {
		if res.StatusCode >= http.StatusMultipleChoices {
			return Success, redirectWarning + string(body), nil
		}
		return Success, string(body), nil
	}
	return Failure, fmt.Sprintf("HTTP probe failed with statuscode: %d", res.StatusCode), nil
}

func newHTTPRequest(a *v1.HTTPGetAction, t target) (*http.Request, error) {
	scheme := strings.ToLower(string(a.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("unsupported scheme %q", a.Scheme)
	}
	host := a.Host
	if host == "" {
		host = t.podIP
	}
	port, err := resolvePort(a.Port, t.container)
	if err != nil {
		return nil, err
	}
	path := a.Path
	if path == "" {
		path = "/"
	}
	pu, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: pu.Path, RawQuery: pu.RawQuery}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	for _, h := range a.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", userAgent)
	}
	if _, ok := req.Header["Accept"]; !ok {
		req.Header.Set("Accept", "*/*")
	}
	req.Close = true
	return req, nil
}

func (p *prober) tcp(ctx context.Context, a *v1.TCPSocketAction, t target, timeout time.Duration) (Result, string, error) {
	port, err := resolvePort(a.Port, t.container)
	if err != nil {
		return Unknown, "", err
	}
	host := a.Host
	if host == "" {
		host = t.podIP
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return Failure, err.Error(), nil
	}
	_ = conn.Close() // RST, thanks to SO_LINGER 0
	return Success, "", nil
}

func (p *prober) grpc(ctx context.Context, a *v1.GRPCAction, t target, timeout time.Duration) (Result, string, error) {
	if a.Port <= 0 || a.Port > 65535 {
		return Unknown, "", fmt.Errorf("invalid port number: %d", a.Port)
	}
	addr := net.JoinHostPort(t.podIP, strconv.Itoa(int(a.Port)))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(userAgent),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return p.dialer.DialContext(ctx, "tcp", addr)
		}),
	)
	if err != nil {
		return Unknown, "", err
	}
	defer conn.Close()
	service := ""
	if a.Service != nil {
		service = *a.Service
	}
	// Fail-fast RPC: it waits while the first connect is in progress (bounded
	// by the timeout) and fails at once when the connect is refused.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		switch status.Code(err) {
		case codes.Unimplemented:
			return Failure, fmt.Sprintf("this server does not implement the grpc health protocol (grpc.health.v1.Health): %s", status.Convert(err).Message()), nil
		case codes.DeadlineExceeded:
			return Failure, fmt.Sprintf("timeout: health rpc did not complete within %s", timeout), nil
		}
		return Failure, fmt.Sprintf("error: health rpc probe failed: %v", err), nil
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return Failure, fmt.Sprintf("service unhealthy (responded with %q)", resp.GetStatus()), nil
	}
	return Success, "", nil
}

// redirectWarning starts the message of a probe that ended on a redirect
// to another host: a success the kubelet reports with a ProbeWarning event
// carrying exactly this text.
const redirectWarning = "Probe terminated redirects, Response body: "
