package cri

import (
	"encoding/json"
	"strings"
	"testing"

	"peapod/sandbox"
	"peapod/sandbox/lxcfs"
)

func TestLXCFSCondition(t *testing.T) {
	tests := []struct {
		name       string
		st         sandbox.LXCFSStatus
		wantStatus bool
		wantReason string
		wantMsg    []string
	}{
		{name: "up", st: sandbox.LXCFSStatus{Mode: "auto", Dir: "/var/lib/lxcfs", State: lxcfs.State{Up: true, Paths: lxcfs.Paths}}, wantStatus: true},
		{name: "auto, not installed", st: sandbox.LXCFSStatus{Mode: "auto", Dir: "/var/lib/lxcfs", State: lxcfs.State{Reason: lxcfs.ReasonNotMounted, Message: "lxcfs is not mounted at /var/lib/lxcfs"}},
			wantReason: "LXCFSNotMounted", wantMsg: []string{"not mounted", "the host's figures", `containers.lxcfs = "auto")`}},
		{name: "on, killed", st: sandbox.LXCFSStatus{Mode: "on", Dir: "/x", State: lxcfs.State{Reason: lxcfs.ReasonDisconnected, Message: "lxcfs at /x is gone"}},
			wantReason: "LXCFSDisconnected", wantMsg: []string{"is gone", "CreateContainer fails meanwhile"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := lxcfsCondition(tt.st)
			if c.Type != LXCFSReady || c.Status != tt.wantStatus || c.Reason != tt.wantReason {
				t.Fatalf("condition = %v", c)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(c.Message, w) {
					t.Errorf("message %q lacks %q", c.Message, w)
				}
			}
			var info map[string]any
			if err := json.Unmarshal([]byte(lxcfsInfo(tt.st)), &info); err != nil || info["up"] != tt.wantStatus || info["mode"] != tt.st.Mode {
				t.Errorf("info = %v, %v", info, err)
			}
		})
	}
}

// A server without a sandbox manager (unit tests) reports no lxcfs.
func TestLXCFSStatusWithoutManager(t *testing.T) {
	if _, on := (&Server{}).lxcfsStatus(); on {
		t.Fatal("lxcfs reported without a sandbox manager")
	}
}
