package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/oci"
	"peapod/sandbox/network"
)

// Exec runs cmd in a running container with streamed stdio (the CRI
// streaming server's exec) and returns its exit code.
func (m *Manager) Exec(ctx context.Context, id string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) (int32, error) {
	rec, rt, err := m.runningContainer(id, "exec into")
	if err != nil {
		return -1, err
	}
	return rt.Exec(ctx, rec.ID, cmd, tty, stdin, stdout, stderr, resize)
}

// Attach connects to the stdio of a running container through its conmon.
// Asking for stdin of a container created without stdin is an error.
func (m *Manager) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) error {
	rec, rt, err := m.runningContainer(id, "attach to")
	if err != nil {
		return err
	}
	if stdin != nil {
		c, err := m.Container(id)
		if err == nil && !c.Config().GetStdin() {
			return fmt.Errorf("%w: container %s was not created with stdin", ErrInvalid, rec.ID)
		}
	}
	return rt.Attach(ctx, rec.ID, stdin, stdout, stderr, resize)
}

// CheckRunning answers whether a session (exec, attach) can start in the
// container now, so the CRI call fails at once rather than the session.
func (m *Manager) CheckRunning(id, verb string) error {
	_, _, err := m.runningContainer(id, verb)
	return err
}

// CheckPortForward answers whether the pod can take port-forward sessions.
func (m *Manager) CheckPortForward(sandboxID string) error {
	_, _, err := m.portForwardTarget(sandboxID)
	return err
}

// portForwardTarget returns the pod's netns path ("" for the node's).
func (m *Manager) portForwardTarget(sandboxID string) (SandboxRecord, string, error) {
	sb, err := m.Sandbox(sandboxID)
	if err != nil {
		return SandboxRecord{}, "", err
	}
	rec := sb.Record()
	if rec.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return rec, "", fmt.Errorf("%w: cannot port-forward to pod %s: it is not READY", ErrFailedPrecondion, rec.ID)
	}
	if sb.Config().GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		return rec, "", nil
	}
	if rec.NetNS == "" || rec.NetworkDown {
		return rec, "", fmt.Errorf("%w: cannot port-forward to pod %s: it has no network namespace", ErrFailedPrecondion, rec.ID)
	}
	return rec, rec.NetNS, nil
}

func (m *Manager) runningContainer(id, verb string) (ContainerRecord, OCIRuntime, error) {
	c, err := m.Container(id)
	if err != nil {
		return ContainerRecord{}, nil, err
	}
	rec := c.Record()
	if rec.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return rec, nil, fmt.Errorf("%w: cannot %s container %s: it is %s, not RUNNING", ErrFailedPrecondion, verb, rec.ID, stateName(rec.State))
	}
	rt, err := m.containerRuntime(rec)
	if err != nil {
		return rec, nil, err
	}
	return rec, rt, nil
}

// PortForward connects stream to TCP port on localhost inside the pod's
// network namespace (the node's, for a hostNetwork pod) and copies both
// ways until either side ends.
func (m *Manager) PortForward(ctx context.Context, sandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	if port <= 0 || port > 65535 {
		return fmt.Errorf("%w: port %d out of range", ErrInvalid, port)
	}
	rec, netns, err := m.portForwardTarget(sandboxID)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	var conn net.Conn
	dial := func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", addr)
		conn = c
		return err
	}
	if netns == "" {
		err = dial()
	} else {
		err = network.InNetNS(netns, dial)
	}
	if err != nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", rec.ID, port, err)
	}
	defer conn.Close()
	klog.V(3).InfoS("PortForward", "sandbox", rec.ID, "port", port)

	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, stream)
		// The client finished sending: half-close so the server sees EOF
		// and can still answer.
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, err = io.Copy(stream, conn)
	// The pod's side is done; ending the stream ends the copy above.
	stream.Close()
	conn.Close()
	wg.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", rec.ID, port, err)
	}
	return nil
}
