package cri

import (
	"encoding/json"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

// LXCFSReady is peapod's own runtime condition, present when
// containers.lxcfs is not "off": true while lxcfs answers at its dir. The
// kubelet acts only on RuntimeReady and NetworkReady and passes others
// by; this one is for people (crictl info) and alerts (the metric
// peapod_lxcfs_up is the same fact).
const LXCFSReady = "LXCFSReady"

// lxcfsStatus is the sandbox manager's lxcfs state; false when
// containers.lxcfs is off.
func (s *Server) lxcfsStatus() (sandbox.LXCFSStatus, bool) {
	if s.deps.Sandboxes == nil {
		return sandbox.LXCFSStatus{}, false
	}
	st := s.deps.Sandboxes.LXCFSStatus()
	return st, st.Mode != "off"
}

func lxcfsCondition(st sandbox.LXCFSStatus) *runtimeapi.RuntimeCondition {
	c := &runtimeapi.RuntimeCondition{Type: LXCFSReady, Status: st.State.Up}
	if !st.State.Up {
		c.Reason = st.State.Reason
		c.Message = fmt.Sprintf("%s; containers read their own /proc (the host's figures) until lxcfs answers at %s again (containers.lxcfs = %q", st.State.Message, st.Dir, st.Mode)
		if st.Mode == "on" {
			c.Message += "; CreateContainer fails meanwhile"
		}
		c.Message += ")"
	}
	return c
}

// lxcfsInfo is Status's verbose "lxcfs" entry, a JSON object (crictl info
// shows it as one).
func lxcfsInfo(st sandbox.LXCFSStatus) string {
	b, _ := json.Marshal(map[string]any{
		"mode":               st.Mode,
		"dir":                st.Dir,
		"up":                 st.State.Up,
		"reason":             st.State.Reason,
		"paths":              st.State.Paths,
		"containersAttached": st.Attached,
		"containersDetached": st.Detached,
	})
	return string(b)
}
