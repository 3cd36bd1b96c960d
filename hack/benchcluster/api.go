package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"peapod/hack/cluster/harness"
)

// api talks to the cluster's API server as its admin, over one kept-alive
// HTTPS connection: polling through it costs a fraction of what a kubectl
// process per poll would on the node being measured.
type api struct {
	base string
	hc   *http.Client
	node string
}

func newAPI(c *harness.Cluster) (*api, error) {
	tlsConf, err := c.AdminTLS()
	if err != nil {
		return nil, err
	}
	return &api{
		base: c.APIServerURL(),
		hc:   &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}},
		node: c.NodeName,
	}, nil
}

func (a *api) close() { a.hc.CloseIdleConnections() }

// do sends body (JSON, or nil) and decodes a 2xx answer into out (when
// not nil); any other status is an error with the server's message.
func (a *api) do(ctx context.Context, method, path, contentType string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// raw GETs path and returns the body as is.
func (a *api) raw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b[:min(len(b), 4096)]))
	}
	return b, nil
}

// nodeMetrics is the node agent's /metrics (the kubelet's, or
// peapod-agent's on its kubelet API), through the API server's node proxy
// (the API server authenticates to the node with its kubelet-client
// certificate; the node authorizes that by webhook).
func (a *api) nodeMetrics(ctx context.Context) ([]byte, error) {
	return a.raw(ctx, "/api/v1/nodes/"+url.PathEscape(a.node)+"/proxy/metrics")
}
