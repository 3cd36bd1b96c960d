package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"peapod/sandbox"
	"peapod/sandbox/lxcfs"
)

type fakeLXCFS sandbox.LXCFSStatus

func (f fakeLXCFS) LXCFSStatus() sandbox.LXCFSStatus { return sandbox.LXCFSStatus(f) }

func TestLXCFSCollector(t *testing.T) {
	tests := []struct {
		name string
		st   sandbox.LXCFSStatus
		want string
	}{
		{name: "off: nothing", st: sandbox.LXCFSStatus{Mode: "off"}, want: ""},
		{name: "down after a restart", st: sandbox.LXCFSStatus{Mode: "auto", State: lxcfs.State{Reason: lxcfs.ReasonDisconnected}, Attached: 0, Detached: 3, AttachOK: 2, DetachOK: 3, DetachErr: 1}, want: `
# HELP peapod_lxcfs_container_syncs_total Changes to running containers' lxcfs binds: detach (a dead lxcfs's taken off) and attach (a restarted lxcfs's put in), by result.
# TYPE peapod_lxcfs_container_syncs_total counter
peapod_lxcfs_container_syncs_total{action="attach",result="error"} 0
peapod_lxcfs_container_syncs_total{action="attach",result="ok"} 2
peapod_lxcfs_container_syncs_total{action="detach",result="error"} 1
peapod_lxcfs_container_syncs_total{action="detach",result="ok"} 3
# HELP peapod_lxcfs_containers Live containers that want lxcfs, by whether they read it now (attached) or their own /proc (detached).
# TYPE peapod_lxcfs_containers gauge
peapod_lxcfs_containers{state="attached"} 0
peapod_lxcfs_containers{state="detached"} 3
# HELP peapod_lxcfs_up 1 when lxcfs answers at containers.lxcfs_dir; 0 when it does not, and containers read their own /proc (the host's figures).
# TYPE peapod_lxcfs_up gauge
peapod_lxcfs_up{mode="auto"} 0
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(NewLXCFSCollector(fakeLXCFS(tt.st)))
			if got := gatherText(t, reg); strings.TrimSpace(got) != strings.TrimSpace(tt.want) {
				t.Fatalf("exposition:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
