package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/klog/v2"

	"peapod/config"
)

// agentProcess runs peapod-agent as a child of serve, as a kubelet runs
// beside its runtime: its own process, so the runtime links none of the
// Kubernetes API libraries and an agent crash never takes the CRI down.
// It is restarted with back-off when it dies and stopped (SIGTERM, then
// SIGKILL) by its PID on shutdown; the kernel sends it SIGTERM if serve
// dies first (Pdeathsig), so a restarted serve never runs two agents.
type agentProcess struct {
	path   string   // peapod-agent
	args   []string // --config, --root, --state, --runtime-endpoint, --listen, -v
	socket string   // its HTTP endpoint

	mu  sync.Mutex
	cmd *exec.Cmd // the running child, nil between restarts

	done chan struct{}
}

// agentBackoff bounds restarts: 1 s doubling to 30 s, back to 1 s after
// the agent stayed up for a minute.
const (
	agentBackoffMin    = time.Second
	agentBackoffMax    = 30 * time.Second
	agentBackoffResetT = time.Minute
)

// findAgent picks peapod-agent beside this executable, else on PATH.
func findAgent() (string, error) {
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), "peapod-agent")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	p, err := exec.LookPath("peapod-agent")
	if err != nil {
		return "", fmt.Errorf("agent.enabled is set but peapod-agent is neither beside %s nor on PATH (make build builds it; or set agent.enabled = false)", self)
	}
	return p, nil
}

func newAgentProcess(cfg *config.Config, configPath string, verbosity string) (*agentProcess, error) {
	path, err := findAgent()
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(cfg.State, "agent.sock")
	args := []string{"--root", cfg.Root, "--state", cfg.State, "--runtime-endpoint", "unix://" + cfg.CRI.Socket, "--listen", sock}
	if configPath != "" {
		args = append(args, "--config", configPath)
	}
	if verbosity != "" && verbosity != "0" {
		args = append(args, "-v="+verbosity)
	}
	return &agentProcess{path: path, args: args, socket: sock, done: make(chan struct{})}, nil
}

// run starts the agent and keeps it running until ctx ends, then stops it.
func (a *agentProcess) run(ctx context.Context) {
	defer close(a.done)
	backoff := agentBackoffMin
	for {
		started := time.Now()
		err := a.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > agentBackoffResetT {
			backoff = agentBackoffMin
		}
		klog.ErrorS(err, "peapod-agent exited; restarting", "after", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, agentBackoffMax)
	}
}

func (a *agentProcess) runOnce(ctx context.Context) error {
	cmd := exec.Command(a.path, a.args...)
	// The agent logs where serve logs.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own group: a ^C to serve's terminal reaches serve, which then
		// stops the agent in order.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.path, err)
	}
	klog.InfoS("peapod-agent started", "pid", cmd.Process.Pid, "path", a.path)
	a.mu.Lock()
	a.cmd = cmd
	a.mu.Unlock()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		a.mu.Lock()
		a.cmd = nil
		a.mu.Unlock()
		if err == nil {
			err = errors.New("exited with status 0")
		}
		return err
	case <-ctx.Done():
	}
	// Shutdown: SIGTERM by the PID we started, SIGKILL after 10 s.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		klog.InfoS("peapod-agent did not stop in 10s; killing it", "pid", cmd.Process.Pid)
		_ = cmd.Process.Kill()
		<-waited
	}
	a.mu.Lock()
	a.cmd = nil
	a.mu.Unlock()
	klog.InfoS("peapod-agent stopped", "pid", cmd.Process.Pid)
	return nil
}

// wait blocks until run has stopped the agent.
func (a *agentProcess) wait() { <-a.done }

// pid is the running agent's, 0 between restarts.
func (a *agentProcess) pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

func (a *agentProcess) client(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.socket)
		},
	}}
}

// podsHandler forwards GET /pods to the agent.
func (a *agentProcess) podsHandler() http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "agent"
		},
		Transport: a.client(0).Transport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, fmt.Sprintf("peapod-agent is not answering (starting or restarting?): %v", err), http.StatusServiceUnavailable)
		},
	}
	return proxy
}

// gatherer reads the agent's /metrics, so peapod's one endpoint carries
// the agent's series as before the split. An agent that does not answer
// (restarting) contributes nothing rather than failing the scrape; the
// Go and process series are serve's own.
func (a *agentProcess) gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		resp, err := a.client(5 * time.Second).Get("http://agent/metrics")
		if err != nil {
			klog.V(2).InfoS("Agent metrics unavailable", "err", err)
			return nil, nil
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			klog.V(2).InfoS("Agent metrics unavailable", "status", resp.Status, "err", err)
			return nil, nil
		}
		return parseAgentMetrics(body)
	})
}

// parseAgentMetrics parses the text format, leaving out go_ and process_
// families, which serve's registry has for itself.
func parseAgentMetrics(body []byte) ([]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("agent metrics: %w", err)
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		out = append(out, f)
	}
	return out, nil
}
