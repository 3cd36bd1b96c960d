// Package cri is peapod's gRPC surface: the CRI RuntimeService and
// ImageService. It validates input, maps CRI messages to the domain packages
// and answers with gRPC status codes; it makes no syscalls itself. One file
// per RPC family, named object_verb as in CRI-O's server/.
package cri

import (
	"context"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox"
)

var timeNow = time.Now

const (
	// RuntimeName is what Version reports.
	RuntimeName = "peapod"
	// criAPIVersion is the CRI version peapod speaks.
	criAPIVersion = "v1"
)

// Version is set at build time (-ldflags -X peapod/cri.Version=...).
var Version = "0.1.0-dev"

// Server implements runtimeapi.RuntimeServiceServer and ImageServiceServer.
// Every RPC not implemented yet answers Unimplemented through the embedded
// types, which is honest: no fake success.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	deps   Deps
	events eventStream
}

// Deps are the domain services the CRI layer drives.
type Deps struct {
	Images    Images
	Sandboxes *sandbox.Manager
	Network   NetworkStatus
	// Handlers lists the runtime handlers (runc, crun) and whether each can
	// run containers here; a nil error means usable.
	Handlers func(ctx context.Context) map[string]error
	// DefaultHandler names the handler used when RuntimeHandler is empty.
	DefaultHandler string
	// HostProblems are what the start-up host checks found wrong
	// (conmon, overlay, cgroups): RuntimeReady stays false while any is.
	HostProblems []HostProblem
	// CgroupDriver is reported by RuntimeConfig ("cgroupfs").
	CgroupDriver runtimeapi.CgroupDriver
	// Streams serves Exec, Attach and PortForward sessions; nil answers
	// Unavailable.
	Streams Streams
}

// NetworkStatus answers whether pod networking is usable.
type NetworkStatus interface {
	// Ready returns nil when CNI is usable, else an error naming what is missing.
	Ready() error
}

// New builds the server; it observes the sandbox manager's lifecycle
// events for GetContainerEvents.
func New(d Deps) *Server {
	s := &Server{deps: d}
	if d.Sandboxes != nil {
		d.Sandboxes.OnEvent(s.publishEvent)
	}
	return s
}

// Register attaches both services to g.
func (s *Server) Register(g *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
}
