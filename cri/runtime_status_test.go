package cri

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/network"
)

type fakeNetwork struct{ st network.ConfStatus }

func (f fakeNetwork) Ready() error                   { return f.st.Err }
func (f fakeNetwork) ConfStatus() network.ConfStatus { return f.st }

// NetworkReady follows the CNI config, with containerd's reason, and
// `crictl info` shows the config in use under containerd's keys.
func TestStatusNetwork(t *testing.T) {
	tests := []struct {
		name      string
		net       NetworkStatus
		wantReady bool
		wantMsg   string
		wantLoad  string // lastCNILoadStatus; "" = not reported
		wantFile  string
	}{
		{
			name:    "no config yet",
			net:     fakeNetwork{network.ConfStatus{ConfDir: "/etc/cni/net.d", Err: errors.New("no CNI network config in /etc/cni/net.d")}},
			wantMsg: "Network plugin returns error: no CNI network config in /etc/cni/net.d", wantLoad: `"no CNI network config in /etc/cni/net.d"`,
		},
		{
			name:      "operator's config",
			net:       fakeNetwork{network.ConfStatus{ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, File: "/etc/cni/net.d/10-flannel.conflist", Network: "cbr0", Plugins: []string{"flannel", "portmap"}}},
			wantReady: true, wantLoad: `"OK"`, wantFile: "/etc/cni/net.d/10-flannel.conflist",
		},
		{name: "no network manager", wantMsg: "Network plugin returns error: no network manager"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Deps{Network: tt.net, DefaultHandler: "runc", Handlers: func(context.Context) map[string]error { return map[string]error{"runc": nil} }})
			resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			var c *runtimeapi.RuntimeCondition
			for _, cond := range resp.Status.Conditions {
				if cond.Type == runtimeapi.NetworkReady {
					c = cond
				}
			}
			if c == nil || c.Status != tt.wantReady || c.Message != tt.wantMsg {
				t.Fatalf("NetworkReady = %v, want status %v message %q", c, tt.wantReady, tt.wantMsg)
			}
			if !tt.wantReady && c.Reason != "NetworkPluginNotReady" {
				t.Errorf("reason = %q", c.Reason)
			}
			if got := resp.Info["lastCNILoadStatus"]; got != tt.wantLoad {
				t.Errorf("lastCNILoadStatus = %q, want %q", got, tt.wantLoad)
			}
			if tt.wantLoad == "" {
				return
			}
			var cc struct {
				PluginConfDir, ConfFile, Network string
				PluginDirs, Plugins              []string
			}
			if err := json.Unmarshal([]byte(resp.Info["cniconfig"]), &cc); err != nil {
				t.Fatalf("cniconfig %q: %v", resp.Info["cniconfig"], err)
			}
			if cc.PluginConfDir != "/etc/cni/net.d" || cc.ConfFile != tt.wantFile {
				t.Errorf("cniconfig = %+v", cc)
			}
		})
	}
}
