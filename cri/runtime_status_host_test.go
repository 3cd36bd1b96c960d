package cri

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A host problem found at start keeps RuntimeReady false with its reason
// and message; with several (the default handler too), the first reason
// and every message; `crictl info` lists them under "hostProblems".
func TestStatusHostProblems(t *testing.T) {
	conmon := HostProblem{Reason: "ConmonUnusable", Message: "conmon 2.0.30 at /usr/bin/conmon is too old: peapod needs >= 2.1.2 (...); apt-get install conmon"}
	overlay := HostProblem{Reason: "OverlayUnsupported", Message: "/var/lib/peapod is on overlayfs, which overlayfs cannot use for upper dirs"}
	tests := []struct {
		name       string
		problems   []HostProblem
		runcErr    error
		wantReady  bool
		wantReason string
		wantMsg    []string
		wantInfo   int // entries in hostProblems
	}{
		{name: "healthy", wantReady: true},
		{name: "conmon too old", problems: []HostProblem{conmon}, wantReason: "ConmonUnusable", wantMsg: []string{conmon.Message}, wantInfo: 1},
		{
			name: "two host problems", problems: []HostProblem{conmon, overlay}, wantReason: "ConmonUnusable",
			wantMsg: []string{"2 problems: (1) " + conmon.Message + " (2) " + overlay.Message}, wantInfo: 2,
		},
		{
			name: "host problem and the default runtime", problems: []HostProblem{overlay}, runcErr: errors.New("runc 1.0.3 at /usr/sbin/runc is too old"),
			wantReason: "OverlayUnsupported", wantMsg: []string{"(1) " + overlay.Message, `(2) default runtime handler "runc": runc 1.0.3 at /usr/sbin/runc is too old`}, wantInfo: 2,
		},
		{
			name: "default runtime only", runcErr: errors.New("runtime runc: /usr/sbin/runc does not exist: apt-get install runc"),
			wantReason: "DefaultRuntimeUnavailable", wantMsg: []string{`default runtime handler "runc": runtime runc: /usr/sbin/runc does not exist`}, wantInfo: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Deps{
				Network:        fakeNetwork{},
				DefaultHandler: "runc",
				HostProblems:   tt.problems,
				Handlers:       func(context.Context) map[string]error { return map[string]error{"runc": tt.runcErr} },
			})
			resp, err := s.Status(context.Background(), &runtimeapi.StatusRequest{Verbose: true})
			if err != nil {
				t.Fatal(err)
			}
			c := resp.Status.Conditions[0]
			if c.Type != runtimeapi.RuntimeReady || c.Status != tt.wantReady || c.Reason != tt.wantReason {
				t.Fatalf("RuntimeReady = %v, want status %v reason %q", c, tt.wantReady, tt.wantReason)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(c.Message, w) {
					t.Errorf("message %q lacks %q", c.Message, w)
				}
			}
			if tt.wantReady && c.Message != "" {
				t.Errorf("ready with message %q", c.Message)
			}
			info, ok := resp.Info["hostProblems"]
			if tt.wantInfo == 0 {
				if ok {
					t.Errorf("hostProblems = %s on a healthy host", info)
				}
				return
			}
			var got []HostProblem
			if err := json.Unmarshal([]byte(info), &got); err != nil || len(got) != tt.wantInfo {
				t.Errorf("hostProblems = %s (%v), want %d entries", info, err, tt.wantInfo)
			}
		})
	}
}
