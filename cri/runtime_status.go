package cri

import (
	"context"
	"fmt"
	"sort"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
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
	runtimeCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	handlers := map[string]error{}
	if s.deps.Handlers != nil {
		handlers = s.deps.Handlers(ctx)
	}
	if err, ok := handlers[s.deps.DefaultHandler]; !ok || err != nil {
		runtimeCond.Status = false
		runtimeCond.Reason = "DefaultRuntimeUnavailable"
		if !ok {
			runtimeCond.Message = fmt.Sprintf("default runtime handler %q is not configured", s.deps.DefaultHandler)
		} else {
			runtimeCond.Message = fmt.Sprintf("default runtime handler %q: %v", s.deps.DefaultHandler, err)
		}
	}
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.deps.Network == nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = "no network manager"
	} else if err := s.deps.Network.Ready(); err != nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = "Network plugin returns error: " + err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtimeCond, netCond}},
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
	for _, name := range names {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: name,
			Features: &runtimeapi.RuntimeHandlerFeatures{
				// runc 1.1 on kernel >= 5.12 supports "rro" mounts.
				RecursiveReadOnlyMounts: true,
				UserNamespaces:          false,
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
			Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: true},
		}}, resp.RuntimeHandlers...)
	}
	if req.GetVerbose() {
		// Not "runtimeHandlers": crictl info merges this map over the CRI's
		// handler list (names and features) under that key and would hide it.
		resp.Info = map[string]string{
			"runtimeHandlerStatus": "{" + strings.Join(info, ", ") + "}",
			"defaultRuntime":       fmt.Sprintf("%q", s.deps.DefaultHandler),
		}
	}
	return resp, nil
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
