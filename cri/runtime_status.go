package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/network"
)

// Version answers with peapod's name and version.
func (s *Server) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       RuntimeName,
		RuntimeVersion:    Version,
		RuntimeApiVersion: criAPIVersion,
	}, nil
}

// Status reports RuntimeReady and NetworkReady with real reasons, and the
// runtime handlers with their features.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	handlers := map[string]error{}
	if s.deps.Handlers != nil {
		handlers = s.deps.Handlers(ctx)
	}
	problems := slices.Clone(s.deps.HostProblems)
	if err, ok := handlers[s.deps.DefaultHandler]; !ok || err != nil {
		p := HostProblem{Reason: "DefaultRuntimeUnavailable"}
		if !ok {
			p.Message = fmt.Sprintf("default runtime handler %q is not configured", s.deps.DefaultHandler)
		} else {
			p.Message = fmt.Sprintf("default runtime handler %q: %v", s.deps.DefaultHandler, err)
		}
		problems = append(problems, p)
	}
	runtimeCond := runtimeReady(problems)
	// NetworkReady=false until the conf dir holds a usable config (the
	// kubelet keeps the node NotReady meanwhile); the conf dir is re-read
	// on every call, so it turns true on the first Status after a cluster
	// network plugin installs its config. Reason and message are the ones
	// containerd and CRI-O give.
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	var cniStatus *network.ConfStatus
	var netErr error
	switch n := s.deps.Network.(type) {
	case nil:
		netErr = errors.New("no network manager")
	case confStatuser:
		st := n.ConfStatus()
		cniStatus, netErr = &st, st.Err
	default:
		netErr = n.Ready()
	}
	if netErr != nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = "Network plugin returns error: " + netErr.Error()
	}
	conds := []*runtimeapi.RuntimeCondition{runtimeCond, netCond}
	lxcfs, lxcfsOn := s.lxcfsStatus()
	if lxcfsOn {
		conds = append(conds, lxcfsCondition(lxcfs))
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: conds},
		Features: &runtimeapi.RuntimeFeatures{
			SupplementalGroupsPolicy: true,
		},
	}
	names := make([]string, 0, len(handlers))
	for name := range handlers {
		names = append(names, name)
	}
	sort.Strings(names)
	var info []string
	// User namespaces per handler: its runtime's `features` (cached).
	userns := func(name string) bool {
		if s.deps.Sandboxes == nil || handlers[name] != nil {
			return false
		}
		ok, _ := s.deps.Sandboxes.HandlerUserNamespaces(ctx, name)
		return ok
	}
	for _, name := range names {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: name,
			Features: &runtimeapi.RuntimeHandlerFeatures{
				// runc 1.1 on kernel >= 5.12 supports "rro" mounts.
				RecursiveReadOnlyMounts: true,
				UserNamespaces:          userns(name),
			},
		})
		state := "ok"
		if err := handlers[name]; err != nil {
			state = err.Error()
		}
		info = append(info, fmt.Sprintf("%q: %q", name, state))
	}
	if name := s.deps.DefaultHandler; name != "" {
		// The kubelet and crictl also look up the default handler by "".
		resp.RuntimeHandlers = append([]*runtimeapi.RuntimeHandler{{
			Name:     "",
			Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: true, UserNamespaces: userns(name)},
		}}, resp.RuntimeHandlers...)
	}
	if req.GetVerbose() {
		// Not "runtimeHandlers": crictl info merges this map over the CRI's
		// handler list (names and features) under that key and would hide it.
		resp.Info = map[string]string{
			"runtimeHandlerStatus": "{" + strings.Join(info, ", ") + "}",
			"defaultRuntime":       fmt.Sprintf("%q", s.deps.DefaultHandler),
		}
		if cniStatus != nil {
			cniInfo(resp.Info, *cniStatus)
		}
		if lxcfsOn {
			resp.Info["lxcfs"] = lxcfsInfo(lxcfs)
		}
		if len(problems) > 0 {
			resp.Info["hostProblems"] = hostProblemsInfo(problems)
		}
	}
	return resp, nil
}

// confStatuser is the part of the network manager `crictl info` shows.
type confStatuser interface{ ConfStatus() network.ConfStatus }

// cniInfo adds the CNI config in use under containerd's keys, so what an
// operator reads in `crictl info` is where containerd puts it:
// "lastCNILoadStatus" ("OK" or why pods cannot be networked) and "cniconfig".
func cniInfo(info map[string]string, st network.ConfStatus) {
	load := "OK"
	if st.Err != nil {
		load = st.Err.Error()
	}
	info["lastCNILoadStatus"] = fmt.Sprintf("%q", load)
	cc, _ := json.Marshal(struct {
		PluginDirs    []string `json:"PluginDirs"`
		PluginConfDir string   `json:"PluginConfDir"`
		ConfFile      string   `json:"ConfFile"`
		Network       string   `json:"Network"`
		Plugins       []string `json:"Plugins"`
	}{st.BinDirs, st.ConfDir, st.File, st.Network, st.Plugins})
	info["cniconfig"] = string(cc)
}

// RuntimeConfig reports the cgroup driver; the kubelet follows it.
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: s.deps.CgroupDriver},
	}, nil
}

// UpdateRuntimeConfig accepts the pod CIDR the kubelet pushes. peapod's CNI
// conf carries its own subnet, so there is nothing to change; the call is
// logged for operators, as CRI-O does when its CNI config owns the range.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
