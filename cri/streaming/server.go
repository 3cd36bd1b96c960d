// Package streaming serves the URLs that Exec, Attach and PortForward
// answer with, through the kubelet's own streaming library
// (k8s.io/cri-streaming: SPDY and WebSocket, remotecommand v1–v5 and
// portforward). Its Runtime adapter maps a session onto sandbox.Manager,
// which runs it through the OCI runtime (exec), conmon's attach socket
// (attach) or a socket dialled inside the pod's network namespace (port
// forward).
//
// A URL is good for one connection and expires after a minute unused
// (the library's request cache). The server listens on a loopback address
// by default: a URL is an unauthenticated capability, as with containerd
// and CRI-O.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"

	"peapod/oci"
)

// Backend runs the sessions (peapod's *sandbox.Manager).
type Backend interface {
	Exec(ctx context.Context, id string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) (int32, error)
	Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) error
	PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error
}

// Server is a running streaming server.
type Server struct {
	streaming.Server
	ln   net.Listener
	http *http.Server
	addr string
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves
// sessions from b until Shutdown.
func Start(addr string, b Backend) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = ln.Addr().String()
	// The library's own Start learns the port only once it serves; the
	// URLs must name it from the first request on.
	cfg.BaseURL = &url.URL{Scheme: "http", Host: ln.Addr().String()}
	srv, err := streaming.NewServer(cfg, adapter{b})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s := &Server{
		Server: srv,
		ln:     ln,
		addr:   ln.Addr().String(),
		http:   &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second},
	}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Streaming server stopped")
		}
	}()
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Shutdown closes the listener and every open session.
func (s *Server) Shutdown() error { return s.http.Close() }

// URL-only views of the server, for the CRI layer.
var (
	_ interface {
		GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
		GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
		GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
	} = (*Server)(nil)
)

// adapter is the library's Runtime over a Backend.
type adapter struct{ b Backend }

func (a adapter) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	code, err := a.b.Exec(ctx, id, cmd, tty, reader(in), writer(out), writer(errw), sizes(ctx, resize))
	if err != nil {
		return err
	}
	if code != 0 {
		// The library reports an ExitError as the session's exit code.
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: int(code)}
	}
	return nil
}

func (a adapter) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return a.b.Attach(ctx, id, reader(in), writer(out), writer(errw), sizes(ctx, resize))
}

func (a adapter) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	return a.b.PortForward(ctx, sandboxID, port, stream)
}

// reader and writer turn an absent stream into a nil interface, which the
// OCI layer reads as "not requested".
func reader(r io.Reader) io.Reader {
	if r == nil {
		return nil
	}
	return r
}

func writer(w io.WriteCloser) io.Writer {
	if w == nil {
		return nil
	}
	return w
}

// sizes converts the library's resize events to oci.Size until ctx ends.
func sizes(ctx context.Context, in <-chan remotecommand.TerminalSize) <-chan oci.Size {
	if in == nil {
		return nil
	}
	out := make(chan oci.Size)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- oci.Size{Width: s.Width, Height: s.Height}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
