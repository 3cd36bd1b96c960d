package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	criapi "k8s.io/cri-api/pkg/apis"
)

// runHook runs a postStart or preStop handler of container c (containerID)
// within timeout: exec through the CRI's ExecSync, httpGet against the pod
// IP (a response of 400 or more is a failure), or sleep.
func runHook(ctx context.Context, rt criapi.RuntimeService, h *v1.LifecycleHandler, containerID string, c *v1.Container, podIP string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case h.Exec != nil:
		stdout, stderr, err := rt.ExecSync(ctx, containerID, h.Exec.Command, timeout)
		if err != nil {
			return fmt.Errorf("exec %q: %w: %s%s", h.Exec.Command, err, stdout, stderr)
		}
		return nil
	case h.HTTPGet != nil:
		return runHTTPHook(ctx, h.HTTPGet, c, podIP)
	case h.Sleep != nil:
		select {
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("lifecycle handler has no action")
}

func runHTTPHook(ctx context.Context, g *v1.HTTPGetAction, c *v1.Container, podIP string) error {
	host := g.Host
	if host == "" {
		host = podIP
	}
	if host == "" {
		return fmt.Errorf("httpGet hook: the pod has no IP")
	}
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return err
	}
	scheme := strings.ToLower(string(g.Scheme)) // the API's "HTTP" / "HTTPS"
	if scheme == "" {
		scheme = "http"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	u, err = u.Parse(g.Path)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "peapod-agent")
	}
	resp, err := hookClient.Do(req)
	if err != nil {
		return fmt.Errorf("httpGet %s: %w", u, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("httpGet %s: %s", u, resp.Status)
	}
	return nil
}

// resolvePort resolves a number or a named container port.
func resolvePort(p intstr.IntOrString, c *v1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	if c != nil {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not found in container ports", p.StrVal)
}

// hookClient is the kubelet's for HTTP hooks: an HTTPS hook does not verify
// the pod's certificate (there is nothing to verify it against), and no
// keep-alive holds a connection into a pod that may be going away.
var hookClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's hook and probe clients
	DisableKeepAlives: true,
	Proxy:             nil,
}}
